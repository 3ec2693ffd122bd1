"""The one run pipeline: best weights restored for every family, step budgets, run folders, summaries."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from transferkit.adapt import AdaptSpec, adapt
from transferkit.cli import main
from transferkit.data import random_split
from transferkit.distill import DistillSpec, distill
from transferkit.engine import Callback, TrainConfig
from transferkit.engine.pipeline import SUMMARY_SCHEMA, BatchStream, budget, index_stream
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.meta import EpisodeSampler, MetaSpec, build_learner, meta_train, split_classes
from transferkit.models import create_model, load_model

EPOCHS = 3


class SpoilLastEpoch(Callback):
    """Zero the weights when the last epoch starts (so it cannot be the best) and record each epoch."""

    def __init__(self, last: int):
        self.last = last
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.scores: dict[int, float] = {}

    def on_epoch_start(self, trainer: Any, epoch: int, steps: int) -> None:
        if epoch == self.last:  # a network of zeros has no gradient through its hidden layers: it stays at chance
            with torch.no_grad():
                for p in trainer.method.model.parameters():
                    p.zero_()

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.states[record["epoch"]] = {k: v.detach().clone() for k, v in trainer.method.model.state_dict().items()}
        self.scores[record["epoch"]] = record["score"]


def assert_holds_best(model: torch.nn.Module, spy: SpoilLastEpoch) -> None:
    best = max(spy.scores, key=spy.scores.__getitem__)
    assert best != spy.last, spy.scores  # the spoilt epoch must not win, or the test proves nothing
    for k, v in model.state_dict().items():
        assert torch.equal(v, spy.states[best][k]), k
    assert not all(torch.equal(v, spy.states[spy.last][k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def digits_split(digits16):
    return random_split(digits16, 0.3, 0)


def test_finetune_returns_the_best_weights_without_a_run_folder(digits_split):
    train, val = digits_split
    model = create_model("mlp", train.num_classes, train.input_shape)
    spy = SpoilLastEpoch(EPOCHS - 1)
    finetune(model, train, val, FinetuneSpec(), TrainConfig(epochs=EPOCHS), verbose=False, callbacks=[spy])
    assert_holds_best(model, spy)


def test_distill_returns_the_best_weights_without_a_run_folder(digits_split):
    train, val = digits_split
    teacher = create_model("mlp", train.num_classes, train.input_shape)
    student = create_model("mlp", train.num_classes, train.input_shape, hidden=(32,))
    spy = SpoilLastEpoch(EPOCHS - 1)
    distill(teacher, student, train, val, DistillSpec(), TrainConfig(epochs=EPOCHS), verbose=False, callbacks=[spy])
    assert_holds_best(student, spy)


def test_adapt_returns_the_best_weights_without_a_run_folder(digits16, digits16_test):
    spy = SpoilLastEpoch(EPOCHS - 1)
    spec = AdaptSpec(method="dann", select_by="source-acc", source_epochs=1, batch_size=64, val_target_size=100)
    res = adapt(digits16, digits16_test.unlabeled(), spec, TrainConfig(epochs=EPOCHS), "mlp", verbose=False, callbacks=[spy])
    # the callback also watched stage 1 (one epoch, recorded as epoch 0); stage 2 overwrote it
    assert_holds_best(res.model, spy)


def test_meta_train_returns_the_best_weights_without_a_run_folder(digits16):
    split = split_classes(digits16.classes, 0.3, 0.2, False, 0)
    spec = MetaSpec(method="protonet", ways=2, shots=1, queries=3, meta_batch=2, episodes_per_epoch=5, val_episodes=10)
    train_s = EpisodeSampler(digits16, split["train"], 2, 1, 3)
    val_s = EpisodeSampler(digits16, split["val"], 2, 1, 3)
    learner = build_learner(create_model("mlp", 2, digits16.input_shape), spec)
    spy = SpoilLastEpoch(EPOCHS - 1)
    meta_train(learner, train_s, spec, TrainConfig(epochs=EPOCHS), val_s, verbose=False, callbacks=[spy])
    assert_holds_best(learner.model, spy)


def test_a_step_budget_fixes_the_number_of_optimizer_steps(digits16):
    """--steps trains that many steps whatever the data size, repeating passes over small data."""
    small = digits16.subset(torch.arange(100))
    model = create_model("mlp", small.num_classes, small.input_shape)
    trainer, result = finetune(model, small, None, FinetuneSpec(), TrainConfig(epochs=4, steps=60), batch_size=32, verbose=False)
    assert trainer.global_step == 60 and len(result.history) == 4  # 4 passes of 4 steps would be 16
    cfg, stream = budget(TrainConfig(epochs=3, steps=10), BatchStream(lambda e, g: iter([1, 2]), 2))
    assert cfg.steps_per_epoch == 4 and list(zip(range(5), stream.batches(0, torch.Generator()), strict=False))[-1][1] == 1


def test_index_stream_covers_every_example_once_per_pass():
    stream = index_stream(10, 4, lambda idx, gen: idx)
    seen = torch.cat(list(stream.batches(0, torch.Generator().manual_seed(1))))
    assert stream.steps_per_pass == 3 and sorted(seen.tolist()) == list(range(10))
    dropping = index_stream(10, 4, lambda idx, gen: idx, drop_last=True)
    assert dropping.steps_per_pass == 2 and all(len(b) == 4 for b in dropping.batches(0, torch.Generator()))


def _summary(path) -> dict[str, Any]:
    return json.loads((path / "summary.json").read_text())


def test_every_family_writes_one_summary_schema_and_a_usable_model(tmp_path, capsys):
    """train, finetune, distill, adapt and meta train each leave summary.json (schema 1) and model.safetensors,
    and any of those run folders can start the next run (an adapt run as --init of finetune)."""
    common = ["--epochs", "1", "--quiet", "--device", "cpu"]
    assert main(["train", "--data", "digits", "--model", "mlp", "--run-dir", str(tmp_path / "t"), *common]) == 0
    assert main(["adapt", "--method", "dann", "--source", "digits", "--target", "digits:test", "--model", "mlp",
                 "--source-epochs", "1", "--val-target-size", "50", "--run-dir", str(tmp_path / "a"), *common]) == 0
    assert main(["finetune", "--init", str(tmp_path / "a"), "--data", "digits", "--test-data", "digits:test",
                 "--run-dir", str(tmp_path / "f"), *common]) == 0
    assert main(["distill", "--teacher", str(tmp_path / "t"), "--student", "mlp", "--student-hidden", "16",
                 "--data", "digits", "--no-latency", "--run-dir", str(tmp_path / "d"), *common]) == 0
    assert main(["meta", "train", "--data", "digits", "--model", "mlp", "--ways", "2", "--shots", "1", "--queries", "2",
                 "--episodes-per-epoch", "2", "--meta-batch", "2", "--test-episodes", "5", "--test-fraction", "0.4",
                 "--run-dir", str(tmp_path / "m"), *common]) == 0
    for name, family in (("t", "train"), ("a", "adapt"), ("f", "finetune"), ("d", "distill"), ("m", "meta")):
        s = _summary(tmp_path / name)
        assert s["schema"] == SUMMARY_SCHEMA and s["family"] == family and isinstance(s["metrics"], dict), name
        assert {"method", "selection", "headline"} <= set(s), name
        assert (tmp_path / name / "model.safetensors").is_file(), name
        load_model(tmp_path / name / "model.safetensors")
    assert _summary(tmp_path / "f")["headline"] == "test_acc"
    assert _summary(tmp_path / "f")["metrics"]["test_acc"] == _summary(tmp_path / "f")["test"]["acc"]
    assert _summary(tmp_path / "m")["metrics"]["test_acc"] == _summary(tmp_path / "m")["test"]["acc"]
