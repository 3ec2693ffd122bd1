"""The one shared implementation of each piece of maths and plumbing, against independent computations."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist as scipy_cdist
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from transferkit.adapt import ImportanceWeightedClassifier, create_shallow
from transferkit.analysis import mmd2_unbiased
from transferkit.data import load_image_folder, load_images
from transferkit.engine import batched_forward, confusion_counts
from transferkit.errors import TransferkitError
from transferkit.io import write_predictions
from transferkit.ops import domain_density_ratio, mmd2, sq_distances


# ------------------------------------------------------------------ distances
def test_sq_distances_match_cdist_on_tensors_and_arrays():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sq_distances(a, b), torch.cdist(a, b).pow(2), rtol=1e-10, atol=1e-12)
    an, bn = a.numpy(), b.numpy()
    got = sq_distances(an, bn)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, scipy_cdist(an, bn, "sqeuclidean"), rtol=1e-10, atol=1e-12)
    assert (sq_distances(a, a).diagonal() >= 0).all()


def test_sq_distances_gradient_matches_the_difference_form():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((sq_distances(a, b) * w).sum(), a)
    (want,) = torch.autograd.grad((((a[:, None] - b[None]) ** 2).sum(-1) * w).sum(), a)
    torch.testing.assert_close(ga, want)


# ------------------------------------------------------------------------ MMD
def _mmd_direct(x: np.ndarray, y: np.ndarray, sigma2: float, unbiased: bool) -> float:
    gamma = 1 / (2 * sigma2)
    kxx, kyy, kxy = rbf_kernel(x, x, gamma=gamma), rbf_kernel(y, y, gamma=gamma), rbf_kernel(x, y, gamma=gamma)
    m, n = len(x), len(y)
    if unbiased:
        return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd2_matches_sklearn_rbf_kernels(unbiased):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 4)), rng.normal(0.5, 1.0, size=(15, 4))
    got = float(mmd2(torch.from_numpy(x), torch.from_numpy(y), torch.tensor([1.7], dtype=torch.float64),
                     "unbiased" if unbiased else "biased"))
    assert got == pytest.approx(_mmd_direct(x, y, 1.7, unbiased), rel=1e-10, abs=1e-12)


def test_analysis_mmd_is_the_shared_estimate():
    rng = np.random.default_rng(4)
    x, y = torch.from_numpy(rng.normal(size=(12, 3))), torch.from_numpy(rng.normal(size=(9, 3)))
    assert mmd2_unbiased(x, y, 0.8) == float(mmd2(x, y, torch.tensor([0.8], dtype=torch.float64), "unbiased"))


# ---------------------------------------------------------- domain classifier
def test_domain_density_ratio_recovers_a_gaussian_shift():
    # p_s = N(0, 1), p_t = N(1, 1): p_t(x) / p_s(x) = exp(x - 1/2), and the log-odds are linear,
    # so the logistic domain classifier is well specified
    rng = np.random.default_rng(5)
    xs, xt = rng.normal(0, 1, size=(4000, 1)), rng.normal(1, 1, size=(4000, 1))
    w = domain_density_ratio(xs, xt)
    slope, intercept = np.polyfit(xs[:, 0], np.log(w), 1)
    assert slope == pytest.approx(1.0, abs=0.1) and intercept == pytest.approx(-0.5, abs=0.1)
    xt_half = xt[:2000]  # fewer target samples: the ratio is rescaled by n_s / n_t
    slope2, intercept2 = np.polyfit(xs[:, 0], np.log(domain_density_ratio(xs, xt_half)), 1)
    assert slope2 == pytest.approx(1.0, abs=0.1) and intercept2 == pytest.approx(-0.5, abs=0.1)


# ---------------------------------------------------------------- evaluation
class _Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.drop = nn.Dropout(0.9)  # would change the output in training mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.drop(x))


@pytest.mark.parametrize("training", [True, False])
def test_batched_forward_is_one_eval_pass_and_restores_the_mode(training):
    torch.manual_seed(0)
    model = _Two().train(training)
    x = torch.randn(10, 3)
    with torch.no_grad():
        want = model.lin(x)
    out = batched_forward(model, x, batch_size=3)
    torch.testing.assert_close(out, want)
    assert not out.requires_grad and model.training is training
    logits, none, pieces = batched_forward(model, x, 4, lambda xb: (model(xb), None, [xb, 2 * xb]))
    torch.testing.assert_close(logits, want)
    assert none is None and torch.equal(pieces[0], x) and torch.equal(pieces[1], 2 * x)
    with pytest.raises(RuntimeError):
        batched_forward(model, x, 4, lambda xb: xb @ torch.zeros(5, 5))
    assert model.training is training


def test_confusion_counts_match_sklearn():
    rng = np.random.default_rng(6)
    y, pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    got = confusion_counts(torch.from_numpy(y), torch.from_numpy(pred), 5)
    np.testing.assert_array_equal(got.numpy(), sk_confusion_matrix(y, pred, labels=range(5)))


# ------------------------------------------------------------------- file I/O
def test_write_predictions_writes_argmax_and_probabilities(tmp_path):
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
    path = write_predictions(tmp_path / "p.csv", ["a.png", "b.png"], probs, ["x", "y", "z"], name_column="file")
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    assert rows == [["file", "prediction", "p_x", "p_y", "p_z"],
                    ["a.png", "y", "0.200000", "0.500000", "0.300000"],
                    ["b.png", "x", "0.700000", "0.100000", "0.200000"]]


def test_load_images_converts_like_pil_and_like_the_class_folder_loader(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "c" / "sub").mkdir(parents=True)
    rgb = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c" / "b.png")
    Image.fromarray(rgb[:4, :4, 0]).save(tmp_path / "c" / "sub" / "a.png")  # grey, 4x4
    (tmp_path / "c" / "notes.txt").write_text("not an image")
    x, names, converted = load_images(tmp_path / "c", 1, (4, 4))
    assert names == ["b.png", "sub/a.png"] and converted == ["b.png"]
    want = np.asarray(Image.fromarray(rgb).convert("L").resize((4, 4), Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_array_equal(x[0, 0].numpy(), want)
    np.testing.assert_array_equal(x[1, 0].numpy(), rgb[:4, :4, 0] / np.float32(255))
    (tmp_path / "c" / "notes.txt").unlink()
    folder = load_image_folder(tmp_path, image_size=4, channels=1)
    torch.testing.assert_close(folder.x, x)
    with pytest.raises(TransferkitError, match="query folder .* does not exist"):
        load_images(tmp_path / "missing", 1, (4, 4), what="query")


# ------------------------------------------------------ importance weighting
@pytest.mark.parametrize("weighting", ["domain", "kmm"])
def test_importance_weighting_refuses_a_classifier_without_sample_weight(weighting):
    rng = np.random.default_rng(8)
    xs, ys, xt = rng.normal(size=(30, 2)), rng.integers(0, 2, 30), rng.normal(size=(20, 2))
    with pytest.raises(TransferkitError, match="KNeighborsClassifier.fit does not accept sample_weight.*LogisticRegression"):
        ImportanceWeightedClassifier(KNeighborsClassifier(1), weighting).fit(xs, ys, xt)
    with pytest.raises(TransferkitError, match="does not accept sample_weight"):
        create_shallow(f"iw-{weighting}", estimator=KNeighborsClassifier(1)).fit(xs, ys, xt)
