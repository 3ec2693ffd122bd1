"""The command line end to end, and every bad input as one clear line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from transferkit.cli import main
from transferkit.models import create_model


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> bool:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return "Traceback" not in err and len(lines) >= 1 and lines[-1].startswith("error")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("runs") / "source"
    assert main(["train", "--data", "digits", "--model", "lenet", "--image-size", "16", "--epochs", "2",
                 "--quiet", "--run-dir", str(path), "--device", "cpu"]) == 0
    return str(path)


def test_train_writes_a_complete_run_folder(source_run):
    import pathlib

    p = pathlib.Path(source_run)
    cfg = yaml.safe_load((p / "config.yaml").read_text())
    assert cfg["model"] if "model" in cfg else cfg["arch"] == "lenet"
    assert cfg["image_size"] == 16 and cfg["command"] == "train"
    lines = [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and "per_class_acc" in lines[-1]["val"]
    for name in ("best", "last"):
        assert (p / "checkpoints" / name / "model.safetensors").is_file()
        assert "optimizer" in (p / "checkpoints" / name / "state.json").read_text()
    assert "val" in json.loads((p / "summary.json").read_text())


def test_finetune_eval_predict_flow(source_run, tmp_path, capsys):
    rc, out, _ = run(capsys, "finetune", "--init", source_run, "--data", "mnist5k", "--labels-per-class", "5",
                     "--strategy", "partial", "--freeze", "1", "--regularizer", "l2sp", "--epochs", "2", "--quiet",
                     "--test-data", "mnist5k:test", "--run-dir", str(tmp_path / "ft"), "--device", "cpu")
    assert rc == 0 and "test accuracy" in out
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert 0 <= summary["test"]["acc"] <= 100
    rc, out, _ = run(capsys, "eval", "--model-from", str(tmp_path / "ft"), "--data", "digits:test", "--device", "cpu")
    assert rc == 0 and "accuracy" in out
    x = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "q.npz", X=x)
    rc, out, _ = run(capsys, "predict", "--model-from", str(tmp_path / "ft"), "--data", str(tmp_path / "q.npz"),
                     "--output", str(tmp_path / "pred.csv"), "--device", "cpu")
    assert rc == 0
    rows = list(csv.reader((tmp_path / "pred.csv").read_text().splitlines()))
    assert rows[0][:2] == ["index", "prediction"] and len(rows) == 5
    assert abs(sum(float(v) for v in rows[1][2:]) - 1) < 1e-4
    rc, _, err = run(capsys, "predict", "--model-from", str(tmp_path / "ft"), "--data", str(tmp_path / "q.npz"),
                     "--output", str(tmp_path / "pred.csv"))
    assert rc == 2 and "already exists" in err


def test_config_file_and_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: digits\nmodel: mlp\nepochs: 3\nbatch-size: 128\nimage_size: 8\n")
    rc, _, _ = run(capsys, "train", "--config", str(cfg), "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r"))
    assert rc == 0
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 128 and saved["arch"] == "mlp"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["train", "--data", "mnits"], "unknown dataset 'mnits'"),
        (["train", "--data", "digits", "--model", "lenett"], "unknown model 'lenett'"),
        (["train", "--data", "mnist", "--data-dir", "/nonexistent-dir"], "train-images-idx3-ubyte"),
        (["train", "--data", "/no/such/folder"], "not found"),
    ],
)
def test_bad_names_give_one_line(capsys, tmp_path, args, expect):
    rc, _, err = run(capsys, *args, "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and expect in err and one_line_error(err), err


def test_unknown_strategy_is_a_usage_error(capsys, source_run):
    rc, _, err = run(capsys, "finetune", "--init", source_run, "--data", "digits", "--strategy", "halfway")
    assert rc == 2 and "halfway" in err and "linear-probe" in err and "Traceback" not in err


def test_corrupt_image_fails_by_option(capsys, tmp_path):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        from PIL import Image

        Image.new("L", (8, 8), 100).save(tmp_path / "imgs" / c / "ok.png")
    (tmp_path / "imgs" / "a" / "junk.png").write_text("junk")
    rc, _, err = run(capsys, "train", "--data", str(tmp_path / "imgs"), "--model", "mlp", "--on-bad-file", "error",
                     "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and "junk.png" in err and one_line_error(err)


def test_labels_out_of_range_for_head(capsys, tmp_path, source_run):
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 16, 16), np.float32), y=np.array([0, 3, 12]))
    rc, _, err = run(capsys, "eval", "--model-from", source_run, "--data", str(tmp_path / "d.npz"))
    assert rc == 2 and "label 12 is out of range for a head with 10 classes" in err and one_line_error(err)


def test_checkpoint_of_another_architecture(capsys, tmp_path):
    torch.save(create_model("lenet", 10, (1, 8, 8)).state_dict(), tmp_path / "lenet.pt")
    rc, _, err = run(capsys, "finetune", "--init", str(tmp_path / "lenet.pt"), "--model", "dtn", "--data", "digits",
                     "--run-dir", str(tmp_path / "r"))
    assert rc == 2 and "does not fit this architecture" in err and "backbone." in err and one_line_error(err)


def test_existing_run_folder_is_refused(capsys, source_run):
    rc, _, err = run(capsys, "train", "--data", "digits", "--run-dir", source_run)
    assert rc == 2 and "--resume" in err and "--overwrite" in err and one_line_error(err)


def test_nan_loss_exits_cleanly(capsys, tmp_path):
    # finite inputs (NaN inputs are refused when loading) so large that the network overflows
    x = np.full((64, 8), 3e38, np.float32) * np.sign(np.random.default_rng(0).normal(size=(64, 8))).astype(np.float32)
    np.savez(tmp_path / "nan.npz", X=x, y=np.arange(64) % 2)
    rc, _, err = run(capsys, "train", "--data", str(tmp_path / "nan.npz"), "--model", "mlp", "--epochs", "2",
                     "--val-split", "0", "--quiet", "--run-dir", str(tmp_path / "r"))
    assert rc == 3 and "loss became nan" in err and one_line_error(err)


def test_unsafe_yaml_is_refused(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: !!python/object/apply:os.system ['touch pwned']\n")
    rc, _, err = run(capsys, "train", "--config", str(bad), "--data", "digits")
    assert rc == 2 and "only plain YAML" in err and "Traceback" not in err


def test_listings(capsys):
    rc, out, _ = run(capsys, "datasets")
    assert rc == 0 and all(n in out for n in ("mnist", "usps", "digits", "mnist5k"))
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and all(n in out for n in ("lenet", "dtn", "resnet20", "conv4", "mlp", "timm:NAME"))


@pytest.mark.slow
def test_demo_runs_offline_and_writes_table_and_plot(capsys, tmp_path):
    rc, out, _ = run(capsys, "demo", "--seeds", "1", "--source-epochs", "1", "--target-epochs", "2", "--out", str(tmp_path / "d"))
    assert rc == 0
    for name in ("target only (scratch)", "linear probe", "partial", "full fine-tuning", "L2-SP", "LwF"):
        assert name in out
    data = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert len(data["rows"]) == 6 and (tmp_path / "d" / "demo.png").stat().st_size > 10_000
    rc, _, err = run(capsys, "demo", "--seeds", "1", "--out", str(tmp_path / "d"))
    assert rc == 2 and "already exists" in err
