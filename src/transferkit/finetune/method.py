"""The fine-tuning method: target cross-entropy plus optional regularizers.

.. math::
    \\mathcal{L} = \\mathrm{CE}_\\epsilon(h(f(x_t)), y_t)
        + \\Omega_{L2SP} + \\mathcal{L}_{LwF} + L_{BSS}
        + \\lambda\\, \\mathrm{CE}(h_s(f(x_s)), y_s)\\ \\text{(joint)}

``CE_eps`` is cross-entropy with label smoothing; the last term is ``joint``
multi-task training, which keeps learning the source task with its own head
on the shared backbone.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..engine import Method, StepInfo
from ..models import Classifier
from .regularizers import BSS, L2SP, LwF
from .strategies import layerwise_groups


class FineTune(Method):
    """Batches are dicts: ``x``, ``y``, optionally ``old_logits`` (LwF) and ``source`` = (x_s, y_s) (joint)."""

    def __init__(
        self,
        model: Classifier,
        label_smoothing: float = 0.0,
        l2sp: L2SP | None = None,
        lwf: LwF | None = None,
        bss: BSS | None = None,
        source_head: nn.Linear | None = None,
        joint_weight: float = 1.0,
        lr_decay: float | None = None,
        head_lr_mult: float = 1.0,
    ):
        super().__init__(model)
        self.label_smoothing = label_smoothing
        self.l2sp, self.lwf, self.bss = l2sp, lwf, bss
        self.source_head = source_head
        self.joint_weight = joint_weight
        self.lr_decay, self.head_lr_mult = lr_decay, head_lr_mult

    def training_losses(self, batch: dict[str, Any], info: StepInfo) -> dict[str, Tensor]:
        feats, logits = self.model.forward_all(batch["x"])
        out = {"ce": F.cross_entropy(logits, batch["y"], label_smoothing=self.label_smoothing)}
        if self.l2sp is not None:
            out["l2sp"] = self.l2sp()
        if self.lwf is not None:
            out["lwf"] = self.lwf(feats, batch["old_logits"])
        if self.bss is not None:
            out["bss"] = self.bss(feats)
        if self.source_head is not None:
            xs, ys = batch["source"]
            out["source_ce"] = self.joint_weight * F.cross_entropy(self.source_head(self.model.features(xs)), ys)
        return out

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        groups = layerwise_groups(self.model, lr, self.lr_decay, self.head_lr_mult)
        extra = [p for m in (self.lwf, self.source_head) if m is not None for p in m.parameters() if p.requires_grad]
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
