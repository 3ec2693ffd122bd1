"""FixMatch for semi-supervised domain adaptation: labelled source + K labelled target per class + the rest.

Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang, Raffel. "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence." NeurIPS 2020.

The semi-supervised sibling of :mod:`transferkit.adapt.adamatch` (AdaMatch is FixMatch extended
to domain adaptation: distribution alignment, a threshold relative to the source confidence).
Here the labelled set is the source *and* the few labelled target examples, and the rule is
FixMatch's own: a fixed confidence threshold on the weakly augmented view. This file is the
whole of the method: its config, its augmentations, its loss and its registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Augment
from ..engine import StepInfo
from ..models import Classifier
from ..options import option
from .methods import ADAPT_METHODS, AdaptMethod
from .schedules import WeightSchedule
from .semi import SemiBatch


@dataclass
class FixMatchConfig:
    confidence_threshold: float = option(0.95, "FixMatch: keep a pseudo-label when its weak-view probability is at least this.",
                                         min=0, max=1, min_open=True)


class StrongAugment:
    """A batch-wise strong augmentation for small images: shift/zoom, intensity jitter and cutout.

    ``x' = cutout(clip(a * (A(x) - m) + m + b))`` with ``A`` a random shift (3 px) and zoom
    (0.8-1.2), contrast ``a ~ U(0.6, 1.4)``, brightness ``b ~ U(-0.2, 0.2)`` about the image mean
    ``m``, and one zeroed square of a quarter of the side at a random place. Everything is drawn per
    image and applied to the whole batch at once. Text (integer token ids) gets token dropout at
    rate ``token_drop`` (0.3; the weak view's is the data augmentation's, 0.1 by default). Feature
    tables pass through unchanged.
    """

    def __init__(self, shift: float = 3.0, scale: tuple[float, float] = (0.8, 1.2), contrast: float = 0.4,
                 brightness: float = 0.2, cutout: float = 0.25, token_drop: float = 0.3):
        self.affine = Augment(shift=shift, scale=scale)
        self.contrast, self.brightness, self.cutout = contrast, brightness, cutout
        self.token_drop = token_drop

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not x.is_floating_point():
            from ..data.text import drop_tokens

            return drop_tokens(x, self.token_drop, generator)
        if x.dim() != 4:
            return x
        n, _, h, w = x.shape

        def rand(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator).to(x.device, x.dtype)

        x = self.affine(x, generator)
        mean = x.mean((1, 2, 3), keepdim=True)
        a = 1 + self.contrast * (2 * rand(n, 1, 1, 1) - 1)
        b = self.brightness * (2 * rand(n, 1, 1, 1) - 1)
        x = ((x - mean) * a + mean + b).clamp(0, 1)
        side = max(1, round(self.cutout * min(h, w)))
        top = (rand(n) * (h - side + 1)).long().clamp_max(h - side)
        left = (rand(n) * (w - side + 1)).long().clamp_max(w - side)
        rows = torch.arange(h, device=x.device)[None, :, None]
        cols = torch.arange(w, device=x.device)[None, None, :]
        hole = ((rows >= top[:, None, None]) & (rows < (top + side)[:, None, None])
                & (cols >= left[:, None, None]) & (cols < (left + side)[:, None, None]))
        return x * (~hole)[:, None].to(x.dtype)


def fixmatch_consistency(weak_logits: Tensor, strong_logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``mean_u [max_k p_k(weak) >= tau] * CE(strong, argmax_k p(weak))`` and the mask (no gradient through the weak view)."""
    confidence, pseudo = F.softmax(weak_logits.detach(), 1).max(1)
    mask = (confidence >= threshold).to(strong_logits.dtype)
    return (F.cross_entropy(strong_logits, pseudo, reduction="none") * mask).mean(), mask


@ADAPT_METHODS.register(
    "fixmatch", "semi-supervised: weak-view pseudo-labels above a fixed threshold teach the strong view; source + K target "
    "labels supervised (Sohn et al. 2020); needs --target-labels-per-class", FixMatchConfig,
)
class FixMatch(AdaptMethod):
    """FixMatch with the source and the K labelled target examples as its labelled set.

    With ``alpha`` a weak augmentation (random shift of 2 px), ``A`` the strong one
    (:class:`StrongAugment`), ``p(.)`` the model's class probabilities and ``tau`` the threshold:

    ``L = CE(f(x_s), y_s) + CE(f(x_l), y_l)
          + lambda(p) * mean_{x_u} [max_k p_k(alpha(x_u)) >= tau] * CE(f(A(x_u)), argmax_k p(alpha(x_u)))``

    The weak view's prediction is taken in the same forward pass (train mode) and detached,
    as in the paper; ``lambda`` = ``--weight`` (default 1, the paper's ``lambda_u``), ``tau`` =
    ``--confidence-threshold`` (default 0.95). One unlabelled batch per labelled batch (the
    paper uses seven); no EMA of the weights. Against ``adamatch`` (unsupervised): no
    distribution alignment, a fixed rather than source-relative threshold, the weak view
    rather than the clean input for pseudo-labels, and the labelled target in the supervised
    loss. On feature tables both augmentations are the identity.
    """

    name = "fixmatch"
    uses_target_labels = True
    default_schedule = WeightSchedule("constant", 1.0)

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, confidence_threshold: float = 0.95):
        super().__init__(model, schedule)
        self.confidence_threshold = confidence_threshold
        self.weak = Augment(shift=2.0)
        self.strong = StrongAugment()

    def training_losses(self, batch: SemiBatch, info: StepInfo) -> dict[str, Tensor]:  # type: ignore[override]
        (xs, ys), xu, (xl, yl) = batch
        n_s, n_l, n_u = len(xs), len(xl), len(xu)
        logits = self.model(torch.cat([xs, xl, self.weak(xu), self.strong(xu)]))
        weak, strong = logits[n_s + n_l : n_s + n_l + n_u], logits[n_s + n_l + n_u :]
        consistency, _ = fixmatch_consistency(weak, strong, self.confidence_threshold)
        return {
            "ce": F.cross_entropy(logits[:n_s], ys),
            "ce_target": F.cross_entropy(logits[n_s : n_s + n_l], yl),
            "pseudo": self.schedule(info.progress) * consistency,
        }
