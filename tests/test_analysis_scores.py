"""Transferability scores and domain-gap measures against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.spatial.distance import pdist

from transferkit.analysis import (
    h_score,
    leep,
    log_evidence,
    logme,
    median_bandwidth,
    mmd2_unbiased,
    mmd_median,
    nce,
    proxy_a_distance,
    tsne_embed,
)
from transferkit.errors import TransferkitError


def _toy(n: int, d: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    means = torch.randn(c, d, generator=g)
    f = means[y] + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float32)
    return f.double(), y


def _max_evidence(f: torch.Tensor, y: torch.Tensor) -> float:
    """Direct maximisation of the O(N^3) evidence over (log alpha, log beta), one class at a time."""
    vals = []
    for k in torch.unique(y):
        yk = (y == k).double()

        def neg(p: np.ndarray, yk: torch.Tensor = yk) -> float:
            return -log_evidence(f, yk, math.exp(p[0]), math.exp(p[1]))

        best = min((minimize(neg, x0, method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
                    for x0 in ([0.0, 0.0], [3.0, 2.0], [-3.0, 1.0])), key=lambda r: r.fun)
        vals.append(-best.fun / len(f))
    return float(np.mean(vals))


@pytest.mark.parametrize(("n", "d"), [(60, 4), (12, 20)])  # N > D and N < D (zero eigenvalues)
def test_logme_equals_direct_evidence_maximisation(n: int, d: int) -> None:
    f, y = _toy(n, d, 3)
    assert logme(f, y) == pytest.approx(_max_evidence(f, y), abs=1e-5)


def test_logme_fixed_point_is_the_evidence_at_its_alpha_beta() -> None:
    f, y = _toy(40, 6, 2, seed=1)
    value, alpha, beta = logme(f, y, return_params=True)
    direct = np.mean([log_evidence(f, (y == k).double(), float(alpha[k]), float(beta[k])) / len(f) for k in range(2)])
    assert value == pytest.approx(direct, abs=1e-8)


def test_logme_prefers_informative_features() -> None:
    f, y = _toy(200, 8, 4, seed=2)
    noise = torch.randn(200, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert logme(f, y) > logme(noise, y) + 0.1


def _leep_loops(p: list[list[float]], y: list[int]) -> float:
    n, zn, yn = len(p), len(p[0]), max(y) + 1
    joint = [[sum(p[i][z] for i in range(n) if y[i] == a) / n for z in range(zn)] for a in range(yn)]
    pz = [sum(joint[a][z] for a in range(yn)) for z in range(zn)]
    return sum(math.log(sum(joint[y[i]][z] / pz[z] * p[i][z] for z in range(zn))) for i in range(n)) / n


def test_leep_matches_its_formula_on_hand_made_inputs() -> None:
    p = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1], [0.05, 0.05, 0.9]]
    y = [0, 1, 1, 0, 1]
    assert leep(torch.tensor(p, dtype=torch.float64), torch.tensor(y)) == pytest.approx(_leep_loops(p, y), abs=1e-12)


def test_leep_is_zero_for_a_perfect_one_hot_source() -> None:
    y = torch.tensor([0, 1, 2, 1, 0])
    assert leep(torch.eye(3)[y], y) == pytest.approx(0.0, abs=1e-12)


def test_nce_matches_its_formula_on_hand_made_inputs() -> None:
    z = [0, 0, 1, 1, 1, 2, 2, 0]
    y = [0, 1, 1, 1, 0, 2, 2, 0]
    n = len(z)
    expected = 0.0
    for a in set(y):
        for b in set(z):
            pab = sum(1 for i in range(n) if y[i] == a and z[i] == b) / n
            pb = z.count(b) / n
            if pab:
                expected += pab * math.log(pab / pb)
    assert nce(torch.tensor(z), torch.tensor(y)) == pytest.approx(expected, abs=1e-12)
    assert nce(torch.tensor(y), torch.tensor(y)) == pytest.approx(0.0, abs=1e-12)  # H(Y|Y) = 0
    # a constant source label carries no information: NCE = -H(Y)
    hy = -sum(y.count(a) / n * math.log(y.count(a) / n) for a in set(y))
    assert nce(torch.zeros(n, dtype=torch.long), torch.tensor(y)) == pytest.approx(-hy, abs=1e-12)


def test_h_score_matches_numpy() -> None:
    f, y = _toy(50, 5, 3, seed=4)
    a = f.numpy()
    cov = np.cov(a, rowvar=False, bias=True)
    g = np.stack([a[y.numpy() == k].mean(0) for k in y.numpy()])
    cov_g = np.cov(g, rowvar=False, bias=True)
    assert h_score(f, y) == pytest.approx(float(np.trace(np.linalg.pinv(cov) @ cov_g)), rel=1e-8)


@pytest.mark.parametrize("score", [logme, h_score])
def test_feature_scores_refuse_a_single_class(score) -> None:
    with pytest.raises(TransferkitError, match="at least 2 classes"):
        score(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))


def test_leep_refuses_logits_instead_of_probabilities() -> None:
    with pytest.raises(TransferkitError, match="softmax"):
        leep(torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))


# ------------------------------------------------------------------ domain gap
def test_a_distance_near_zero_for_one_distribution_and_two_for_disjoint() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 5, generator=g), torch.randn(400, 5, generator=g)
    same = proxy_a_distance(a, b)
    far = proxy_a_distance(a, b + 10.0)
    assert same.distance < 0.3 and 0.4 < same.error < 0.6
    assert far.distance > 1.95 and far.error < 0.02


def test_median_bandwidth_and_unbiased_mmd_match_direct_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    pooled = torch.cat([x, y]).numpy()
    s2 = median_bandwidth(torch.cat([x, y]))
    assert s2 == pytest.approx(float(np.median(pdist(pooled, "sqeuclidean"))), rel=1e-10)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * s2))

    xa, ya = x.numpy(), y.numpy()
    m, n = len(xa), len(ya)
    kxx = sum(k(xa[i], xa[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(ya[i], ya[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(xa[i], ya[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2_unbiased(x, y, s2) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)


def test_mmd_small_for_one_distribution_large_for_shifted() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g)
    assert abs(mmd_median(a, b).mmd2) < 0.02
    assert mmd_median(a, b + 3.0).mmd2 > 0.3


def test_gap_refuses_mismatched_feature_sizes() -> None:
    with pytest.raises(TransferkitError, match="features per sample"):
        proxy_a_distance(torch.randn(10, 3), torch.randn(10, 4))


def test_tsne_embed_keeps_domains_and_labels() -> None:
    g = torch.Generator().manual_seed(3)
    emb = tsne_embed([torch.randn(30, 6, generator=g), torch.randn(50, 6, generator=g) + 4], [torch.arange(30) % 3, None],
                     ["s", "t"], ["a", "b", "c"], max_per_domain=40)
    assert emb.points.shape == (70, 2)
    assert (emb.domain == 0).sum() == 30 and (emb.domain == 1).sum() == 40
    assert set(emb.labels[emb.domain == 1].tolist()) == {-1}
    # the shifted domain is separated in the map: domain means far apart relative to spread
    d = np.linalg.norm(emb.points[emb.domain == 0].mean(0) - emb.points[emb.domain == 1].mean(0))
    assert d > emb.points.std()


def test_h_score_saturates_without_shrinkage_when_n_below_d_and_auto_is_ledoit_wolf() -> None:
    from sklearn.covariance import LedoitWolf

    f, y = _toy(30, 50, 3, seed=5)  # N < D
    noise = torch.randn(30, 50, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert h_score(f, y) == pytest.approx(2.0, abs=1e-6) and h_score(noise, y) == pytest.approx(2.0, abs=1e-6)
    a = f.numpy()
    g = np.stack([a[y.numpy() == k].mean(0) for k in y.numpy()])
    cov_g = np.cov(g, rowvar=False, bias=True)
    expected = float(np.trace(np.linalg.inv(LedoitWolf().fit(a).covariance_) @ cov_g))
    assert h_score(f, y, shrinkage="auto") == pytest.approx(expected, rel=1e-6)
    assert abs(h_score(f, y, shrinkage="auto") - 2.0) > 0.1
    with pytest.raises(TransferkitError, match="shrinkage"):
        h_score(f, y, shrinkage=2.0)
