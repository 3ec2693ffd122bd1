"""The sinusoid regression tasks of the MAML paper (Finn et al. 2017, Sec. 5.1).

Each task is ``y = A sin(x - phase)`` with amplitude A ~ U[0.1, 5.0], phase ~
U[0, pi] and inputs x ~ U[-5, 5]; K support points and Q query points per task.
The learner is a 1-40-40-1 ReLU MLP (``create_model("mlp", 1, (1,), hidden=(40, 40))``)
trained with the ``mse`` loss. Quick to run on a CPU: a test and a demo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TransferkitError
from ..models import Classifier, create_model
from .episodes import Episode


@dataclass
class SinusoidTasks:
    """A sampler of sinusoid regression tasks with the same ``sample(tasks, generator)`` shape as :class:`EpisodeSampler`."""

    shots: int = 10
    queries: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        if self.shots < 1 or self.queries < 1:
            raise TransferkitError(f"sinusoid tasks need at least one support and one query point, got {self.shots} and {self.queries}")

    def sample(self, tasks: int = 1, generator: torch.Generator | None = None) -> Episode:
        n = self.shots + self.queries
        u = torch.rand(tasks, 2, generator=generator)
        amp = self.amplitude[0] + u[:, :1] * (self.amplitude[1] - self.amplitude[0])
        phase = self.phase[0] + u[:, 1:] * (self.phase[1] - self.phase[0])
        x = self.x_range[0] + torch.rand(tasks, n, generator=generator) * (self.x_range[1] - self.x_range[0])
        y = amp * torch.sin(x - phase)
        x, y = x.unsqueeze(-1).to(self.device), y.unsqueeze(-1).to(self.device)
        k = self.shots
        return Episode(x[:, :k], y[:, :k], x[:, k:], y[:, k:], torch.cat([amp, phase], 1).to(self.device))


def sinusoid_model(hidden: tuple[int, ...] = (40, 40)) -> Classifier:
    """The MAML paper's regressor: an MLP with two hidden layers of 40 ReLU units, one output."""
    return create_model("mlp", 1, (1,), hidden=hidden)
