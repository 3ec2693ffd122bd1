"""Decoupled knowledge distillation: this file is the whole loss (config, maths, registration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import TransferkitError
from ..options import option
from .losses import LOSSES, BuildContext, DistillLoss, Outputs, labels_or_teacher


@dataclass
class DKDConfig:
    dkd_alpha: float = option(1.0, "dkd: weight of the target-class term (TCKD).", min=0)
    dkd_beta: float = option(8.0, "dkd: weight of the non-target term (NCKD).", min=0)
    temperature: float = option(4.0, "Softmax temperature T of kd and dkd.", min=0, min_open=True)


@LOSSES.register("dkd", "decoupled KD: alpha TCKD + beta NCKD (Zhao et al. 2022)", DKDConfig)
class DKDLoss(DistillLoss):
    """Decoupled knowledge distillation (Zhao et al., 2022, CVPR).

    With ``b = [p_y, 1 - p_y]`` the binary target/non-target probabilities and
    ``p_hat`` the softmax over the non-target classes only, both at temperature T:

    .. math::
        \\mathcal{L} = T^2 \\big( \\alpha\\, \\mathrm{KL}(b^T \\| b^S)
            + \\beta\\, \\mathrm{KL}(\\hat p^T \\| \\hat p^S) \\big)

    TCKD (the first term) carries the "difficulty" of each example, NCKD the
    dark knowledge among wrong classes; classical KD couples NCKD with the
    weight ``1 - p^T_y``. Defaults ``alpha = 1, beta = 8, T = 4`` as in the paper.
    """

    @classmethod
    def build(cls, context: BuildContext, **options: Any) -> DKDLoss:
        return cls(options["dkd_alpha"], options["dkd_beta"], options["temperature"])

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise TransferkitError(f"temperature must be positive, got {temperature}")
        self.alpha, self.beta, self.temperature = alpha, beta, float(temperature)

    def forward(self, student: Outputs, teacher: Outputs, y: Tensor | None) -> Tensor:
        target = labels_or_teacher(y, teacher)
        t = self.temperature
        gt = F.one_hot(target, student.logits.shape[1]).to(student.logits.dtype)
        ps = F.softmax(student.logits / t, dim=1)
        pt = F.softmax(teacher.logits / t, dim=1)
        ps_y, pt_y = (ps * gt).sum(1, keepdim=True), (pt * gt).sum(1, keepdim=True)
        bs = torch.cat([ps_y, 1 - ps_y], 1).clamp_min(1e-12)
        bt = torch.cat([pt_y, 1 - pt_y], 1).clamp_min(1e-12)
        tckd = F.kl_div(bs.log(), bt, reduction="batchmean")
        mask = 1000.0 * gt  # removes the target class from both softmaxes
        nckd = F.kl_div(
            F.log_softmax(student.logits / t - mask, dim=1), F.log_softmax(teacher.logits / t - mask, dim=1),
            reduction="batchmean", log_target=True,
        )
        return (self.alpha * tckd + self.beta * nckd) * (t * t)
