"""Shallow CORAL, SA and TCA against independent computations (skada, the papers' formulas),
the papers' default settings, and CORAL on features with small variance."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml
from skada import CORALAdapter, SubspaceAlignmentAdapter

from transferkit.adapt import CORAL, TCA, SubspaceAlignment, create_shallow
from transferkit.cli import main
from transferkit.errors import TransferkitError


def _pair(ns: int = 60, nt: int = 60, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(ns, d)) @ np.diag(np.linspace(0.5, 3, d))
    xt = rng.normal(size=(nt, d)) @ rng.normal(size=(d, d)) + 1.0
    return xs, xt


def _domains(xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([xs, xt]), np.r_[np.ones(len(xs)), -np.ones(len(xt))].astype(int)


# ------------------------------------------------------------------ CORAL
@pytest.mark.parametrize("reg", [0.1, 1.0])
def test_coral_equals_skada_shrunk_covariance_coral(reg):
    # skada whitens and re-colours the centred source with (1 - a) C + a tr(C)/d I; with
    # a = reg / (1 + reg) that is our C + reg tr(C)/d I up to a factor that cancels
    xs, xt = _pair()
    x, sd = _domains(xs, xt)
    ref = CORALAdapter(reg=reg / (1 + reg)).fit(x, sample_domain=sd)
    want = ref.transform(xs, sample_domain=np.ones(len(xs), int), allow_source=True)
    ours = CORAL(reg).fit(xs, xt)
    np.testing.assert_allclose(ours.transform(xs - xs.mean(0), "source"), want, atol=1e-10)


def test_coral_regulariser_follows_the_scale_of_the_features():
    # features 100x smaller (binary or unit-norm features have variances ~0.01-0.1) must be
    # re-coloured the same way: an absolute regulariser made CORAL the identity there
    xs, xt = _pair(d=6)
    big = CORAL().fit(xs, xt).transform(xs, "source")
    small = CORAL().fit(xs / 100, xt / 100).transform(xs / 100, "source")
    np.testing.assert_allclose(small * 100, big, rtol=1e-8, atol=1e-8)


def _unit_norm_embeddings(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sentence-embedding-like rows (unit L2 norm, variances ~0.05); the target's dimensions rescaled."""
    rng = np.random.default_rng(seed)
    d, classes, n = 16, 4, 300
    means = rng.normal(size=(classes, d))
    y = rng.integers(0, classes, 2 * n)
    z = means[y] + rng.normal(size=(2 * n, d))
    z[n:] *= np.exp(rng.uniform(-2, 2, d))

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return unit(z[:n]), y[:n], unit(z[n:]), y[n:]


def test_coral_helps_on_unit_norm_embeddings():
    gains = []
    for seed in range(3):
        xs, ys, xt, yt = _unit_norm_embeddings(seed)
        acc = {m: (create_shallow(m).fit(xs, ys, xt).predict(xt) == yt).mean() for m in ("none", "coral")}
        gains.append(acc["coral"] - acc["none"])
    assert np.mean(gains) > 0.04  # about +6 points; with reg = 1 absolute it was +0.5


def test_coral_changes_a_binary_bag_of_words_classifier():
    rng = np.random.default_rng(0)
    d, n = 40, 300
    rates = rng.uniform(0.02, 0.3, size=(3, d))
    y = rng.integers(0, 3, 2 * n)
    x = (rng.random((2 * n, d)) < rates[y]).astype(float)
    noisy = rng.random(d) < 0.5  # half the words also appear at random in the target
    xt = x[n:].copy()
    xt[:, noisy] = np.maximum(xt[:, noisy], rng.random((n, int(noisy.sum()))) < 0.3)
    xs, ys = x[:n], y[:n]
    coral = create_shallow("coral").fit(xs, ys, xt).transformer_.matrix_
    off_scaling = np.linalg.norm(coral - np.trace(coral) / d * np.eye(d)) / np.linalg.norm(coral)
    assert off_scaling > 0.1  # 0.15; an absolute reg = 1 left the map within 0.04 of a multiple of I


def test_coral_refuses_a_negative_regulariser():
    xs, xt = _pair()
    with pytest.raises(TransferkitError, match="CORAL reg must be a number >= 0"):
        CORAL(-1.0).fit(xs, xt)


# ------------------------------------------------------------------ SA
def test_subspace_alignment_equals_skada():
    xs, xt = _pair(80, 70, 6)
    x, sd = _domains(xs, xt)
    ref = SubspaceAlignmentAdapter(n_components=3).fit(x, sample_domain=sd)
    rs = ref.transform(xs, sample_domain=np.ones(len(xs), int), allow_source=True)
    rt = ref.transform(xt, sample_domain=-np.ones(len(xt), int))
    ours = SubspaceAlignment(3).fit(xs, xt)
    zs, zt = ours.transform(xs, "source"), ours.transform(xt, "target")
    # PCA axes are defined up to sign: compare what a classifier sees, the inner products
    np.testing.assert_allclose(zs @ zt.T, rs @ rt.T, atol=1e-9)
    np.testing.assert_allclose(zt @ zt.T, rt @ rt.T, atol=1e-9)


