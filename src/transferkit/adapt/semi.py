"""Semi-supervised domain adaptation: a few labelled target examples per class beside the unlabelled ones.

``adapt(..., AdaptSpec(target_labels_per_class=K))`` (``transferkit adapt --target-labels-per-class K``)
draws K labelled examples of each class from the target training data (seeded by the run's seed,
stratified); the rest of the target stays unlabelled. Batches then carry a third part,

    ``((x_s, y_s), x_t, (x_l, y_l))``: labelled source, unlabelled target, labelled target,

and every method becomes its semi-supervised variant in the simplest sense: its own loss plus the
cross-entropy of the labelled target batch,

    ``L = L_method(x_s, y_s, x_t) + CE(f(x_l), y_l)``

(:class:`WithTargetLabels` wraps any method that does not read the labelled target itself; the
``source-only`` method becomes the "S+T" baseline of Saito et al. 2019). Methods built for this
setting (``mme``, ``fixmatch``) set ``uses_target_labels = True`` and read the third part
themselves. The labelled target examples train; they never choose the checkpoint (selection stays
with the unsupervised validators, which see the unlabelled target only).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import TensorData
from ..engine import Method, StepInfo
from ..errors import TransferkitError

SemiBatch = tuple[tuple[Tensor, Tensor], Tensor, tuple[Tensor, Tensor]]


def split_target_labels(target: TensorData, per_class: int, num_classes: int, seed: int) -> tuple[TensorData, TensorData]:
    """``(labelled, unlabelled)``: ``per_class`` examples of each class (seeded), and the rest without labels."""
    if target.y is None:
        raise TransferkitError(f"--target-labels-per-class {per_class} draws labelled target examples, but target "
                               f"{target.name} has no labels; give labelled target data or drop the option")
    if target.num_classes != num_classes:
        raise TransferkitError(f"the source has {num_classes} classes but target {target.name} has {target.num_classes}; "
                               "both domains must share one label set")
    y = target.y.cpu()
    counts = torch.bincount(y, minlength=num_classes)
    short = [f"'{target.classes[c]}' ({int(counts[c])})" for c in range(num_classes) if counts[c] < per_class]
    if short:
        raise TransferkitError(f"--target-labels-per-class {per_class} is more than target {target.name} has of class "
                               f"{', '.join(short[:5])}; choose K <= {int(counts.min())}")
    g = torch.Generator().manual_seed(seed)
    picked = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int(counts[c]), generator=g)[:per_class]]
                        for c in range(num_classes)]).sort().values
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[picked] = False
    labelled = target.subset(picked)
    unlabelled = target.subset(torch.nonzero(rest).flatten()).unlabeled()
    return labelled, unlabelled


def needs_target_labels(method_cls: Any) -> bool:
    """Whether a registered method reads the labelled target part of the batch itself."""
    return bool(getattr(method_cls, "uses_target_labels", False))


def check_target_labels_given(method: str, method_cls: Any, per_class: int | None) -> None:
    """Refuse a semi-supervised method (``mme``, ``fixmatch``) without ``--target-labels-per-class``."""
    if per_class is None and needs_target_labels(method_cls):
        raise TransferkitError(f"--method {method} is semi-supervised: it needs a few labelled target examples; "
                               "give labelled --target data and --target-labels-per-class K")


class WithTargetLabels(Method):
    """Any method plus the cross-entropy of the labelled target: ``L = L_method + CE(f(x_l), y_l)``.

    The wrapped method sees its usual ``((x_s, y_s), x_t)`` batch; the labelled target batch goes
    through the model in its own forward pass. The wrapped method's extra modules (discriminators)
    stay its own attributes, so they are optimised and checkpointed as before.
    """

    def __init__(self, inner: Method):
        super().__init__(inner.model)
        self.inner = inner

    def training_losses(self, batch: SemiBatch, info: StepInfo) -> dict[str, Tensor]:
        labelled_source, xt, (xl, yl) = batch
        out = dict(self.inner.training_losses((labelled_source, xt), info))
        out["ce_target"] = F.cross_entropy(self.model(xl), yl)
        return out

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return self.inner.param_groups(lr)

    def on_epoch_start(self, epoch: int) -> None:
        self.inner.on_epoch_start(epoch)
