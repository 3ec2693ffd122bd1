"""Alignment losses and adversarial parts, each a small ``nn.Module``.

Everything here works on batches of features ``(N, D)``; nothing loops over
samples. The methods in :mod:`transferkit.adapt.methods` combine these with a
classifier and a weight schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TransferkitError
from ..ops import MMD_ESTIMATES, gaussian_kernels, mmd2, sq_distances  # noqa: F401  (public here too)


# --------------------------------------------------------------------------- MMD
# The kernels and the squared-MMD estimates are the shared ones of transferkit.ops.
def bandwidths(xs: Tensor, xt: Tensor, multipliers: Sequence[float]) -> Tensor:
    """sigma_k^2 = m_k * mean pairwise squared distance of the pooled batch (detached)."""
    z = torch.cat([xs, xt]).detach()
    n = len(z)
    mean_d2 = sq_distances(z, z).sum() / max(1, n * n - n)
    return mean_d2.clamp_min(1e-8) * torch.tensor(list(multipliers), dtype=z.dtype, device=z.device)


class MultiKernelMMD(nn.Module):
    """Multi-kernel maximum mean discrepancy (MK-MMD) of DAN.

    ``MMD^2(P_s, P_t) = || E_s phi(x) - E_t phi(x) ||^2_H`` for the kernel
    ``k = sum_u k_{sigma_u}``, a family of Gaussian kernels whose bandwidths are
    ``multipliers`` times the mean pairwise squared distance of the batch.

    Long, Cao, Wang, Jordan. "Learning Transferable Features with Deep
    Adaptation Networks." ICML 2015. Linear-time estimate: Gretton et al.,
    "Optimal kernel choice for large-scale two-sample tests", NeurIPS 2012.
    """

    def __init__(self, multipliers: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0), estimate: str = "unbiased"):
        super().__init__()
        if estimate not in MMD_ESTIMATES:
            raise TransferkitError(f"unknown MMD estimate '{estimate}'; known: {', '.join(MMD_ESTIMATES)}")
        self.multipliers = tuple(float(m) for m in multipliers)
        self.estimate = estimate

    def forward(self, xs: Tensor, xt: Tensor) -> Tensor:
        xs, xt = xs.flatten(1), xt.flatten(1)
        return mmd2(xs, xt, bandwidths(xs, xt, self.multipliers), self.estimate)


# ------------------------------------------------------------------------- CORAL
def covariance(x: Tensor) -> Tensor:
    """Unbiased covariance ``(X - mean)^T (X - mean) / (n - 1)`` of an (N, D) batch."""
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / max(1, len(x) - 1)


class CORALLoss(nn.Module):
    """Deep CORAL: ``L = ||C_s - C_t||_F^2 / (4 d^2)`` with C the feature covariances.

    Sun and Saenko. "Deep CORAL: Correlation Alignment for Deep Domain
    Adaptation." ECCV 2016 workshops.
    """

    def forward(self, xs: Tensor, xt: Tensor) -> Tensor:
        xs, xt = xs.flatten(1), xt.flatten(1)
        d = xs.shape[1]
        return (covariance(xs) - covariance(xt)).pow(2).sum() / (4 * d * d)


# ------------------------------------------------------------ adversarial parts
class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward."""
    return _ReverseGrad.apply(x, float(coeff))


class GradientReversal(nn.Module):
    """Gradient reversal layer R_lambda: R(x) = x, dR/dx = -lambda I.

    Ganin and Lempitsky. "Unsupervised Domain Adaptation by Backpropagation." ICML 2015.
    """

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = coeff

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.coeff)


class DomainDiscriminator(nn.Module):
    """MLP ``D: R^d -> R`` giving the logit that an input comes from the source domain."""

    def __init__(self, in_features: int, hidden: int = 500, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = []
        d = in_features
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(0.5)]
            d = hidden
        mods.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def domain_bce(d_s: Tensor, d_t: Tensor, w_s: Tensor | None = None, w_t: Tensor | None = None) -> Tensor:
    """Domain classification loss: source labelled 1, target 0 (optionally weighted per sample)."""
    ls = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), weight=w_s)
    lt = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), weight=w_t)
    return 0.5 * (ls + lt)


def entropy(probs: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-row Shannon entropy ``H(p) = -sum_c p_c log p_c``."""
    return -(probs * torch.log(probs + eps)).sum(1)


class MultilinearMap(nn.Module):
    """CDAN conditioning: ``T(f, g) = f (x) g`` (outer product, flattened), or its
    randomized version ``(R_f f) * (R_g g) / sqrt(d)`` when ``f (x) g`` would be
    wider than ``max_dim``. The random matrices are fixed buffers.

    Long, Cao, Wang, Jordan. "Conditional Adversarial Domain Adaptation." NeurIPS 2018.
    """

    rf: Tensor  # buffers, registered only when randomized
    rg: Tensor

    def __init__(self, feature_dim: int, num_classes: int, max_dim: int = 4096, random_dim: int = 1024):
        super().__init__()
        self.randomized = feature_dim * num_classes > max_dim
        self.out_features = random_dim if self.randomized else feature_dim * num_classes
        if self.randomized:
            g = torch.Generator().manual_seed(0)
            self.register_buffer("rf", torch.randn(feature_dim, random_dim, generator=g))
            self.register_buffer("rg", torch.randn(num_classes, random_dim, generator=g))

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        if self.randomized:
            return (f @ self.rf) * (g @ self.rg) / math.sqrt(self.out_features)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class MCCLoss(nn.Module):
    """Minimum Class Confusion on target predictions.

    With ``Y = softmax(logits / T)``, entropy weights ``w_i = 1 + exp(-H(Y_i))``
    rescaled to sum to N, the class confusion ``C = Y^T diag(w) Y``, column-normalised
    ``C_jk / sum_j C_jk``; ``L = (sum_jk C_jk - tr C) / |classes|``.

    Jin, Wang, Long, Wang. "Minimum Class Confusion for Versatile Domain
    Adaptation." ECCV 2020.
    """

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, logits: Tensor) -> Tensor:
        n, c = logits.shape
        y = F.softmax(logits / self.temperature, dim=1)
        w = 1 + torch.exp(-entropy(y))
        w = (n * w / w.sum()).unsqueeze(1)
        conf = (y * w).T @ y
        conf = conf / conf.sum(0, keepdim=True)
        return (conf.sum() - conf.trace()) / c
