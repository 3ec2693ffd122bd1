"""The fine-tuning method: target cross-entropy plus optional regularizers.

.. math::
    \\mathcal{L} = \\mathrm{CE}_\\epsilon(h(f(x_t)), y_t)
        + \\sum_r \\Omega_r(f, x_t)
        + \\lambda\\, \\mathrm{CE}(h_s(f(x_s)), y_s)\\ \\text{(joint)}

``CE_eps`` is cross-entropy with label smoothing; the last term is ``joint``
multi-task training, which keeps learning the source task with its own head
on the shared backbone. ``Omega_r`` are the chosen regularizers
(:data:`~transferkit.finetune.regularizers.REGULARIZERS`: L2-SP, LwF, BSS, ...).
"""

from __future__ import annotations

from typing import Any, cast

import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import Method, StepInfo
from ..models import Classifier
from .regularizers import Regularizer
from .strategies import layerwise_groups


class FineTune(Method):
    """Batches are dicts: ``x``, ``y``, the regularizers' recorded extras (``old_logits`` for LwF) and,
    for joint training, ``source`` = (x_s, y_s)."""

    def __init__(
        self,
        model: Classifier,
        label_smoothing: float = 0.0,
        regularizers: dict[str, Regularizer] | None = None,
        source_head: nn.Linear | None = None,
        joint_weight: float = 1.0,
        lr_decay: float | None = None,
        head_lr_mult: float = 1.0,
    ):
        super().__init__(model)
        self.label_smoothing = label_smoothing
        self.regularizers = nn.ModuleDict(regularizers or {})
        self.source_head = source_head
        self.joint_weight = joint_weight
        self.lr_decay, self.head_lr_mult = lr_decay, head_lr_mult

    def training_losses(self, batch: dict[str, Any], info: StepInfo) -> dict[str, Tensor]:
        feats, logits = self.model.forward_all(batch["x"])
        out = {"ce": F.cross_entropy(logits, batch["y"], label_smoothing=self.label_smoothing)}
        for name, reg in self.regularizers.items():
            out[name] = cast(Regularizer, reg).penalty(feats, batch)  # ModuleDict values are typed nn.Module
        if self.source_head is not None:
            xs, ys = batch["source"]
            out["source_ce"] = self.joint_weight * F.cross_entropy(self.source_head(self.model.features(xs)), ys)
        return out

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        groups = layerwise_groups(self.model, lr, self.lr_decay, self.head_lr_mult)
        heads = [*self.regularizers.values(), *([self.source_head] if self.source_head is not None else [])]
        extra = [p for m in heads for p in m.parameters() if p.requires_grad]
        if extra:
            groups.append({"params": extra, "lr": lr * self.head_lr_mult, "name": "extra_heads"})
        return groups


class HeadOnly(Method):
    """Linear probe on cached features: batches are ``(features, y)``; only the head trains.

    .. math:: \\mathcal{L} = \\mathrm{CE}_\\epsilon(W z + b, y), \\quad z = f(x) \\text{ computed once}
    """

    def __init__(self, model: Classifier, label_smoothing: float = 0.0):
        super().__init__(model)
        self.label_smoothing = label_smoothing

    def training_losses(self, batch: Any, info: StepInfo) -> dict[str, Tensor]:
        z, y = batch
        return {"ce": F.cross_entropy(self.model.head(z), y, label_smoothing=self.label_smoothing)}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": list(self.model.head.parameters()), "lr": lr}]
