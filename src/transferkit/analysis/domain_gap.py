"""How far apart are two domains? Proxy A-distance and MMD, on inputs or on a model's features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import TransferkitError
from ..ops import domain_classifier, mmd2, sq_distances

__all__ = ["MIN_SAMPLES", "ADistance", "MMDResult", "check_sample_count", "median_bandwidth", "mmd2_unbiased", "mmd_median", "proxy_a_distance"]


MIN_SAMPLES = 10
"""Fewest samples per domain for the A-distance and MMD: with fewer, the domain classifier is tested
on under 5 examples per domain, its error moves in steps of 10% or more, and the A-distance is noise
(6 per domain gave 2.000 for two halves of one dataset). ``gap --max-samples`` has the same minimum."""


def check_sample_count(n_source: int, n_target: int, what: str = "the domain gap") -> None:
    """Refuse fewer than :data:`MIN_SAMPLES` samples in either domain."""
    if min(n_source, n_target) < MIN_SAMPLES:
        which = "source" if n_source < MIN_SAMPLES else "target"
        raise TransferkitError(
            f"{what} needs at least {MIN_SAMPLES} samples per domain, but the {which} has {min(n_source, n_target)}: "
            "with fewer, the domain classifier is tested on a handful of examples and the A-distance and MMD are "
            "noise (any value from 0 to 2). Give more data for both domains"
        )


def _as_2d(x: Tensor | np.ndarray, what: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    return a.reshape(len(a), -1).astype(np.float64)


def _subsample(a: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return a if len(a) <= n else a[rng.choice(len(a), n, replace=False)]


@dataclass
class ADistance:
    """``distance = 2 (1 - 2 error)`` clipped to [0, 2]; ``error`` the held-out domain-classifier error."""

    distance: float
    error: float
    n_per_domain: int


def proxy_a_distance(
    source: Tensor | np.ndarray, target: Tensor | np.ndarray, max_samples: int = 2000, seed: int = 0, C: float = 1.0
) -> ADistance:
    r"""Proxy A-distance: how well a linear classifier tells the two domains apart.

    Ben-David, Blitzer, Crammer, Pereira, "Analysis of Representations for Domain
    Adaptation", NeurIPS 2006; Ben-David et al., "A theory of learning from
    different domains", Machine Learning 2010.

    Equal-sized samples of both domains are labelled 0 (source) / 1 (target),
    standardised, and split in half; an L2-regularised logistic regression is
    fitted on one half and its error :math:`\epsilon` measured on the other:

    .. math:: \hat d_A = 2 (1 - 2\epsilon), \quad \text{clipped to } [0, 2].

    Near 0: the domains are indistinguishable; near 2: they are separable.
    """
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    s, t = _as_2d(source, "A-distance"), _as_2d(target, "A-distance")
    check_sample_count(len(s), len(t), "the A-distance")
    if s.shape[1] != t.shape[1]:
        raise TransferkitError(f"A-distance: source has {s.shape[1]} features per sample, target {t.shape[1]}")
    n = min(len(s), len(t), max_samples)
    s, t = _subsample(s, n, rng), _subsample(t, n, rng)
    x = np.concatenate([s, t])
    d = np.r_[np.zeros(n), np.ones(n)]
    x_tr, x_te, d_tr, d_te = train_test_split(x, d, test_size=0.5, random_state=seed, stratify=d)
    clf = domain_classifier(x_tr, d_tr, C, max_iter=2000)
    err = float(np.mean(clf.predict(x_te) != d_te))
    return ADistance(distance=float(np.clip(2 * (1 - 2 * err), 0.0, 2.0)), error=err, n_per_domain=n)


def median_bandwidth(x: Tensor, max_points: int = 1500, seed: int = 0) -> float:
    r"""Median heuristic: :math:`\sigma^2 = \operatorname{median}_{i<j} \lVert x_i - x_j\rVert^2` over the pooled sample.

    At most ``max_points`` (a seeded random subset) enter the median, which keeps it O(max_points^2).
    """
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_points]]
    d = sq_distances(x, x)
    iu = torch.triu_indices(len(x), len(x), 1)
    med = float(np.median(d[iu[0], iu[1]].cpu().numpy()))  # the mean of the two middle values when even
    return med if med > 0 else 1.0


def mmd2_unbiased(x: Tensor, y: Tensor, sigma2: float) -> float:
    r"""Unbiased :math:`\widehat{\mathrm{MMD}}^2_u` with :math:`k(a, b) = \exp(-\lVert a-b\rVert^2 / (2\sigma^2))`.

    Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 2012, eq. (3):

    .. math:: \frac{1}{m(m-1)}\sum_{i\ne j} k(x_i,x_j) + \frac{1}{n(n-1)}\sum_{i\ne j} k(y_i,y_j)
              - \frac{2}{mn}\sum_{i,j} k(x_i,y_j).
    """
    return float(mmd2(x, y, torch.tensor([sigma2], dtype=x.dtype, device=x.device), "unbiased"))


@dataclass
class MMDResult:
    """``mmd2``: unbiased squared MMD; ``mmd``: its square root (0 when the estimate is negative); ``sigma2``: bandwidth."""

    mmd2: float
    mmd: float
    sigma2: float
    n_per_domain: int


def mmd_median(source: Tensor | np.ndarray, target: Tensor | np.ndarray, max_samples: int = 2000, seed: int = 0) -> MMDResult:
    """Gaussian-kernel MMD between the domains with the median-heuristic bandwidth (Gretton et al., 2012)."""
    rng = np.random.default_rng(seed)
    sa, ta = _as_2d(source, "MMD"), _as_2d(target, "MMD")
    check_sample_count(len(sa), len(ta), "the MMD")
    if sa.shape[1] != ta.shape[1]:
        raise TransferkitError(f"MMD: source has {sa.shape[1]} features per sample, target {ta.shape[1]}")
    s = torch.from_numpy(_subsample(sa, max_samples, rng))
    t = torch.from_numpy(_subsample(ta, max_samples, rng))
    sigma2 = median_bandwidth(torch.cat([s, t]), seed=seed)
    v = mmd2_unbiased(s, t, sigma2)
    return MMDResult(mmd2=v, mmd=float(np.sqrt(max(v, 0.0))), sigma2=sigma2, n_per_domain=min(len(s), len(t)))
