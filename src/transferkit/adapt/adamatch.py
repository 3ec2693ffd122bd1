"""AdaMatch: self-training with distribution-aligned, relatively thresholded pseudo-labels.

This file is the whole of the method: its config, its loss and its registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Augment
from ..engine import StepInfo
from ..models import Classifier
from ..options import check, option
from .methods import ADAPT_METHODS, AdaptMethod, Batch
from .schedules import WeightSchedule


@dataclass
class AdaMatchConfig:
    relative_threshold: float = option(
        0.9, "Keep a pseudo-label when its aligned confidence is at least this fraction of the mean source confidence.",
        min=0, max=1, min_open=True,
    )


def aligned_pseudo_labels(p_s: Tensor, p_t: Tensor, relative_threshold: float = 0.9) -> tuple[Tensor, Tensor]:
    """AdaMatch's pseudo-labels: align ``p_t`` to the source class distribution, keep the confident.

    ``p~_t = normalise(p_t * mean(p_s) / mean(p_t))``; label ``argmax p~_t``, kept
    (mask 1.0) where ``max p~_t >= relative_threshold * mean_s max_k p_s``.
    """
    aligned = p_t * (p_s.mean(0) / p_t.mean(0).clamp_min(1e-6))
    aligned = aligned / aligned.sum(1, keepdim=True)
    confidence, pseudo = aligned.max(1)
    mask = (confidence >= relative_threshold * p_s.max(1).values.mean()).float()
    return pseudo, mask


@ADAPT_METHODS.register(
    "adamatch", "confident, distribution-aligned pseudo-labels teach augmented target inputs (Berthelot et al. 2022)",
    AdaMatchConfig,
)
class AdaMatch(AdaptMethod):
    """Self-training: confident pseudo-labels of clean target inputs teach augmented ones.

    With ``p_s``, ``p_t`` the predictions on the clean source and target batches
    (no gradient, eval mode) and ``A`` a random shift/zoom of the target batch:

    ``p~_t = normalise(p_t * mean(p_s) / mean(p_t))``   (distribution alignment)
    ``tau = c * mean_s max_k p_s``                       (threshold relative to source confidence)
    ``L = CE(source) + lambda(p) * mean_t [max_k p~_t >= tau] * CE(f(A(x_t)), argmax_k p~_t)``

    Random logit interpolation (which mixes batch-norm statistics) is left out.
    On feature tables ``A`` is the identity and this is plain thresholded
    pseudo-labelling.

    Berthelot, Roelofs, Sohn, Carlini, Kurakin. "AdaMatch: A Unified Approach to
    Semi-Supervised Learning and Domain Adaptation." ICLR 2022.
    """

    name = "adamatch"
    default_schedule = WeightSchedule("linear", 1.0, warmup=0.2)

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, relative_threshold: float = 0.9,
                 augment: Augment | None = None):
        super().__init__(model, schedule)
        check(AdaMatchConfig(relative_threshold), "adamatch: ")
        self.relative_threshold = relative_threshold
        self.augment = augment if augment is not None else Augment(shift=2.0, scale=(0.85, 1.15))

    def training_losses(self, batch: Batch, info: StepInfo) -> dict[str, Tensor]:
        (xs, ys), xt = batch
        was_training = self.model.training
        with torch.no_grad():
            self.model.eval()
            clean = F.softmax(self.model(torch.cat([xs, xt])), 1)
            self.model.train(was_training)
            pseudo, mask = aligned_pseudo_labels(clean[: len(xs)], clean[len(xs):], self.relative_threshold)
        logits = self.model(torch.cat([xs, self.augment(xt)]))
        ls, lt = logits[: len(xs)], logits[len(xs):]
        consistency = (F.cross_entropy(lt, pseudo, reduction="none") * mask).mean()
        return {"ce": F.cross_entropy(ls, ys), "pseudo": self.schedule(info.progress) * consistency}
