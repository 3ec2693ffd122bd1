"""Adaptation methods and shallow transformers: behaviour on a small shifted digits pair."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from transferkit.adapt import (
    ADAPT_METHODS,
    CORAL,
    TCA,
    AdaptSpec,
    PCATransform,
    SubspaceAlignment,
    adapt,
    create_method,
    create_shallow,
    domain_classifier_weights,
    kmm_weights,
)
from transferkit.data import TensorData, load_data
from transferkit.engine import StepInfo, TrainConfig
from transferkit.errors import TransferkitError
from transferkit.models import create_model


@pytest.fixture(scope="module")
def shifted_pair() -> tuple[TensorData, TensorData]:
    """sklearn digits as a 64-column table; target: the other half with contrast halved and a grey offset."""
    d = load_data("digits", "all")
    perm = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))
    s, t = d.subset(perm[:900]), d.subset(perm[900:])
    src = TensorData(s.x.flatten(1), s.y, s.classes, "digits")
    tgt = TensorData((t.x * 0.5 + 0.3).flatten(1), t.y, t.classes, "digits-shifted")
    return src, tgt


def _run(pair, method, seed, optimizer="adam", lr=1e-3, epochs=10):
    src, tgt = pair
    spec = AdaptSpec(method=method, select_by="im", source_epochs=10)
    cfg = TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer, seed=seed)
    return adapt(src, tgt.unlabeled(), spec, cfg, "mlp", target_test=tgt, verbose=False, callbacks=[]).summary


def test_deep_coral_beats_source_only(shifted_pair):
    s = _run(shifted_pair, "deep-coral", 0)
    assert s["target_test"]["acc"] > s["source_only"]["target_test_acc"] + 5
    assert s["family"] == "adapt" and s["selection"]["by"] == "im" and not s["selection"]["oracle"]


@pytest.mark.slow
def test_dann_beats_source_only_on_average(shifted_pair):
    runs = [_run(shifted_pair, "dann", seed, "sgd", 1e-2, 15) for seed in range(3)]
    adapted = np.mean([r["target_test"]["acc"] for r in runs])
    base = np.mean([r["source_only"]["target_test_acc"] for r in runs])
    assert adapted > base + 2


@pytest.mark.parametrize("name", sorted(set(ADAPT_METHODS) - {"source-only"}))
def test_every_method_returns_finite_losses_and_gradients(name):
    model = create_model("lenet", 10, (1, 16, 16))
    method = create_method(name, model)
    g = torch.Generator().manual_seed(0)
    xs, xt = torch.rand(8, 1, 16, 16, generator=g), torch.rand(8, 1, 16, 16, generator=g)
    ys = torch.randint(0, 10, (8,), generator=g)
    batch: tuple = ((xs, ys), xt)
    if getattr(method, "uses_target_labels", False):  # semi-supervised (mme, fixmatch): a labelled target part too
        batch = (*batch, (xt[:4], ys[:4]))
    losses = method.training_losses(batch, StepInfo(0, 5, 10))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trained = [p for p in method.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)


def test_adda_moves_only_target_encoder_and_discriminator():
    model = create_model("lenet", 10, (1, 16, 16))
    method = create_method("adda", model)
    head = model.head.weight.detach().clone()
    src = method.source_encoder[0].backbone.fc[0].weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    batch = ((torch.rand(8, 1, 16, 16, generator=g), torch.zeros(8, dtype=torch.long)), torch.rand(8, 1, 16, 16, generator=g))
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    before = model.backbone.fc[0].weight.detach().clone()
    sum(method.training_losses(batch, StepInfo(0, 0, 1)).values()).backward()
    opt.step()
    assert torch.equal(model.head.weight, head)
    assert torch.equal(method.source_encoder[0].backbone.fc[0].weight, src)
    assert not torch.equal(model.backbone.fc[0].weight, before)
    assert "source_encoder" not in dict(method.named_modules())


def test_dan_linear_estimate_and_hooked_layer():
    model = create_model("lenet", 10, (1, 16, 16))
    method = create_method("dan", model, layers=("backbone.fc", "logits"), estimate="linear")
    g = torch.Generator().manual_seed(0)
    batch = ((torch.rand(8, 1, 16, 16, generator=g), torch.zeros(8, dtype=torch.long)), torch.rand(8, 1, 16, 16, generator=g))
    assert torch.isfinite(method.training_losses(batch, StepInfo(0, 0, 1))["mmd"])


# ------------------------------------------------------------------ shallow
def test_shallow_coral_matches_target_covariance():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(300, 4)) @ np.diag([1, 2, 3, 4])
    xt = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4))
    t = CORAL(reg=1.0).fit(xs, xt)
    a = t.matrix_
    cs, ct = np.cov(xs, rowvar=False), np.cov(xt, rowvar=False)
    cs_reg, ct_reg = cs + np.trace(cs) / 4 * np.eye(4), ct + np.trace(ct) / 4 * np.eye(4)  # reg relative to the mean variance
    np.testing.assert_allclose(a.T @ cs_reg @ a, ct_reg, atol=1e-8)
    np.testing.assert_array_equal(t.transform(xt, "target"), xt)


@pytest.mark.parametrize("transformer", [SubspaceAlignment(3), TCA(3, max_samples=100), PCATransform(3)])
def test_shallow_transformers_give_shared_width(transformer):
    rng = np.random.default_rng(1)
    xs, xt = rng.normal(size=(80, 6)), rng.normal(size=(60, 6)) + 1
    zs, zt = transformer.fit_transform(xs, xt)
    assert zs.shape == (80, 3) and zt.shape == (60, 3)
    assert np.isfinite(zs).all() and np.isfinite(zt).all()


def test_importance_weights_favour_source_points_near_the_target():
    rng = np.random.default_rng(2)
    xs = rng.normal(0, 1, size=(200, 1))
    xt = rng.normal(1.5, 0.5, size=(200, 1))
    for w in (domain_classifier_weights(xs, xt), kmm_weights(xs, xt)):
        assert w.shape == (200,) and (w >= 0).all() and abs(w.mean() - 1) < 1e-6
        assert np.corrcoef(w, xs[:, 0])[0, 1] > 0.5


@pytest.mark.slow
def test_shallow_coral_and_sa_beat_no_adaptation_on_rescaled_digits(shifted_pair):
    src, tgt = shifted_pair
    xs, ys = src.x.numpy(), src.y.numpy()
    scale = np.random.default_rng(0).uniform(0.2, 3, size=64)  # each pixel rescaled: a covariance shift
    xt, yt = ((tgt.x.numpy() - 0.3) / 0.5) * scale, tgt.y.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = {m: (create_shallow(m).fit(xs, ys, xt).predict(xt) == yt).mean() for m in ("none", "coral", "sa", "iw-domain")}
    assert acc["coral"] > acc["none"] + 0.02
    assert acc["sa"] > acc["none"] + 0.04
    assert 0.1 < acc["iw-domain"] <= 1.0


def test_adamatch_pseudo_labels_by_hand():
    from transferkit.adapt.adamatch import aligned_pseudo_labels

    p_s = torch.tensor([[0.9, 0.1], [0.3, 0.7]])  # source mean (0.6, 0.4); mean max-confidence 0.8
    p_t = torch.tensor([[0.9, 0.1], [0.6, 0.4]])  # target mean (0.75, 0.25)
    pseudo, mask = aligned_pseudo_labels(p_s, p_t, relative_threshold=0.9)  # threshold 0.72
    # alignment multiplies by (0.6/0.75, 0.4/0.25) = (0.8, 1.6) then renormalises:
    # row 0 -> (0.72, 0.16)/0.88 = (0.818, 0.182): class 0, kept; row 1 -> (0.48, 0.64)/1.12: class 1 (flipped), 0.571 < 0.72
    assert pseudo.tolist() == [0, 1]
    assert mask.tolist() == [1.0, 0.0]


def test_adamatch_rejects_a_threshold_outside_0_1():
    with pytest.raises(TransferkitError, match=r"relative_threshold must be a number in \(0, 1\]"):
        create_method("adamatch", create_model("mlp", 3, (4,)), relative_threshold=1.5)
