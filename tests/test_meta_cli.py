"""`transferkit meta train / eval` and `few-shot` on sklearn digits (digit classes as few-shot classes)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.cli import main
from transferkit.data import load_data


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("meta") / "run"
    rc = main(["meta", "train", "--data", "digits", "--method", "protonet", "--ways", "3", "--shots", "1", "--queries", "3",
               "--test-fraction", "0.4", "--epochs", "1", "--episodes-per-epoch", "3", "--meta-batch", "4",
               "--test-episodes", "8", "--run-dir", str(run), "--quiet", "--device", "cpu"])
    assert rc == 0
    return run


def save_digit(path, img, size=8, mode="L"):
    arr = (img / img.max() * 255).astype(np.uint8)
    Image.fromarray(arr).convert(mode).resize((size, size)).save(path)


@pytest.fixture()
def folders(tmp_path):
    d = load_data("digits", "test")
    x, y = d.x[:, 0].numpy(), d.y.numpy()
    for c in (6, 7, 8):
        (tmp_path / "support" / f"digit{c}").mkdir(parents=True)
        for j in range(2):
            save_digit(tmp_path / "support" / f"digit{c}" / f"{j}.png", x[y == c][j])
    (tmp_path / "query").mkdir()
    for j, c in enumerate((6, 7, 8, 6)):
        save_digit(tmp_path / "query" / f"q{j}.png", x[y == c][5 + j], size=20, mode="RGB")  # wrong size and channels
    return tmp_path


def test_train_writes_run_and_eval_reports_interval(meta_run, capsys, tmp_path):
    summary = json.loads((meta_run / "summary.json").read_text())
    assert summary["family"] == "meta" and summary["method"] == "protonet" and summary["test"]["episodes"] == 8
    out = tmp_path / "eval.json"
    assert main(["meta", "eval", "--model-from", str(meta_run), "--episodes", "20", "--ways", "2", "--output", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "protonet 2-way 1-shot on digits:train (test classes): accuracy" in text and "95% interval, 20 episodes" in text
    res = json.loads(out.read_text())
    assert res["episodes"] == 20 and 0 <= res["acc"] <= 100 and res["ci95"] >= 0


def test_few_shot_writes_csv_and_converts_queries(meta_run, folders, capsys):
    out = folders / "preds.csv"
    rc = main(["few-shot", "--model-from", str(meta_run), "--support", str(folders / "support"),
               "--query", str(folders / "query"), "--output", str(out), "--device", "cpu"])
    assert rc == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["file", "prediction", "p_digit6", "p_digit7", "p_digit8"]
    assert [r[0] for r in rows[1:]] == ["q0.png", "q1.png", "q2.png", "q3.png"]
    assert all(r[1] in {"digit6", "digit7", "digit8"} for r in rows[1:])
    assert all(abs(sum(float(v) for v in r[2:]) - 1) < 1e-4 for r in rows[1:])
    assert "converted to the model's input 1x8x8" in capsys.readouterr().err


def test_few_shot_empty_class_folder(meta_run, folders, capsys):
    (folders / "support" / "digit9").mkdir()
    rc = main(["few-shot", "--model-from", str(meta_run), "--support", str(folders / "support"),
               "--query", str(folders / "query"), "--output", str(folders / "p.csv")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class folder" in err and "digit9 is empty" in err


def test_few_shot_query_folder_without_images(meta_run, folders, capsys):
    (folders / "empty").mkdir()
    rc = main(["few-shot", "--model-from", str(meta_run), "--support", str(folders / "support"),
               "--query", str(folders / "empty"), "--output", str(folders / "p.csv")])
    assert rc == 2 and "has no images" in capsys.readouterr().err


def test_too_many_shots_names_the_class(tmp_path, capsys):
    rc = main(["meta", "train", "--data", "digits", "--ways", "2", "--shots", "200", "--queries", "1",
               "--run-dir", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "class '" in err and "but 200-shot with 1 queries needs 201" in err and err.count("\n") == 1


def test_more_ways_than_classes_cli(tmp_path, capsys):
    rc = main(["meta", "train", "--data", "digits", "--ways", "9", "--run-dir", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    assert "9-way episodes need 9 classes but this split of digits:train has" in capsys.readouterr().err


def test_eval_needs_a_meta_run(tmp_path, capsys):
    rc = main(["meta", "eval", "--model-from", str(tmp_path)])
    assert rc == 2 and "not a meta-learning run folder" in capsys.readouterr().err


def test_maml_few_shot_with_other_class_count(tmp_path, folders, capsys):
    run = tmp_path / "maml"
    assert main(["meta", "train", "--data", "digits", "--method", "fomaml", "--ways", "2", "--queries", "2", "--epochs", "1",
                 "--episodes-per-epoch", "2", "--meta-batch", "2", "--test-episodes", "0", "--run-dir", str(run), "--quiet"]) == 0
    rc = main(["few-shot", "--model-from", str(run), "--support", str(folders / "support"),
               "--query", str(folders / "query"), "--output", str(tmp_path / "p.csv")])
    assert rc == 2
    assert "the support set has 3 classes but this maml model was meta-trained with 2 outputs" in capsys.readouterr().err


def test_sinusoid_demo(tmp_path, capsys):
    run = tmp_path / "sin"
    assert main(["meta", "train", "--data", "sinusoid", "--method", "maml", "--ways", "1", "--shots", "5", "--queries", "5",
                 "--inner-lr", "0.01", "--epochs", "1", "--episodes-per-epoch", "3", "--meta-batch", "4",
                 "--test-episodes", "10", "--run-dir", str(run), "--quiet"]) == 0
    assert "MSE" in capsys.readouterr().out
    assert main(["meta", "eval", "--model-from", str(run), "--episodes", "10"]) == 0


def test_train_records_task_mode_and_augmentation(tmp_path):
    import yaml

    run = tmp_path / "run"
    rc = main(["meta", "train", "--data", "digits", "--ways", "2", "--queries", "2", "--epochs", "1", "--episodes-per-epoch", "2",
               "--meta-batch", "2", "--test-episodes", "4", "--tasks-as", "vmap", "--augment-shift", "1",
               "--augment-scale", "0.9", "1.1", "--run-dir", str(run), "--quiet", "--device", "cpu"])
    assert rc == 0
    meta = yaml.safe_load((run / "meta.yaml").read_text())
    assert meta["spec"]["tasks_as"] == "vmap"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["augment_shift"] == 1 and config["augment_scale"] == [0.9, 1.1]


def test_bad_augment_scale_for_meta_train(tmp_path, capsys):
    rc = main(["meta", "train", "--data", "digits", "--augment-scale", "1.2", "0.8", "--run-dir", str(tmp_path / "r"), "--quiet"])
    assert rc == 2 and "--augment-scale takes LO HI with LO <= HI" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_batch_size_is_refused_with_a_pointer_to_meta_batch(tmp_path, capsys):
    rc = main(["meta", "train", "--data", "digits", "--batch-size", "32", "--run-dir", str(tmp_path / "r"), "--quiet"])
    assert rc == 2 and "meta train does not use --batch-size" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_global_pool_is_saved_with_the_model_and_refused_off_conv4(tmp_path, capsys):
    from transferkit.models import load_model

    run = tmp_path / "gp"
    assert main(["meta", "train", "--data", "digits", "--method", "fomaml", "--ways", "2", "--queries", "2", "--epochs", "1",
                 "--episodes-per-epoch", "2", "--meta-batch", "2", "--test-episodes", "0", "--global-pool",
                 "--run-dir", str(run), "--quiet"]) == 0
    model = load_model(next(run.glob("*.safetensors")))
    assert model.spec["kwargs"] == {"global_pool": True}
    assert isinstance(model.backbone.block4[1], torch.nn.AdaptiveAvgPool2d)
    rc = main(["meta", "train", "--data", "digits", "--model", "mlp", "--ways", "2", "--global-pool", "--run-dir", str(tmp_path / "r"), "--quiet"])
    assert rc == 2 and "--global-pool is a conv4 option; --model mlp does not take it" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_zero_head_is_recorded_and_used_again_by_eval(tmp_path, monkeypatch):
    import yaml

    run = tmp_path / "zh"
    assert main(["meta", "train", "--data", "digits", "--method", "fomaml", "--zero-head", "--ways", "2", "--queries", "2",
                 "--epochs", "1", "--episodes-per-epoch", "2", "--meta-batch", "2", "--test-episodes", "0",
                 "--run-dir", str(run), "--quiet"]) == 0
    assert yaml.safe_load((run / "meta.yaml").read_text())["spec"]["zero_head"] is True
    from transferkit.commands import meta as meta_cmd

    built = []
    real = meta_cmd.build_learner
    monkeypatch.setattr(meta_cmd, "build_learner", lambda model, spec: built.append(real(model, spec)) or built[-1])
    assert main(["meta", "eval", "--model-from", str(run), "--episodes", "4"]) == 0
    assert built and built[0].zero_head
