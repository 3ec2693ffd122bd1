"""Importance weights: cross-fitted density ratios, clipping after normalising, effective sample size; gap's warning."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.adapt import shallow
from transferkit.adapt.shallow import ImportanceWeightedClassifier, domain_classifier_weights
from transferkit.analysis.domain_gap import ADistance
from transferkit.cli import main
from transferkit.ops import domain_classifier, domain_density_ratio, effective_sample_size


def _domains(n: int = 60, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.7


def test_cross_fitted_ratio_uses_a_classifier_that_never_saw_the_row():
    from sklearn.model_selection import StratifiedKFold

    xs, xt = _domains()
    ours = domain_density_ratio(xs, xt, folds=3, seed=4)
    x, d = np.concatenate([xs, xt]), np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    p = np.empty(len(xs))
    for train, held in StratifiedKFold(3, shuffle=True, random_state=4).split(x, d):
        rows = held[held < len(xs)]
        p[rows] = domain_classifier(x[train], d[train]).predict_proba(x[rows])[:, 1]
    p = p.clip(1e-6, 1 - 1e-6)
    assert np.allclose(ours, p / (1 - p))
    assert not np.allclose(ours, domain_density_ratio(xs, xt))  # in-sample fits differ


def test_weights_are_clipped_after_normalising(monkeypatch):
    ratios = np.random.default_rng(0).lognormal(-3, 2.5, 1000)  # a heavy tail, most ratios small
    monkeypatch.setattr(shallow, "domain_density_ratio", lambda *a, **k: ratios)
    w = domain_classifier_weights(np.zeros((5, 2)), np.zeros((5, 2)), clip=20.0)
    by_hand = np.clip(ratios / ratios.mean(), 0, 20.0)
    assert np.allclose(w, by_hand / by_hand.mean()) and np.isclose(w.mean(), 1.0)
    old = np.clip(ratios, 0, 20.0)  # the raw ratios clipped first (the old order)
    old /= old.mean()
    assert effective_sample_size(w) > effective_sample_size(old) and w.max() < old.max()


def test_effective_sample_size():
    assert effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert effective_sample_size(np.r_[1.0, np.zeros(9)]) == pytest.approx(1)


def test_importance_weighting_reports_its_effective_sample_size(capsys, tmp_path):
    xs, xt = _domains()
    clf = ImportanceWeightedClassifier().fit(xs, (xs[:, 0] > 0).astype(int), xt)
    assert clf.effective_sample_size_ == pytest.approx(effective_sample_size(clf.weights_)) and 1 <= clf.effective_sample_size_ <= 60
    rc = main(["adapt", "--method", "iw-domain", "--source", "digits", "--target", "digits:test", "--quiet",
               "--run-dir", str(tmp_path / "r")])
    assert rc == 0 and "importance weights: effective sample size" in capsys.readouterr().out


def test_gap_warns_when_the_domain_classifier_is_worse_than_chance(monkeypatch, capsys, tmp_path):
    from transferkit.commands import analysis as analysis_cmd

    monkeypatch.chdir(tmp_path)  # gap writes its plot in the current folder
    monkeypatch.setattr(analysis_cmd, "proxy_a_distance", lambda *a, **k: ADistance(0.0, 0.62, 50))
    with pytest.warns(UserWarning, match="held-out error is 62.0%, worse than chance"):
        assert main(["gap", "--source", "digits", "--target", "digits:test", "--max-samples", "50"]) == 0
