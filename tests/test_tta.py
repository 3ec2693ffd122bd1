"""Test-time adaptation (AdaBN, TENT): reference checks, a shifted-data behaviour test and the CLI."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.adapt.tta import AdaBN, adapt_and_predict, create_tta, prediction_entropy
from transferkit.cli import main
from transferkit.engine import TrainConfig, seed_everything
from transferkit.errors import TransferkitError
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.models import create_model, load_model


def test_entropy_matches_the_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    p = torch.softmax(logits, 1)
    by_hand = -(p * p.log()).sum(1).mean()
    assert torch.allclose(prediction_entropy(logits), by_hand)
    assert torch.isclose(prediction_entropy(torch.zeros(1, 4)), torch.log(torch.tensor(4.0)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_tent_moves_only_the_norm_affine_parameters_by_one_adam_step_against_the_entropy_gradient():
    net, x = _net(), torch.randn(16, 5)
    reference = copy.deepcopy(net).train()
    loss = prediction_entropy(reference(x))
    g_w, g_b = torch.autograd.grad(loss, [reference[1].weight, reference[1].bias])
    before = copy.deepcopy(net.state_dict())
    create_tta("tent", net, tta_lr=0.01).predict(x)
    after = net.state_dict()
    for k in ("0.weight", "0.bias", "3.weight", "3.bias"):
        assert torch.equal(before[k], after[k]), k  # frozen
    # Adam's first step is -lr * g / (|g| + eps): a sign step where the gradient is not tiny
    for k, g in (("1.weight", g_w), ("1.bias", g_b)):
        step = after[k] - before[k]
        big = g.abs() > 1e-5
        assert torch.allclose(step[big], -0.01 * torch.sign(g[big]), atol=1e-4), k


def test_tent_episodic_resets_before_each_batch_and_continual_does_not():
    x = torch.randn(16, 5)
    episodic, continual = create_tta("tent", _net(), episodic=True), create_tta("tent", _net())
    first_e, first_c = episodic.predict(x), continual.predict(x)
    assert torch.allclose(first_e, first_c)
    assert torch.allclose(episodic.predict(x), first_e)  # same batch, same start: same prediction
    assert not torch.allclose(continual.predict(x), first_c)  # it kept adapting


def test_adabn_running_statistics_are_the_test_data_statistics():
    net, x = _net(), torch.randn(64, 5) * 3 + 2
    adapter = AdaBN(net)
    adapt_and_predict(adapter, x, batch_size=16)
    with torch.no_grad():
        h = net[0](x)
    assert torch.allclose(net[1].running_mean, h.mean(0), atol=1e-5)
    # the cumulative average of the per-batch unbiased variances (equal batch sizes)
    per_batch = torch.stack([h[i : i + 16].var(0) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(net[1].running_var, per_batch, atol=1e-4)


def test_models_without_anything_to_adapt_are_refused_in_one_line():
    plain = nn.Sequential(nn.Linear(5, 3))
    with pytest.raises(TransferkitError, match="no batch-norm layer"):
        create_tta("adabn", plain)
    with pytest.raises(TransferkitError, match="tent adapts the affine parameters of normalisation layers"):
        create_tta("tent", plain)
    with pytest.raises(TransferkitError, match="adabn has no option tta_lr"):
        create_tta("adabn", _net(), tta_lr=0.1)


@pytest.fixture(scope="module")
def shifted(digits16, digits16_test):
    """A conv4 trained on digits and the test split with its contrast cut (x -> 0.3 x + 0.6), shuffled."""
    seed_everything(0)
    model = create_model("conv4", 10, digits16.input_shape)
    finetune(model, digits16, None, FinetuneSpec(), TrainConfig(epochs=5), verbose=False)
    order = torch.randperm(len(digits16_test), generator=torch.Generator().manual_seed(1))
    return model, digits16_test.x[order] * 0.3 + 0.6, digits16_test.y[order]


@pytest.mark.parametrize(("name", "options"), [("adabn", {}), ("tent", {}), ("tent", {"episodic": True})])
def test_adapting_beats_not_adapting_on_a_contrast_shift(shifted, name, options):
    model, x, y = shifted
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        before = float((model(x).argmax(1) == y).float().mean())
    after = float((adapt_and_predict(create_tta(name, model, **options), x, 64).argmax(1) == y).float().mean())
    assert after > before + 0.3, (before, after)  # measured: 17.5% -> 96-97%


def test_predict_adapts_writes_predictions_and_saves_the_adapted_model(shifted, tmp_path, capsys):
    model, x, y = shifted
    model.save(tmp_path / "src.safetensors")
    np.savez(tmp_path / "shifted.npz", X=x.numpy(), y=y.numpy())
    rc = main(["predict", "--model-from", str(tmp_path / "src.safetensors"), "--data", str(tmp_path / "shifted.npz"),
               "--adapt", "tent", "--tta-lr", "0.001", "--output", str(tmp_path / "p.csv"),
               "--save-adapted", str(tmp_path / "adapted.safetensors")])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    acc = np.mean([int(r["prediction"]) == int(t) for r, t in zip(rows, y.tolist(), strict=True)])
    assert len(rows) == len(y) and acc > 0.8
    adapted = load_model(tmp_path / "adapted.safetensors").eval()  # usable alone: its statistics are the test stream's
    with torch.no_grad():
        assert float((adapted(x).argmax(1) == y).float().mean()) > 0.8


def test_predict_refuses_what_does_not_apply(tmp_path, capsys):
    mlp = create_model("mlp", 10, (1, 16, 16))
    mlp.save(tmp_path / "mlp.safetensors")
    cases = [
        (["--adapt", "adabn"], "no batch-norm layer"),
        (["--adapt", "adabn", "--tta-lr", "0.1"], "--tta-lr is an option of tent"),
        (["--save-adapted", str(tmp_path / "a.safetensors")], "--save-adapted saves the model adapted by --adapt"),
    ]
    for extra, message in cases:
        rc = main(["predict", "--model-from", str(tmp_path / "mlp.safetensors"), "--data", "digits:test",
                   "--image-size", "16", "--output", str(tmp_path / "p.csv"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith("error:") and message in err[-1], err
        assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("name", ["adabn", "tent"])
def test_a_last_batch_of_one_joins_the_batch_before_it(name):
    """65 inputs in batches of 64 with a feature batch norm (a bottleneck): one input has no batch statistics."""
    torch.manual_seed(0)
    model = create_model("resnet8", 3, (3, 8, 8), bottleneck_dim=16)
    x = torch.rand(65, 3, 8, 8)
    logits = adapt_and_predict(create_tta(name, copy.deepcopy(model)), x, 64)
    assert logits.shape == (65, 3)
    whole = create_tta(name, copy.deepcopy(model)).predict(x)  # the same single batch of 65
    assert torch.allclose(logits, whole, atol=1e-5)
    with pytest.raises(TransferkitError, match="need at least 2 inputs for this model's feature batch norm; got a batch of 1"):
        create_tta(name, copy.deepcopy(model)).predict(x[:1])
