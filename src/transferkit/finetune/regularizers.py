"""Regularizers that keep a fine-tuned model close to what it learnt.

Each is a small module registered in :data:`REGULARIZERS` with the config of its options.
The fine-tuning method adds ``penalty(features, batch)`` of each chosen regularizer to the
target loss; ``build`` makes one from the model before training, and ``batch_extras`` records
anything per example it needs once (LwF's source-model responses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.registry import Registry
from ..models import Classifier
from ..options import option


class Regularizer(nn.Module):
    """Base: a penalty on the fine-tuned model, built once before training."""

    @classmethod
    def build(cls, model: Classifier, old_head: nn.Linear, **options: Any) -> Regularizer:
        """The regularizer for ``model`` (whose source head was ``old_head``) with its config's options."""
        return cls(**options)

    def batch_extras(self, features: Tensor) -> dict[str, Tensor]:
        """Per-example tensors recorded once from the frozen source features (sliced into every batch)."""
        return {}

    def penalty(self, features: Tensor, batch: dict[str, Any]) -> Tensor:
        raise NotImplementedError


REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")
"""Fine-tuning regularizers by name; one registers itself with its options' config."""


@dataclass
class L2SPConfig:
    l2sp_alpha: float = option(0.01, "L2-SP: weight of the pull towards the source weights.", min=0)
    l2sp_beta: float = option(0.01, "L2-SP: weight decay of the new head.", min=0)


@REGULARIZERS.register("l2sp", "weight decay towards the source weights (Li et al. 2018)", L2SPConfig)
class L2SP(Regularizer):
    r"""L2-SP: weight decay toward the starting point (Li, Grandvalet & Davoine, ICML 2018).

    .. math::
        \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2 + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

    :math:`w_S` are the parameters shared with the source model (backbone and
    bottleneck), :math:`w_S^0` their source values, and :math:`w_{\bar S}` the
    new head.
    """

    def __init__(self, model: Classifier, alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.shared = [(n, p) for n, p in model.named_parameters() if not n.startswith("head.")]
        self.head = list(model.head.parameters())
        for i, (_, p) in enumerate(self.shared):
            self.register_buffer(f"start_{i}", p.detach().clone(), persistent=True)

    @classmethod
    def build(cls, model: Classifier, old_head: nn.Linear, **options: Any) -> L2SP:
        return cls(model, options["l2sp_alpha"], options["l2sp_beta"])

    def forward(self) -> Tensor:
        sp = sum(((p - getattr(self, f"start_{i}")) ** 2).sum() for i, (_, p) in enumerate(self.shared) if p.requires_grad)
        new = sum((p**2).sum() for p in self.head)
        return 0.5 * self.alpha * torch.as_tensor(sp) + 0.5 * self.beta * new

    def penalty(self, features: Tensor, batch: dict[str, Any]) -> Tensor:
        return self()


@dataclass
class LwFConfig:
    lwf_weight: float = option(1.0, "LwF: weight of the old-task distillation term.", min=0)
    lwf_temperature: float = option(2.0, "LwF: softmax temperature.", min=0, min_open=True)


@REGULARIZERS.register("lwf", "learning without forgetting: keep the source head's outputs (Li & Hoiem 2016)", LwFConfig)
class LwF(Regularizer):
    r"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017).

    The source head is kept beside the new one. Before training, the source
    model's responses :math:`y_o` on the target inputs are recorded (once,
    cached); during training its head on the shared features must keep them:

    .. math::
        \mathcal{L}_{old} = \lambda\, T^2\, \mathrm{KL}\big(\mathrm{softmax}(y_o / T)\ \|\ \mathrm{softmax}(\hat y_o / T)\big)
    """

    def __init__(self, old_head: nn.Linear, weight: float = 1.0, temperature: float = 2.0):
        super().__init__()
        self.old_head = old_head
        self.weight, self.temperature = weight, temperature

    @classmethod
    def build(cls, model: Classifier, old_head: nn.Linear, **options: Any) -> LwF:
        return cls(old_head, options["lwf_weight"], options["lwf_temperature"])

    def forward(self, features: Tensor, recorded_logits: Tensor) -> Tensor:
        t = self.temperature
        log_p = F.log_softmax(self.old_head(features) / t, dim=1)
        q = F.softmax(recorded_logits / t, dim=1)
        return self.weight * t * t * F.kl_div(log_p, q, reduction="batchmean")

    @torch.no_grad()
    def batch_extras(self, features: Tensor) -> dict[str, Tensor]:
        return {"old_logits": self.old_head(features)}

    def penalty(self, features: Tensor, batch: dict[str, Any]) -> Tensor:
        return self(features, batch["old_logits"])