# ------------------------------------------------------------------ TCA
def _tca_by_the_formula(xs: np.ndarray, xt: np.ndarray, k: int, mu: float, kernel, unit: bool) -> np.ndarray:
    """The source embedding K_s W, W = top-k eigenvectors of (K L K + mu I)^{-1} K H K (Pan et al. 2011, eq. 6),
    with a general eigen-solver on the n x n matrix; each eigenvector of unit norm, sign fixed later."""
    if unit:
        xs = xs / np.linalg.norm(xs, axis=1, keepdims=True)
        xt = xt / np.linalg.norm(xt, axis=1, keepdims=True)
    x = np.concatenate([xs, xt])
    n, ns, nt = len(x), len(xs), len(xt)
    kmat = kernel(x, x)
    e = np.r_[np.full(ns, 1 / ns), np.full(nt, -1 / nt)]
    lmat, h = np.outer(e, e), np.eye(n) - np.ones((n, n)) / n
    vals, vecs = np.linalg.eig(np.linalg.solve(kmat @ lmat @ kmat + mu * np.eye(n), kmat @ h @ kmat))
    top = np.argsort(-vals.real)[:k]
    w = np.real(vecs[:, top])
    return kmat[:ns] @ (w / np.linalg.norm(w, axis=0))


def _same_up_to_sign(a: np.ndarray, b: np.ndarray) -> None:
    sign = np.sign((a * b).sum(0))
    np.testing.assert_allclose(a * sign, b, rtol=1e-7, atol=1e-8 * np.abs(b).max())


@pytest.mark.parametrize("unit", [True, False])
def test_linear_tca_equals_the_n_by_n_formula(unit):
    xs, xt = _pair(40, 30, 6)
    ours = TCA(4, mu=0.5, kernel="linear", l2_normalize=unit).fit(xs, xt).transform(xs, "source")
    _same_up_to_sign(ours, _tca_by_the_formula(xs, xt, 4, 0.5, lambda a, b: a @ b.T, unit))


def test_rbf_tca_equals_the_n_by_n_formula():
    xs, xt = _pair(40, 30, 6)
    gamma = 0.2

    def rbf(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-gamma * ((a[:, None] - b[None]) ** 2).sum(-1))

    ours = TCA(5, mu=1.0, kernel="rbf", gamma=gamma, l2_normalize=False).fit(xs, xt).transform(xs, "source")
    _same_up_to_sign(ours, _tca_by_the_formula(xs, xt, 5, 1.0, rbf, False))


def test_tca_defaults_are_the_papers_and_use_every_row():
    t = TCA()
    assert (t.kernel, t.n_components, t.mu, t.l2_normalize, t.max_samples) == ("linear", 100, 1.0, True, None)
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(1500, 8)), rng.normal(size=(1200, 8)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no subsampling, announced or not
        t.fit(xs, xt)
    assert t.n_fit_ == 2700
    assert t.transform(xt).shape == (1200, 8)  # k = 100 capped at the rank of the linear kernel


def test_tca_subsampling_is_an_option_and_is_announced():
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(200, 4)), rng.normal(size=(150, 4))
    with pytest.warns(UserWarning, match="TCA fits on 50 random source rows of 200"):
        t = TCA(3, kernel="rbf", max_samples=50).fit(xs, xt)
    assert t.n_fit_ == 100


def test_tca_bad_options_are_one_clear_error():
    xs, xt = _pair()
    with pytest.raises(TransferkitError, match="TCA kernel must be 'linear' or 'rbf'"):
        TCA(kernel="poly").fit(xs, xt)
    with pytest.raises(TransferkitError, match="TCA mu must be a number > 0"):
        TCA(mu=0.0).fit(xs, xt)
    with pytest.raises(TransferkitError, match="unknown shallow option 'tca_lambda'"):
        create_shallow("tca", tca_lambda=1.0)
    with pytest.raises(TransferkitError, match="tca_kernel"):
        create_shallow("tca", tca_kernel="poly")


def test_create_shallow_passes_the_options_on():
    clf = create_shallow("tca", 7, tca_kernel="rbf", tca_mu=2.0, tca_l2_normalize=False, tca_max_samples=30)
    t = clf.transformer
    assert (t.n_components, t.kernel, t.mu, t.l2_normalize, t.max_samples) == (7, "rbf", 2.0, False, 30)
    assert create_shallow("coral", coral_reg=0.25).transformer.reg == 0.25
    assert create_shallow("sa").transformer.n_components == 20 and create_shallow("tca").transformer.n_components == 100


def test_cli_and_yaml_take_the_shallow_options(capsys, tmp_path):
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(120, 6)), rng.normal(size=(90, 6)) * 2 + 1
    ys, yt = (xs[:, 0] > 0).astype(int), (xt[:, 0] > 1).astype(int)
    np.savez(tmp_path / "s.npz", X=xs, y=ys)
    np.savez(tmp_path / "t.npz", X=xt)
    np.savez(tmp_path / "tt.npz", X=xt, y=yt)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"tca-kernel": "rbf", "tca_mu": 0.5}))
    with pytest.warns(UserWarning, match="TCA fits on 40 random source rows of 120"):
        rc = main(["adapt", "--method", "tca", "--config", str(tmp_path / "c.yaml"), "--tca-max-samples", "40",
                   "--n-components", "3", "--source", str(tmp_path / "s.npz"), "--target", str(tmp_path / "t.npz"),
                   "--target-test", str(tmp_path / "tt.npz"), "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < s["target_test"]["acc"] <= 100
    rc = main(["adapt", "--method", "coral", "--coral-reg", "0", "--source", str(tmp_path / "s.npz"), "--target",
               str(tmp_path / "t.npz"), "--run-dir", str(tmp_path / "r2"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "coral-reg" in err and "Traceback" not in err
