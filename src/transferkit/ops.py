"""Shared maths for every family: distances, the kernel MMD, the domain classifier.

This module sits low in the import graph: it imports torch, numpy and the leaf
:mod:`transferkit.errors` only (scikit-learn lazily), so any family, the engine
and the analysis tools can use it without importing each other.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from .errors import TransferkitError

__all__ = ["MMD_ESTIMATES", "domain_classifier", "domain_density_ratio", "gaussian_kernels", "mmd2", "sq_distances"]

MMD_ESTIMATES = ("biased", "unbiased", "linear")

Array = TypeVar("Array", Tensor, np.ndarray)


# ---------------------------------------------------------------- distances
def sq_distances(a: Array, b: Array) -> Array:
    r"""(n, m) squared Euclidean distances between the rows of ``a`` (n, D) and ``b`` (m, D).

    .. math:: D_{ij} = \lVert a_i - b_j\rVert^2 = \lVert a_i\rVert^2 + \lVert b_j\rVert^2 - 2\, a_i^\top b_j,

    one matrix product (O(nm) memory, as ``torch.cdist`` for large inputs), clipped at 0
    against round-off. Works on torch tensors (differentiable, also twice and under
    ``vmap``) and on numpy arrays alike.
    """
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return d2.clip(min=0)


# ---------------------------------------------------------------------- MMD
def gaussian_kernels(x: Tensor, y: Tensor, sigmas2: Tensor) -> Tensor:
    r"""(n, m) matrix :math:`\sum_k \exp(-\lVert x_i - y_j\rVert^2 / (2\sigma_k^2))` over the bandwidths ``sigmas2``."""
    d2 = sq_distances(x, y)
    return torch.exp(-d2.unsqueeze(0) / (2 * sigmas2.view(-1, 1, 1))).sum(0)


def mmd2(xs: Tensor, xt: Tensor, sigmas2: Tensor, estimate: str = "biased") -> Tensor:
    """Squared MMD with the multi-kernel k = sum_k exp(-||a-b||^2 / 2 sigma_k^2) (one bandwidth: a plain Gaussian).

    biased:   1/n^2 sum k(s_i,s_j) + 1/m^2 sum k(t_i,t_j) - 2/(nm) sum k(s_i,t_j)
    unbiased: the within-domain sums leave out i = j and divide by n(n-1), m(m-1)
              (Gretton, Borgwardt, Rasch, Schölkopf, Smola, JMLR 2012, eq. 3)
    linear:   Gretton et al. (2012) linear-time estimate over consecutive pairs,
              1/(n/2) sum_i k(s_2i,s_2i+1) + k(t_2i,t_2i+1) - k(s_2i,t_2i+1) - k(s_2i+1,t_2i)
    """
    if estimate == "linear":
        n = (min(len(xs), len(xt)) // 2) * 2
        if n < 2:
            raise TransferkitError("the linear-time MMD estimate needs at least 2 samples per domain")
        s1, s2, t1, t2 = xs[0:n:2], xs[1:n:2], xt[0:n:2], xt[1:n:2]

        def k(a: Tensor, b: Tensor) -> Tensor:
            d2 = (a - b).pow(2).sum(1)
            return torch.exp(-d2.unsqueeze(0) / (2 * sigmas2.view(-1, 1))).sum(0)

        return (k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1)).mean()
    kss, ktt, kst = gaussian_kernels(xs, xs, sigmas2), gaussian_kernels(xt, xt, sigmas2), gaussian_kernels(xs, xt, sigmas2)
    n, m = len(xs), len(xt)
    if estimate == "unbiased":
        if n < 2 or m < 2:
            raise TransferkitError("the unbiased MMD estimate needs at least 2 samples per domain")
        ss = (kss.sum() - kss.diagonal().sum()) / (n * (n - 1))
        tt = (ktt.sum() - ktt.diagonal().sum()) / (m * (m - 1))
        return ss + tt - 2 * kst.mean()
    if estimate != "biased":
        raise TransferkitError(f"unknown MMD estimate '{estimate}'; known: {', '.join(MMD_ESTIMATES)}")
    return kss.mean() + ktt.mean() - 2 * kst.mean()


# ------------------------------------------------------- domain classifier
def domain_classifier(x: np.ndarray, domain: np.ndarray, C: float = 1.0, max_iter: int = 1000) -> Any:
    r"""Fitted L2-regularised logistic regression telling the domains apart (a scikit-learn pipeline).

    Inputs are standardised with the mean and standard deviation of ``x``,
    :math:`z = (x - \mu) / \sigma`, then
    :math:`P(d = 1 \mid x) = \operatorname{sigmoid}(w^\top z + b)` minimises
    :math:`\tfrac12\lVert w\rVert^2 + C \sum_i \mathrm{logloss}(d_i, P(d=1 \mid x_i))`.
    ``domain`` holds the 0/1 domain labels of the rows of ``x``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)).fit(x, domain)


def domain_density_ratio(
    xs: np.ndarray, xt: np.ndarray, C: float = 1.0, max_iter: int = 1000, folds: int = 1, seed: int = 0
) -> np.ndarray:
    r"""Density ratio :math:`w(x) = p_t(x) / p_s(x)` at the source rows ``xs``, from a domain classifier.

    With :math:`p = P(\text{target} \mid x)` of :func:`domain_classifier` fitted on
    source (0) and target (1) rows, Bayes' rule gives

    .. math:: w(x) = \frac{n_s}{n_t} \frac{p}{1 - p}, \quad p \text{ clipped to } [10^{-6}, 1 - 10^{-6}]

    (Bickel, Brückner, Scheffer, "Discriminative learning for differing training
    and test distributions", ICML 2007).

    With ``folds > 1`` the ratio is cross-fitted: each source row's :math:`p` comes from a
    classifier fitted on the other folds (stratified by domain), so a classifier that separates
    its own training rows does not push every in-sample ratio to the clip.
    """
    x = np.concatenate([xs, xt])
    d = np.concatenate([np.zeros(len(xs)), np.ones(len(xt))])
    if folds <= 1:
        p = domain_classifier(x, d, C, max_iter).predict_proba(xs)[:, 1]
    else:
        from sklearn.model_selection import StratifiedKFold

        p = np.empty(len(xs))
        for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, d):
            held_source = held[held < len(xs)]
            if len(held_source):
                p[held_source] = domain_classifier(x[train], d[train], C, max_iter).predict_proba(x[held_source])[:, 1]
    p = p.clip(1e-6, 1 - 1e-6)
    return p / (1 - p) * (len(xs) / len(xt))


def effective_sample_size(w: np.ndarray) -> float:
    r"""Kish's effective sample size of importance weights, :math:`(\sum w)^2 / \sum w^2` (n when all equal)."""
    w = np.asarray(w, dtype=np.float64)
    return float(w.sum() ** 2 / max((w**2).sum(), 1e-300))
