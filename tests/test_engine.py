"""The training loop: resume equality, NaN stop, run folders, schedules, early stopping."""

from __future__ import annotations

import json

import pytest
import torch

from transferkit.data import TensorData, index_batches
from transferkit.engine import RunDir, Supervised, TrainConfig, Trainer, seed_everything
from transferkit.engine.loop import lr_lambda
from transferkit.engine.state import flatten, unflatten
from transferkit.errors import NonFiniteLossError, TransferkitError
from transferkit.models import create_model


def make_trainer(data: TensorData, run: RunDir | None, epochs: int = 4, **cfg) -> Trainer:
    seed_everything(0)
    model = create_model("mlp", data.num_classes, data.input_shape, hidden=(32,), dropout=0.2)
    method = Supervised(model)

    def batches(epoch, gen):
        for idx in index_batches(len(data), 32, True, gen):
            yield data.x[idx], data.y[idx]

    return Trainer(method, TrainConfig(epochs=epochs, lr=1e-2, **cfg), batches, -(-len(data) // 32),
                   validate=None, run=run, callbacks=[], verbose=False)


@pytest.fixture
def small(digits16) -> TensorData:
    return digits16.subset(torch.arange(256))


def test_resume_matches_uninterrupted_run(tmp_path, small):
    full = make_trainer(small, RunDir(tmp_path / "a")).fit()
    # a run that "dies" after 2 epochs, then resumes to 4
    make_trainer(small, RunDir(tmp_path / "b"), epochs=2).fit()
    # the killed run may have logged a line past its checkpoint; resume must drop it
    with open(tmp_path / "b" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 2, "train": {"loss": 99.0}}) + "\n")
    tr = make_trainer(small, RunDir(tmp_path / "b", resume=True))
    tr.resume()
    resumed = tr.fit()
    assert resumed.last["train"]["loss"] == pytest.approx(full.last["train"]["loss"], abs=0, rel=1e-6)
    assert [r["epoch"] for r in RunDir(tmp_path / "b", resume=True).metrics()] == [0, 1, 2, 3]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, small):
    tr = make_trainer(small, RunDir(tmp_path / "r"), epochs=3)
    tr.fit()
    before = (tmp_path / "r" / "checkpoints" / "last" / "model.safetensors").read_bytes()
    poisoned = TensorData(small.x.clone(), small.y, small.classes)
    poisoned.x[5] = float("nan")
    tr2 = make_trainer(poisoned, RunDir(tmp_path / "r", resume=True), epochs=5)
    tr2.resume()
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept"):
        tr2.fit()
    assert (tmp_path / "r" / "checkpoints" / "last" / "model.safetensors").read_bytes() == before


def test_run_folder_is_never_overwritten_silently(tmp_path, small):
    make_trainer(small, RunDir(tmp_path / "r"), epochs=1).fit()
    with pytest.raises(TransferkitError, match="already exists; pass --resume"):
        RunDir(tmp_path / "r")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "precious.txt").write_text("keep me")
    with pytest.raises(TransferkitError, match="does not look like a transferkit run"):
        RunDir(tmp_path / "notarun", overwrite=True)
    assert (tmp_path / "notarun" / "precious.txt").exists()
    RunDir(tmp_path / "r", overwrite=True)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_schedules():
    cfg = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1)
    f = lr_lambda(cfg, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) < 0.01
    g = lr_lambda(TrainConfig(epochs=10, schedule="step", step_epochs=3, gamma=0.5), 10)
    assert g(29) == 1.0 and g(30) == 0.5 and g(60) == 0.25


def test_early_stopping_and_config_validation(small):
    tr = make_trainer(small, None, epochs=50, patience=2)
    tr.score_fn = lambda m, v: 1.0  # never improves after the first epoch
    res = tr.fit()
    assert res.stopped_early and len(res.history) == 3
    with pytest.raises(TransferkitError, match="unknown optimizer 'sgdd'"):
        TrainConfig(optimizer="sgdd").validate()


def test_state_flattening_roundtrip():
    obj = {"a": torch.arange(3), 1: [torch.ones(2), (2.5, "x")], "inf": float("inf")}
    tensors: dict = {}
    back = unflatten(json.loads(json.dumps(flatten(obj, tensors))), tensors)
    assert torch.equal(back["a"], obj["a"]) and back[1][1] == (2.5, "x") and back["inf"] == float("inf")
