"""Reference tests: each adaptation loss and validator against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.adapt.losses import CORALLoss, MCCLoss, MultiKernelMMD, grad_reverse, mmd2
from transferkit.adapt.schedules import WeightSchedule
from transferkit.adapt.validators import (
    dev_risk,
    information_maximization,
    neg_entropy,
    soft_neighborhood_density,
)
from transferkit.errors import TransferkitError


def _k(a, b, sigmas2):
    return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s)) for s in sigmas2)


def _mmd_loops(xs, xt, sigmas2, unbiased):
    n, m = len(xs), len(xt)
    ss = sum(_k(xs[i], xs[j], sigmas2) for i in range(n) for j in range(n) if not (unbiased and i == j))
    tt = sum(_k(xt[i], xt[j], sigmas2) for i in range(m) for j in range(m) if not (unbiased and i == j))
    st = sum(_k(xs[i], xt[j], sigmas2) for i in range(n) for j in range(m))
    dn, dm = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return ss / dn + tt / dm - 2 * st / (n * m)


def test_mmd_biased_unbiased_multikernel_match_double_sums():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(7, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.7
    sig = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    for unbiased in (False, True):
        got = float(mmd2(xs, xt, sig, "unbiased" if unbiased else "biased"))
        assert got == pytest.approx(_mmd_loops(xs, xt, sig.tolist(), unbiased), rel=1e-9)


def test_mmd_linear_time_matches_pair_formula():
    g = torch.Generator().manual_seed(1)
    xs, xt = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    sig = [1.0, 2.0]
    want = np.mean([
        _k(xs[2 * i], xs[2 * i + 1], sig) + _k(xt[2 * i], xt[2 * i + 1], sig)
        - _k(xs[2 * i], xt[2 * i + 1], sig) - _k(xs[2 * i + 1], xt[2 * i], sig)
        for i in range(3)
    ])
    assert float(mmd2(xs, xt, torch.tensor(sig, dtype=torch.float64), "linear")) == pytest.approx(want, rel=1e-9)


def test_mk_mmd_is_small_for_same_distribution_and_large_for_shift():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
    loss = MultiKernelMMD()
    assert abs(float(loss(a, b))) < 0.05
    assert float(loss(a, b + 2.0)) > 0.5
    with pytest.raises(TransferkitError, match="MMD estimate"):
        MultiKernelMMD(estimate="quadratic")


def test_coral_matches_formula():
    g = torch.Generator().manual_seed(3)
    xs, xt = torch.randn(9, 4, generator=g, dtype=torch.float64), 2 * torch.randn(11, 4, generator=g, dtype=torch.float64)
    cs, ct = np.cov(xs.numpy(), rowvar=False), np.cov(xt.numpy(), rowvar=False)
    want = ((cs - ct) ** 2).sum() / (4 * 4 * 4)
    assert float(CORALLoss()(xs, xt)) == pytest.approx(want, rel=1e-9)


def test_gradient_reversal_sign_and_scale():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    (grad_reverse(x, 0.3) * w).sum().backward()
    assert torch.equal(grad_reverse(x, 0.3), x)
    torch.testing.assert_close(x.grad, -0.3 * w)


def test_dann_ramp():
    s = WeightSchedule("dann", 1.0)
    assert s(0.0) == 0.0
    assert s(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert s(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert WeightSchedule("constant", 0.3)(0.7) == 0.3
    with pytest.raises(TransferkitError, match="unknown weight schedule"):
        WeightSchedule("cosine")


def test_mcc_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    t = 2.5
    y = torch.softmax(logits / t, 1).numpy()
    h = -(y * np.log(y + 1e-8)).sum(1)
    w = 1 + np.exp(-h)
    w = len(y) * w / w.sum()
    c = (y * w[:, None]).T @ y
    c = c / c.sum(0, keepdims=True)
    want = (c.sum() - np.trace(c)) / 3
    assert float(MCCLoss(t)(logits)) == pytest.approx(want, rel=1e-6)


P = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)


def _h(p):
    return -sum(v * math.log(v) for v in p)


def test_im_and_entropy_by_hand():
    rows = P.tolist()
    mean = [sum(r[c] for r in rows) / 3 for c in range(3)]
    want_im = _h(mean) - sum(_h(r) for r in rows) / 3
    assert information_maximization(P) == pytest.approx(want_im, rel=1e-6)
    assert neg_entropy(P) == pytest.approx(-sum(_h(r) for r in rows) / 3, rel=1e-6)


def test_snd_by_hand():
    rows = [np.array(r) / np.linalg.norm(r) for r in P.tolist()]
    tau = 0.05
    total = 0.0
    for i in range(3):
        sims = np.array([rows[i] @ rows[j] for j in range(3) if j != i]) / tau
        q = np.exp(sims - sims.max())
        q /= q.sum()
        total += -(q * np.log(q)).sum()
    assert soft_neighborhood_density(P, tau) == pytest.approx(total / 3, rel=1e-6)


def test_dev_risk_by_hand():
    losses = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)
    w = torch.tensor([1.0, 0.5, 2.0, 0.5], dtype=torch.float64)
    lw = (losses * w).numpy()
    wn = w.numpy()
    eta = -np.cov(lw, wn)[0, 1] / np.var(wn, ddof=1)
    want = lw.mean() + eta * wn.mean() - eta
    assert dev_risk(losses, w) == pytest.approx(want, rel=1e-9)
    # constant weights: no control variate, plain mean
    assert dev_risk(losses, torch.ones(4, dtype=torch.float64)) == pytest.approx(float(losses.mean()))


def test_every_validator_scores_a_model_and_unknown_name_is_refused(digits16):
    from transferkit.adapt.validators import VALIDATORS, score
    from transferkit.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet", 10, (1, 16, 16))
    src = digits16.subset(torch.arange(60))
    for name in VALIDATORS:
        assert math.isfinite(score(name, model, digits16.x[60:160], src))
    with pytest.raises(TransferkitError, match="unknown validator 'acc'"):
        score("acc", model, digits16.x[:10], src)


def test_weight_schedule_from_spec():
    from transferkit.adapt import AdaptSpec

    assert AdaptSpec(method="dann").transfer_schedule() is None
    s = AdaptSpec(method="dann", weight=0.5).transfer_schedule()
    assert s.kind == "dann" and s.weight == 0.5
    assert AdaptSpec(method="dan", weight=2.0).transfer_schedule().kind == "constant"
