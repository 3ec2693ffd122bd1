"""Weight schedules for the transfer term: ``lambda(p)`` with training progress p in [0, 1]."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import TransferkitError, unknown_name

SCHEDULE_KINDS = ("constant", "dann", "linear")


@dataclass(frozen=True)
class WeightSchedule:
    """``lambda(p) = weight * r(p)``.

    constant: r(p) = 1
    dann:     r(p) = 2 / (1 + exp(-gamma p)) - 1   (Ganin et al., JMLR 2016; gamma = 10)
    linear:   r(p) = min(1, p / warmup)
    """

    kind: str = "constant"
    weight: float = 1.0
    gamma: float = 10.0
    warmup: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise unknown_name("weight schedule", self.kind, SCHEDULE_KINDS)
        if self.weight < 0:
            raise TransferkitError(f"the transfer weight must be >= 0, got {self.weight}")

    def __call__(self, progress: float) -> float:
        p = min(1.0, max(0.0, float(progress)))
        if self.kind == "dann":
            r = 2.0 / (1.0 + math.exp(-self.gamma * p)) - 1.0
        elif self.kind == "linear":
            r = min(1.0, p / self.warmup) if self.warmup > 0 else 1.0
        else:
            r = 1.0
        return self.weight * r
