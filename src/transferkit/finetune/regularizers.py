"""Regularizers that keep a fine-tuned model close to what it learnt.

Each is a small module whose ``forward`` returns a scalar penalty; the
fine-tuning method adds them to the target loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Classifier


class L2SP(nn.Module):
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

    def forward(self) -> Tensor:
        sp = sum(((p - getattr(self, f"start_{i}")) ** 2).sum() for i, (_, p) in enumerate(self.shared) if p.requires_grad)
        new = sum((p**2).sum() for p in self.head)
        return 0.5 * self.alpha * torch.as_tensor(sp) + 0.5 * self.beta * new


class LwF(nn.Module):
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

    def forward(self, features: Tensor, recorded_logits: Tensor) -> Tensor:
        t = self.temperature
        log_p = F.log_softmax(self.old_head(features) / t, dim=1)
        q = F.softmax(recorded_logits / t, dim=1)
        return self.weight * t * t * F.kl_div(log_p, q, reduction="batchmean")


class BSS(nn.Module):
    r"""Batch Spectral Shrinkage (Chen et al., NeurIPS 2019).

    Penalises the :math:`k` smallest singular values of the batch feature
    matrix :math:`F \in \mathbb{R}^{b \times d}`, which carry the
    untransferable components:

    .. math:: L_{bss}(F) = \eta \sum_{i=1}^{k} \sigma_{-i}^2
    """

    def __init__(self, eta: float = 1e-3, k: int = 1):
        super().__init__()
        self.eta, self.k = eta, k

    def forward(self, features: Tensor) -> Tensor:
        s = torch.linalg.svdvals(features.float())
        return self.eta * (s[-self.k :] ** 2).sum()


REGULARIZERS = {"l2sp": L2SP, "lwf": LwF, "bss": BSS}
