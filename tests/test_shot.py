"""SHOT (source-free adaptation): reference checks, a behaviour test on shifted digits, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from transferkit.adapt.shot import SHOT, ShotConfig, adapt_source_free, cluster_pseudo_labels
from transferkit.cli import main
from transferkit.data import load_data
from transferkit.engine import StepInfo, TrainConfig, evaluate, seed_everything
from transferkit.errors import TransferkitError
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.models import create_model


def test_clustering_follows_the_features_not_the_noisy_predictions():
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(40) % 2
    feats = torch.stack([truth.float(), 1 - truth.float()], 1) * 5 + 0.3 * torch.randn(40, 2, generator=g)
    probs = F.one_hot(truth, 2).float() * 0.6 + 0.2
    probs[:8] = probs[:8].flip(1)  # a fifth of the predictions are wrong
    assert not torch.equal(probs.argmax(1), truth)
    assert torch.equal(cluster_pseudo_labels(feats, probs), truth)


def test_losses_match_the_formula_and_the_head_stays_frozen():
    torch.manual_seed(0)
    model = create_model("mlp", 3, (6,), hidden=(8,))
    x = torch.randn(32, 6)
    method = SHOT(model, x, beta=0.5, im_weight=1.0)
    method.on_epoch_start(0)
    idx = torch.arange(16)
    losses = method.training_losses(idx, StepInfo(0, 0, 1))
    p = torch.softmax(model(x[idx]), 1)
    mean_h = -(p * p.log()).sum(1).mean()
    p_bar = p.mean(0)
    assert torch.allclose(losses["im"], mean_h + (p_bar * torch.log(p_bar + 1e-5)).sum(), atol=1e-6)
    assert torch.allclose(losses["pseudo"], 0.5 * F.cross_entropy(model(x[idx]), method.pseudo[idx]), atol=1e-6)
    assert not any(p.requires_grad for p in model.head.parameters())


@pytest.fixture(scope="module")
def source_model():
    seed_everything(0)
    src = load_data("mnist5k", "train", image_size=16)
    model = create_model("lenet", 10, src.input_shape, bottleneck_dim=256)
    finetune(model, src, None, FinetuneSpec(), TrainConfig(epochs=3), verbose=False)
    return model


def test_shot_beats_the_source_model_without_source_data_or_target_labels(source_model):
    target, test = load_data("digits", "train", image_size=16), load_data("digits", "test", image_size=16)
    before = evaluate(source_model, test)["acc"]
    res = adapt_source_free(source_model, target, ShotConfig(), TrainConfig(epochs=3), test, verbose=False)
    assert res.summary["metrics"]["target_test_acc"] > before + 15, (before, res.summary["metrics"])  # measured 31 -> 68
    assert res.summary["selection"]["by"] == "im" and res.summary["source_free"] is True
    assert evaluate(source_model, test)["acc"] == before  # the given model is not changed


def test_the_validator_must_need_no_source_data(source_model):
    with pytest.raises(TransferkitError, match="select_by"):
        adapt_source_free(source_model, load_data("digits", image_size=16), ShotConfig(select_by="dev"), verbose=False)


def test_cli_adapts_a_run_folder_and_refuses_what_does_not_apply(source_model, tmp_path, capsys):
    source_model.save(tmp_path / "src.safetensors")
    common = ["--target", "digits", "--image-size", "16", "--epochs", "1", "--quiet"]
    rc = main(["adapt", "--method", "shot", "--init", str(tmp_path / "src.safetensors"), "--target-test", "digits:test",
               *common, "--run-dir", str(tmp_path / "shot")])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "shot" / "summary.json").read_text())
    assert s["schema"] == 1 and s["method"] == "shot" and s["headline"] == "target_test_acc"
    assert (tmp_path / "shot" / "model.safetensors").is_file()
    cases = [
        (["--method", "shot", "--source", "mnist5k", "--init", str(tmp_path / "src.safetensors")], "drop --source"),
        (["--method", "shot"], "give it as --init RUN"),
        (["--method", "shot", "--init", str(tmp_path / "src.safetensors"), "--select-by", "dev"], "--select-by im, entropy, snd"),
        (["--method", "dann"], "give it with --source"),
        (["--method", "dann", "--source", "mnist5k", "--beta", "0.1"], "--beta is an option of shot"),
    ]
    for args, message in cases:
        rc = main(["adapt", *args, *common, "--run-dir", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err[-1].startswith("error:") and message in err[-1], (args, err)
        assert not (tmp_path / "bad").exists()
