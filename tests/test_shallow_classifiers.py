"""Shallow adaptation methods fit a classifier the user chooses (logreg, 1-NN, linear SVM)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC

from transferkit.adapt import CORAL, create_shallow
from transferkit.adapt.shallow import make_classifier
from transferkit.cli import main
from transferkit.errors import TransferkitError


def _domains():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(120, 5))
    ys = (xs[:, 0] > 0).astype(int)
    xt = 2.0 * rng.normal(size=(80, 5)) + 1.0
    return xs, ys, xt


def test_coral_with_1nn_is_1nn_on_recoloured_source():
    xs, ys, xt = _domains()
    ours = create_shallow("coral", estimator="1nn").fit(xs, ys, xt).predict(xt)
    by_hand = KNeighborsClassifier(n_neighbors=1).fit(CORAL().fit(xs, xt).transform(xs, "source"), ys).predict(xt)
    assert np.array_equal(ours, by_hand)


def test_classifier_names():
    assert isinstance(make_classifier("linear-svm"), LinearSVC)
    with pytest.raises(TransferkitError, match="unknown shallow classifier 'svm'"):
        make_classifier("svm")


def test_importance_weighting_refuses_a_classifier_without_sample_weight(capsys, tmp_path):
    rc = main(["adapt", "--method", "iw-domain", "--classifier", "1nn", "--source", "digits", "--target", "digits:test",
               "--run-dir", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error:") and "does not accept sample_weight" in err[-1]
    assert not (tmp_path / "r").exists()
