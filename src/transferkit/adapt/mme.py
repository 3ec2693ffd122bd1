"""MME: semi-supervised domain adaptation by a minimax game on the entropy of unlabelled target predictions.

Saito, Kim, Sclaroff, Darrell, Saenko. "Semi-supervised Domain Adaptation via Minimax Entropy."
ICCV 2019.

This file is the whole of the method: its config, its loss and its registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import StepInfo
from ..models import Classifier, CosineHead
from ..options import option
from .losses import grad_reverse
from .methods import ADAPT_METHODS, AdaptMethod
from .schedules import WeightSchedule
from .semi import SemiBatch


@dataclass
class MMEConfig:
    cosine_temperature: float = option(0.05, "MME: temperature T of the cosine-similarity classifier.", min=0, min_open=True)


def minimax_entropy(features: Tensor, head: CosineHead, weight: float) -> Tensor:
    """MME's adversarial term on unlabelled target features: ``-lambda * mean_x H(p(x))``.

    Minimising it moves the head's prototypes to *raise* the entropy; a gradient reversal
    layer between features and head makes the feature extractor *lower* it with the same
    loss and one backward pass.
    """
    logits = head(grad_reverse(features, 1.0))
    p = F.softmax(logits, 1)
    mean_entropy = -(p * F.log_softmax(logits, 1)).sum(1).mean()
    return -weight * mean_entropy


@ADAPT_METHODS.register(
    "mme", "semi-supervised: cosine classifier, minimax entropy on unlabelled target (Saito et al. 2019); "
    "needs --target-labels-per-class", MMEConfig,
)
class MME(AdaptMethod):
    """Minimax Entropy with a cosine-similarity classifier.

    Features ``f = F(x)`` (backbone and bottleneck) feed a cosine classifier with prototypes
    ``w_k`` and temperature ``T``:

    ``p(y = k | x) = softmax_k( w_k^T f / (T ||w_k|| ||f||) )``

    With labelled source ``(x_s, y_s)``, labelled target ``(x_l, y_l)`` (K per class) and
    unlabelled target ``x_u``, the mean entropy of the unlabelled predictions is

    ``H = -E_{x_u} sum_k p(k|x_u) log p(k|x_u)``

    and the game is

    ``theta_C = argmin_C  L_CE - lambda H``     (the prototypes move towards the target: maximise H)
    ``theta_F = argmin_F  L_CE + lambda H``     (the features cluster around them: minimise H)

    with ``L_CE = CE(x_s, y_s) + CE(x_l, y_l)``. Both updates come from one loss
    ``L_CE - lambda H(C(R(F(x_u))))`` and one backward pass: ``R``, the gradient reversal layer,
    flips the sign of the entropy gradient on its way to ``F``. ``lambda`` = ``--weight``
    (default 0.1), ``T`` = ``--cosine-temperature`` (default 0.05).

    Differences from the paper's code: the prototypes are normalised inside the forward pass
    instead of after each step (the same classifier), the two updates share one optimizer step
    instead of two, and the cosine head starts from the directions of the source model's linear
    head (the method adapts the source-only model like every method here) rather than at random.
    The model keeps the cosine head: it is saved as ``spec["head"]`` and ``load_model`` rebuilds it.
    """

    name = "mme"
    uses_target_labels = True
    default_schedule = WeightSchedule("constant", 0.1)

    def __init__(self, model: Classifier, schedule: WeightSchedule | None = None, cosine_temperature: float = 0.05):
        super().__init__(model, schedule)
        self.cosine_head = [model.use_cosine_head(cosine_temperature)]  # a list: the model owns (and saves) it

    def training_losses(self, batch: SemiBatch, info: StepInfo) -> dict[str, Tensor]:  # type: ignore[override]
        (xs, ys), xu, (xl, yl) = batch
        n_s, n_l = len(xs), len(xl)
        head = self.cosine_head[0]
        f = self.model.features(torch.cat([xs, xl, xu]))
        logits = head(f[: n_s + n_l])
        return {
            "ce": F.cross_entropy(logits[:n_s], ys),
            "ce_target": F.cross_entropy(logits[n_s:], yl),
            "minimax_entropy": minimax_entropy(f[n_s + n_l:], head, self.schedule(info.progress)),
        }
