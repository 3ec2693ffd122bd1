"""Batch Spectral Shrinkage: this file is the whole regularizer (config, penalty, registration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..models import Classifier
from ..options import option
from .regularizers import REGULARIZERS, Regularizer


@dataclass
class BSSConfig:
    bss_eta: float = option(1e-3, "BSS: weight of the penalty.", min=0)
    bss_k: int = option(1, "BSS: number of smallest singular values penalised.", min=1)


@REGULARIZERS.register("bss", "batch spectral shrinkage of the smallest feature singular values (Chen et al. 2019)", BSSConfig)
class BSS(Regularizer):
    r"""Batch Spectral Shrinkage (Chen et al., NeurIPS 2019).

    Penalises the :math:`k` smallest singular values of the batch feature
    matrix :math:`F \in \mathbb{R}^{b \times d}`, which carry the
    untransferable components:

    .. math:: L_{bss}(F) = \eta \sum_{i=1}^{k} \sigma_{-i}^2
    """

    def __init__(self, eta: float = 1e-3, k: int = 1):
        super().__init__()
        self.eta, self.k = eta, k

    @classmethod
    def build(cls, model: Classifier, old_head: nn.Linear, **options: Any) -> BSS:
        return cls(options["bss_eta"], options["bss_k"])

    def forward(self, features: Tensor) -> Tensor:
        s = torch.linalg.svdvals(features.float())
        return self.eta * (s[-self.k :] ** 2).sum()

    def penalty(self, features: Tensor, batch: dict[str, Any]) -> Tensor:
        return self(features)
