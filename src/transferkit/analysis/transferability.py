"""Transferability scores: which pretrained model will fine-tune best on a target task?

Every score needs one forward pass of the labelled target set through each
candidate model (features and/or source-head probabilities) and no training.
Higher is better for all four.

========  ==========================================  =======================================
score     needs                                       paper
========  ==========================================  =======================================
LogME     features (N, D), target labels              You et al., ICML 2021
LEEP      source-head probabilities (N, Z), labels    Nguyen et al., ICML 2020
NCE       source-head hard labels, target labels      Tran et al., ICCV 2019
H-score   features (N, D), target labels              Bao et al., ICIP 2019
========  ==========================================  =======================================
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
from torch import Tensor

from ..errors import TransferkitError

__all__ = ["h_score", "leep", "log_evidence", "logme", "nce"]


def _check(n: int, labels: Tensor, what: str) -> Tensor:
    labels = labels.reshape(-1).long().cpu()
    if len(labels) != n:
        raise TransferkitError(f"{what}: {n} inputs but {len(labels)} labels")
    if n == 0:
        raise TransferkitError(f"{what}: the target set is empty")
    if int(labels.min()) < 0:
        raise TransferkitError(f"{what}: labels must be non-negative class indices")
    if len(torch.unique(labels)) < 2:
        raise TransferkitError(
            f"{what} needs a target set with at least 2 classes; all {n} labels are class {int(labels[0])}"
        )
    return labels


def log_evidence(features: Tensor, y: Tensor, alpha: float, beta: float) -> float:
    """Log marginal likelihood ``log p(y | F, alpha, beta)`` of Bayesian linear regression, computed directly.

    ``y = F w + e`` with ``w ~ N(0, alpha^-1 I)`` and ``e ~ N(0, beta^-1 I)`` gives
    ``y ~ N(0, beta^-1 I + alpha^-1 F F^T)``. An O(N^3) reference for :func:`logme`.
    """
    f = features.double()
    n = f.shape[0]
    cov = torch.eye(n, dtype=torch.float64) / beta + f @ f.T / alpha
    return float(torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(y.double()))


@overload
def logme(
    features: Tensor, labels: Tensor, max_iter: int = ..., tol: float = ..., return_params: Literal[False] = ...
) -> float: ...


@overload
def logme(
    features: Tensor, labels: Tensor, max_iter: int = ..., tol: float = ..., *, return_params: Literal[True]
) -> tuple[float, Tensor, Tensor]: ...


def logme(
    features: Tensor, labels: Tensor, max_iter: int = 100, tol: float = 1e-6, return_params: bool = False
) -> float | tuple[float, Tensor, Tensor]:
    r"""LogME: the maximum log evidence of a Bayesian linear model on the features, per sample.

    You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning", ICML 2021.

    For each class :math:`k` the one-hot column :math:`y_k \in \{0,1\}^N` is
    regressed on the features :math:`F \in \mathbb{R}^{N \times D}` with prior
    :math:`w \sim \mathcal N(0, \alpha^{-1} I)` and noise :math:`\mathcal N(0, \beta^{-1})`.
    With :math:`A = \alpha I + \beta F^\top F` and :math:`m = \beta A^{-1} F^\top y_k`,

    .. math::
        \log p(y_k \mid F, \alpha, \beta) = \tfrac D2 \log\alpha + \tfrac N2 \log\beta
        - \tfrac\beta2 \lVert y_k - F m\rVert^2 - \tfrac\alpha2 \lVert m\rVert^2
        - \tfrac12 \log\lvert A\rvert - \tfrac N2 \log 2\pi .

    :math:`\alpha, \beta` are set by MacKay's fixed point
    :math:`\gamma = \sum_i \frac{\beta\sigma_i}{\alpha + \beta\sigma_i}`,
    :math:`\alpha = \gamma / \lVert m\rVert^2`, :math:`\beta = (N-\gamma)/\lVert y_k - Fm\rVert^2`
    (:math:`\sigma_i` the eigenvalues of :math:`F^\top F`, from one SVD shared by all
    classes; the classes are iterated together as vectors). LogME is the mean over
    classes of the maximised evidence divided by :math:`N`.

    Unlike the reference code, the :math:`D - \mathrm{rank}(F)` zero eigenvalues are kept
    in :math:`\log\lvert A\rvert` when :math:`N < D`, so the value is the exact evidence.
    """
    f = features.detach().reshape(len(features), -1).double().cpu()
    n, d = f.shape
    y_idx = _check(n, labels, "LogME")
    y = torch.nn.functional.one_hot(y_idx, int(y_idx.max()) + 1).double()
    y = y[:, y.sum(0) > 0]  # classes present in the sample
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = (s**2)[:, None]  # (r, 1)
    x2 = (u.T @ y) ** 2  # (r, C): squared projections on the left singular vectors
    res_x2 = (y**2).sum(0) - x2.sum(0)  # part of y outside the column space of F
    c = y.shape[1]
    alpha = torch.ones(c, dtype=torch.float64)
    beta = torch.ones(c, dtype=torch.float64)
    for _ in range(max_iter):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        m2 = (sigma * x2 / (t + sigma) ** 2).sum(0)
        res2 = (x2 * (t / (t + sigma)) ** 2).sum(0) + res_x2.clamp_min(0)
        alpha = gamma / m2.clamp_min(1e-12)
        beta = (n - gamma) / res2.clamp_min(1e-12)
        if ((alpha / beta - t).abs() / t).max() < tol:
            break
    t = alpha / beta
    m2 = (sigma * x2 / (t + sigma) ** 2).sum(0)
    res2 = (x2 * (t / (t + sigma)) ** 2).sum(0) + res_x2.clamp_min(0)
    logdet = torch.log(alpha + beta * sigma).sum(0) + (d - sigma.shape[0]) * torch.log(alpha)
    evidence = (
        d / 2 * torch.log(alpha) + n / 2 * torch.log(beta) - beta / 2 * res2 - alpha / 2 * m2
        - logdet / 2 - n / 2 * math.log(2 * math.pi)
    ) / n
    value = float(evidence.mean())
    if return_params:
        return value, alpha, beta
    return value


def leep(probs: Tensor, labels: Tensor) -> float:
    r"""LEEP: log expected empirical prediction of the source head, re-labelled to the target classes.

    Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations", ICML 2020.

    With source-head probabilities :math:`\theta(x_i) \in \Delta^{Z}`,
    :math:`\hat P(y, z) = \frac1N \sum_{i: y_i = y} \theta(x_i)_z`,
    :math:`\hat P(y \mid z) = \hat P(y, z) / \sum_{y'} \hat P(y', z)` and

    .. math:: \mathrm{LEEP} = \frac1N \sum_i \log \sum_z \hat P(y_i \mid z)\, \theta(x_i)_z \le 0.
    """
    p = probs.detach().double().cpu()
    n = p.shape[0]
    y = _check(n, labels, "LEEP")
    if p.dim() != 2 or bool((p < -1e-6).any()) or not torch.allclose(p.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-4):
        raise TransferkitError("LEEP needs source-head probabilities: an (N, Z) array whose rows sum to 1 (apply softmax to logits)")
    joint = torch.zeros(int(y.max()) + 1, p.shape[1], dtype=torch.float64).index_add_(0, y, p) / n  # (Y, Z)
    cond = joint / joint.sum(0, keepdim=True).clamp_min(1e-300)  # P(y | z)
    eep = (p * cond[y]).sum(1)  # sum_z P(y_i | z) theta_z(x_i)
    return float(torch.log(eep.clamp_min(1e-300)).mean())


def nce(source_labels: Tensor, labels: Tensor) -> float:
    r"""NCE: negative conditional entropy of the target labels given the source model's predicted labels.

    Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised
    Classification Tasks", ICCV 2019.

    With :math:`z_i = \arg\max_z \theta(x_i)_z` and the empirical joint
    :math:`\hat P(y, z) = \frac1N \lvert\{i: y_i = y, z_i = z\}\rvert`,

    .. math:: \mathrm{NCE} = -H(Y \mid Z) = \sum_{y, z} \hat P(y, z) \log \frac{\hat P(y, z)}{\hat P(z)} \le 0.
    """
    z = source_labels.detach().reshape(-1).long().cpu()
    y = _check(len(z), labels, "NCE")
    if int(z.min()) < 0:
        raise TransferkitError("NCE needs source labels as non-negative class indices")
    nz = int(z.max()) + 1
    joint = torch.bincount(y * nz + z, minlength=(int(y.max()) + 1) * nz).reshape(-1, nz).double() / len(z)
    pz = joint.sum(0, keepdim=True)
    mask = joint > 0
    return float((joint[mask] * torch.log(joint[mask] / pz.expand_as(joint)[mask])).sum())


def h_score(features: Tensor, labels: Tensor, shrinkage: float | str = 0.0) -> float:
    r"""H-score: how much of the feature covariance the class means explain.

    Bao, Li, Huang, Wang, Zhang, Tan, Zhang, "An Information-Theoretic Approach to
    Transferability in Task Transfer Learning", ICIP 2019.

    .. math:: H(f) = \operatorname{tr}\!\left(\operatorname{cov}(f)^{-1}\,
        \operatorname{cov}\!\left(\mathbb E[f \mid y]\right)\right)

    with :math:`\operatorname{cov}(f)^{-1}` the pseudo-inverse. ``shrinkage`` in
    [0, 1] replaces :math:`\operatorname{cov}(f)` by
    :math:`(1-s)\operatorname{cov}(f) + s\,\frac{\operatorname{tr}\operatorname{cov}(f)}{D} I`,
    which stabilises the score when :math:`N` is not much larger than :math:`D`
    (Ibrahim, Ponomareva, Mazumder, "Newer is not always better", ECCV 2022).
    ``shrinkage="auto"`` takes the Ledoit-Wolf coefficient, as they recommend. Without
    shrinkage and with :math:`N \le D` the plain score saturates at ``C - 1``.
    """
    f = features.detach().reshape(len(features), -1).double().cpu()
    y = _check(len(f), labels, "H-score")
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        shrinkage = float(ledoit_wolf_shrinkage(f.numpy(), assume_centered=False))
    if not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage <= 1:
        raise TransferkitError(f"H-score shrinkage must be 'auto' or in [0, 1], got {shrinkage}")
    f = f - f.mean(0, keepdim=True)
    cov = f.T @ f / len(f)
    if shrinkage > 0:
        d = cov.shape[0]
        cov = (1 - shrinkage) * cov + shrinkage * torch.trace(cov) / d * torch.eye(d, dtype=torch.float64)
    c = int(y.max()) + 1
    counts = torch.bincount(y, minlength=c).double()
    means = torch.zeros(c, f.shape[1], dtype=torch.float64).index_add_(0, y, f) / counts.clamp_min(1)[:, None]
    g = means[y]  # E[f | y] for every sample (f is centred, so this is centred too)
    cov_g = g.T @ g / len(f)
    return float(torch.trace(torch.linalg.pinv(cov, hermitian=True, rtol=1e-10) @ cov_g))

