"""The contract between a method and the engine.

A method owns its trainable modules (the model, plus any discriminator or
extra head) and turns one batch into named losses. It never writes a loop,
a checkpoint or a log line: the :class:`~transferkit.engine.Trainer` does.
The total loss is the sum of the returned values; weights are applied inside
the method so the logged terms are what was optimised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Classifier


@dataclass
class StepInfo:
    """Where training is: used by schedules such as DANN's coefficient ramp."""

    epoch: int
    step: int  # global step, from 0
    total_steps: int

    @property
    def progress(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


class Method(nn.Module):
    """Base class: ``training_losses(batch, info) -> {name: scalar tensor}``."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def training_losses(self, batch: Any, info: StepInfo) -> dict[str, Tensor]:
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; override for per-group learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for methods with per-epoch state (e.g. a stage switch)."""


class Supervised(Method):
    """Cross-entropy on labelled batches, with optional label smoothing.

    L = CE(softmax(f(x)), y_smooth), y_smooth = (1 - eps) one_hot(y) + eps / C
    """

    def __init__(self, model: Classifier, label_smoothing: float = 0.0):
        super().__init__(model)
        self.label_smoothing = label_smoothing

    def training_losses(self, batch: Any, info: StepInfo) -> dict[str, Tensor]:
        x, y = batch
        return {"ce": F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)}
