"""``rank``, ``gap`` and ``report`` on tiny models and runs; their error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from transferkit.analysis import (
    compare_runs,
    comparison_markdown,
    rank_models,
    read_run,
    write_report,
)
from transferkit.cli import main
from transferkit.data import load_data
from transferkit.errors import TransferkitError
from transferkit.models import create_model, load_model


def _checkpoint(tmp: Path, name: str, shape=(1, 8, 8), arch: str = "mlp", seed: int = 0, **kw) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, 10, shape, **kw)
    return model.save(tmp / f"{name}.safetensors")


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """A real (tiny) run made by `transferkit train` on digits."""
    d = tmp_path_factory.mktemp("runs") / "mlp-digits"
    rc = main(["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--test-data", "digits",
               "--run-dir", str(d), "--quiet", "--device", "cpu"])
    assert rc == 0
    return d


# ---------------------------------------------------------------------- rank
def test_rank_cli_table_and_json(tmp_path, capsys) -> None:
    a, b = _checkpoint(tmp_path, "a"), _checkpoint(tmp_path, "b", seed=1, hidden=[32])
    out = tmp_path / "rank.json"
    rc = main(["rank", "--models", str(a), str(b), "--data", "digits", "--labels-per-class", "10",
               "--output", str(out), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "LogME" in text and "H-score" in text and "100 labelled examples" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert {r["model"] for r in rows} == {"a", "b"}
    assert rows[0]["logme"] >= rows[1]["logme"]
    assert all(r["leep"] <= 0 and r["nce"] <= 0 for r in rows)


def test_rank_python_api_orders_a_trained_model_first(train_run) -> None:
    data = load_data("digits", "test")
    rows = rank_models({"random": create_model("mlp", 10, (1, 8, 8)), "trained": train_run}, data)
    assert rows[0]["model"] == "trained"  # trained features separate the digits better than random ones
    rows = rank_models({"random": create_model("mlp", 10, (1, 8, 8)), "trained": load_model(train_run)}, data, sort_by="leep")
    assert rows[0]["model"] == "trained"


def test_rank_refuses_models_with_different_input_shapes(tmp_path, capsys) -> None:
    a, b = _checkpoint(tmp_path, "small"), _checkpoint(tmp_path, "big", shape=(1, 16, 16))
    rc = main(["rank", "--models", str(a), str(b), "--data", "digits"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "different input shapes" in err and "small (1, 8, 8)" in err and "big (1, 16, 16)" in err
    assert len(err.strip().splitlines()) == 1


def test_rank_refuses_a_single_class_target(tmp_path, capsys) -> None:
    np.savez(tmp_path / "one.npz", X=np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32), y=np.full(20, 3))
    rc = main(["rank", "--models", str(_checkpoint(tmp_path, "a")), "--data", str(tmp_path / "one.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "single class" in err and "at least 2 classes" in err


def test_rank_without_models_says_so(capsys) -> None:
    assert main(["rank", "--data", "digits"]) == 2
    assert "--models" in capsys.readouterr().err


# ----------------------------------------------------------------------- gap
def test_gap_cli_on_inputs_and_on_features(tmp_path, capsys, train_run) -> None:
    out, plot = tmp_path / "gap.json", tmp_path / "gap.png"
    rc = main(["gap", "--source", "digits", "--target", "digits:test", "--max-samples", "200", "--tsne-points", "40",
               "--plot", str(plot), "--output", str(out), "--device", "cpu"])
    assert rc == 0
    same = json.loads(out.read_text())
    assert same["a_distance"] < 0.5  # two splits of one dataset
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["gap", "--source", "digits", "--target", "digits:test", "--features-from", str(train_run), "--max-samples", "200",
               "--tsne-points", "0", "--output", str(tmp_path / "f.json"), "--device", "cpu"])
    assert rc == 0
    feat = json.loads((tmp_path / "f.json").read_text())
    assert "features of" in feat["space"] and feat["mmd2"] < 0.1
    assert "proxy A-distance" in capsys.readouterr().out


def test_gap_refuses_to_overwrite_the_plot(tmp_path, capsys) -> None:
    (tmp_path / "gap.png").write_bytes(b"x")
    rc = main(["gap", "--source", "digits", "--target", "digits:test", "--plot", str(tmp_path / "gap.png")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


# -------------------------------------------------------------------- report
def test_report_of_a_real_run(tmp_path, train_run, capsys) -> None:
    out = tmp_path / "rep" / "report.html"
    rc = main(["report", str(train_run), "--output", str(out), "--device", "cpu"])
    assert rc == 0
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 2  # learning curves + confusion matrix
    assert "Learning curves" in html and "Confusion matrix" in html and "Resolved configuration" in html
    assert "<img" in html and "src='http" not in html and 'src="http' not in html  # self-contained
    md = out.with_suffix(".md").read_text()
    assert "![Learning curves](report_assets/" in md and "| test acc |" in md
    assert len(list((out.parent / "report_assets").glob("*.png"))) == 2
    assert main(["report", str(train_run), "--output", str(out)]) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "metrics.jsonl").write_text("")
    rc = main(["report", str(tmp_path / "notes"), "--output", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not a transferkit run folder" in err and "missing config.yaml, summary.json, checkpoints" in err
    assert len(err.splitlines()) == 1
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _fake_run(root: Path, name: str, config: dict, summary: dict | None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_compare_runs_groups_by_method_and_task_with_mean_and_std(tmp_path) -> None:
    runs = [_fake_run(tmp_path, f"dann{i}", {"command": "adapt", "source": "mnist", "target": "usps"},
                      {"family": "adapt", "method": "dann", "test": {"acc": acc}}) for i, acc in enumerate([80.0, 82.0, 84.0])]
    runs.append(_fake_run(tmp_path, "ft", {"command": "finetune", "strategy": "partial", "data": "digits", "labels_per_class": 10},
                          {"command": "finetune", "test": {"acc": 70.0}}))
    runs.append(_fake_run(tmp_path, "empty", {"command": "train", "data": "digits"}, None))
    rows = compare_runs(runs)
    by = {(r["method"], r["task"]): r for r in rows}
    dann = by[("adapt/dann", "mnist→usps")]
    assert dann["mean"] == pytest.approx(82.0) and dann["std"] == pytest.approx(2.0) and dann["n"] == 3
    assert by[("finetune/partial", "digits (10/class)")]["n"] == 1
    assert len(rows) == 2  # the run without a summary has no number to compare
    assert "| mnist→usps | adapt/dann | test acc | 82.00 ± 2.00 | 3 |" in comparison_markdown(rows)


def test_report_handles_missing_pieces_gracefully(tmp_path) -> None:
    run = _fake_run(tmp_path, "bare", {"command": "adapt", "source": "digits", "target": "digits:test"}, None)
    res = write_report([run], tmp_path / "bare.html")
    notes = " ".join(res.sections[0].notes)
    assert "metrics.jsonl is missing" in notes and "summary.json is missing" in notes
    assert "no checkpoints" in notes
    assert "Run bare" in res.html.read_text()
    assert read_run(run).missing == ["metrics.jsonl", "summary.json", "checkpoints"]


def test_report_of_an_adaptation_run_has_tsne_before_and_after(tmp_path, train_run) -> None:
    run = tmp_path / "adapt-run"
    shutil.copytree(train_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.update(command="adapt", source="digits", target="digits:test", method="dann")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = write_report([run], tmp_path / "a.html", tsne_points=25)
    assert [f.key for f in res.sections[0].figures] == ["curves", "confusion", "tsne"]
    assert "source_model.safetensors" in " ".join(res.sections[0].notes)  # only "after" without it
    load_model(train_run).save(run / "source_model.safetensors")
    res = write_report([run], tmp_path / "b.html", tsne_points=25, confusion=False)
    assert [f.key for f in res.sections[0].figures] == ["curves", "tsne"]
    assert not res.sections[0].notes
    assert "before adaptation" in res.sections[0].figures[-1].caption or "source-only" in res.sections[0].figures[-1].caption


def test_write_report_wants_an_html_name(tmp_path, train_run) -> None:
    with pytest.raises(TransferkitError, match=r"\.html"):
        write_report([train_run], tmp_path / "report.pdf")


def test_report_tells_apart_runs_with_the_same_folder_name(tmp_path) -> None:
    a = _fake_run(tmp_path / "x", "seed0", {"command": "train", "data": "digits"}, {"test": {"acc": 50.0}})
    b = _fake_run(tmp_path / "y", "seed0", {"command": "train", "data": "digits"}, {"test": {"acc": 60.0}})
    res = write_report([a, b], tmp_path / "r.html", confusion=False)
    assert [s.run.name for s in res.sections] == ["x/seed0", "y/seed0"]
    assert res.comparison[0]["runs"] == ["x/seed0", "y/seed0"] and res.comparison[0]["mean"] == pytest.approx(55.0)
