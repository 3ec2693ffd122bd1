"""Run folders are never damaged by a user mistake, and every such mistake is one line (issue 13)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from transferkit.analysis import compare_runs
from transferkit.cli import main
from transferkit.engine.state import save_checkpoint

TINY = ["--image-size", "8", "--epochs", "1", "--steps", "2", "--quiet", "--device", "cpu"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory) -> Path:
    rd = tmp_path_factory.mktemp("runs") / "lenet"
    assert main(["train", "--data", "digits", "--model", "lenet", *TINY, "--run-dir", str(rd)]) == 0
    return rd


def test_resume_with_another_architecture_is_one_line_and_changes_nothing(capsys, lenet_run) -> None:
    before = snapshot(lenet_run)
    rc, _, err = run(capsys, "train", "--data", "digits", "--model", "mlp", *TINY, "--resume", "--run-dir", str(lenet_run))
    line = one_error_line(err)
    assert rc == 2 and "cannot resume" in line and "arch lenet in the checkpoint vs mlp now" in line
    assert snapshot(lenet_run) == before  # config.yaml not rewritten, nothing else touched


def test_a_typo_leaves_no_run_folder_and_a_config_only_folder_does_not_block(capsys, tmp_path) -> None:
    rd = tmp_path / "x"
    rc, _, err = run(capsys, "train", "--data", "digits", "--model", "lenett", *TINY, "--run-dir", str(rd))
    assert rc == 2 and "lenett" in one_error_line(err)
    assert not rd.exists()
    # a folder left by an older version (config.yaml only: the run never started) is reused
    rd.mkdir()
    (rd / "config.yaml").write_text("command: train\narch: lenett\n")
    rc, _, err = run(capsys, "train", "--data", "digits", "--model", "lenet", *TINY, "--run-dir", str(rd))
    assert rc == 0, err
    assert "never started" in err and yaml.safe_load((rd / "config.yaml").read_text())["arch"] == "lenet"


def test_resume_of_a_run_that_never_started_says_so(capsys, tmp_path) -> None:
    rd = tmp_path / "x"
    rd.mkdir()
    (rd / "config.yaml").write_text("command: train\n")
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--resume", "--run-dir", str(rd))
    line = one_error_line(err)
    assert rc == 2 and "never started" in line and "without --resume" in line


def test_existing_folder_message_names_only_real_options(capsys, lenet_run) -> None:
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--run-dir", str(lenet_run))
    line = one_error_line(err)
    assert rc == 2 and "already exists" in line and "--name" not in line and "--run-dir" in line


def test_missing_parents_are_created(capsys, tmp_path) -> None:
    rd = tmp_path / "a" / "b" / "c"
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--run-dir", str(rd))
    assert rc == 0, err
    assert (rd / "summary.json").is_file()


def test_unwritable_or_file_parent_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--run-dir", str(blocker / "run"))
    assert rc == 2 and "is a file" in one_error_line(err)

    real_access = os.access
    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == ro else real_access(p, mode, *a, **k))
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--run-dir", str(ro / "run"))
    assert rc == 2 and "not writable" in one_error_line(err)
    assert not (ro / "run").exists()


def test_read_only_file_system_at_creation_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--run-dir", str(tmp_path / "run"))
    line = one_error_line(err)
    assert rc == 2 and "cannot create run folder" in line and "Read-only file system" in line


class _Model:
    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    def save(self, path: Path, extra=None) -> Path:
        if self.exc is not None:
            raise self.exc
        Path(path).write_bytes(b"weights")
        return Path(path)


@pytest.mark.parametrize("kind", ["oserror", "safetensors"])
def test_disk_full_during_checkpoint_keeps_the_last_one(tmp_path, kind) -> None:
    from safetensors import SafetensorError

    from transferkit.errors import TransferkitError

    folder = tmp_path / "checkpoints" / "best"
    save_checkpoint(folder, _Model(None), {"x": 1}, {"epoch": 0})
    before = snapshot(folder)
    exc: BaseException = (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if kind == "oserror" else SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'))
    with pytest.raises(TransferkitError) as info:
        save_checkpoint(folder, _Model(exc), {"x": 2}, {"epoch": 1})
    msg = str(info.value)
    assert "No space left on device" in msg and "intact" in msg and "\n" not in msg
    assert not (tmp_path / "checkpoints" / "best.tmp").exists()
    assert snapshot(folder) == before


def test_disk_full_from_the_cli_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    import transferkit.engine.state as state

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(state, "save_file", full)
    rd = tmp_path / "run"
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--run-dir", str(rd))
    assert rc == 2 and "No space left on device" in one_error_line(err)
    assert not list(rd.glob("checkpoints/*.tmp"))


def _fake_run(root: Path, name: str, config: dict, acc: float) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "summary.json").write_text(json.dumps({"command": "train", "test": {"acc": acc}}))
    return d


def test_report_groups_by_configuration_not_by_command(tmp_path) -> None:
    base = {"command": "train", "data": "digits"}
    runs = [
        _fake_run(tmp_path, "lenet0", {**base, "arch": "lenet", "seed": 0, "run_dir": "runs/lenet0"}, 90.0),
        _fake_run(tmp_path, "lenet1", {**base, "arch": "lenet", "seed": 1, "run_dir": "runs/lenet1"}, 92.0),
        _fake_run(tmp_path, "mlp0", {**base, "arch": "mlp", "seed": 0, "run_dir": "runs/mlp0"}, 70.0),
    ]
    rows = compare_runs(runs)
    assert len(rows) == 2
    by = {r["method"]: r for r in rows}
    assert by["train [arch=lenet]"]["n"] == 2 and by["train [arch=lenet]"]["mean"] == pytest.approx(91.0)
    assert by["train [arch=mlp]"]["n"] == 1


def _npz(path: Path, n: int, classes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 6)).astype("float32") + y[:, None]
    np.savez(path, X=x, y=y)
    return str(path)


def test_finetune_replaces_the_head_when_class_names_differ(capsys, tmp_path) -> None:
    src_csv = tmp_path / "src.csv"
    tgt_csv = tmp_path / "tgt.csv"
    rng = np.random.default_rng(0)
    for path, names in ((src_csv, ["airplane", "bird", "cat"]), (tgt_csv, ["dog", "frog", "truck"])):
        rows = ["f0,f1,f2,label"]
        for i in range(60):
            c = i % 3
            rows.append(",".join(f"{v:.3f}" for v in rng.normal(size=3) + c) + f",{names[c]}")
        path.write_text("\n".join(rows) + "\n")
    src = tmp_path / "src"
    assert main(["train", "--data", str(src_csv), "--model", "mlp", "--epochs", "1", "--quiet", "--run-dir", str(src)]) == 0
    ft = tmp_path / "ft"
    rc, _, err = run(capsys, "finetune", "--init", str(src), "--data", str(tgt_csv), "--epochs", "1", "--quiet",
                     "--run-dir", str(ft))
    assert rc == 0, err
    assert "new head" in err and "dog" in err
    preds = tmp_path / "p.csv"
    assert main(["predict", "--model-from", str(ft), "--data", str(tgt_csv), "--output", str(preds)]) == 0
    header = preds.read_text().splitlines()[0]
    assert "p_dog" in header and "p_airplane" not in header


def test_labels_per_class_says_how_the_checkpoint_is_chosen(capsys, tmp_path, lenet_run) -> None:
    loud = [a for a in TINY if a != "--quiet"]  # notes are not printed with --quiet
    args = ["finetune", "--init", str(lenet_run), "--data", "digits", "--labels-per-class", "4", *loud]
    rc, _, err = run(capsys, *args, "--run-dir", str(tmp_path / "a"))
    assert rc == 0 and "chosen by training loss" in err.replace("\n", " ")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert "val" not in summary
    # --val-split given explicitly: part of the K labelled examples per class validate
    rc, _, err = run(capsys, *args, "--val-split", "0.25", "--run-dir", str(tmp_path / "b"))
    assert rc == 0 and "holds out 1 of the 4 labelled examples per class" in err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["val"]["n"] == 10


def test_incompatible_test_data_is_refused_before_training(capsys, tmp_path) -> None:
    table = _npz(tmp_path / "t.npz", 30, 3, 0)
    rd = tmp_path / "run"
    rc, _, err = run(capsys, "train", "--data", "digits", *TINY, "--test-data", table, "--run-dir", str(rd))
    assert rc == 2 and "shape" in one_error_line(err)
    assert not rd.exists()  # refused before anything was trained or written


def test_label_messages_point_to_what_helps(capsys, tmp_path, lenet_run) -> None:
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype("float32")
    neg = tmp_path / "neg.npz"
    np.savez(neg, X=x, y=np.array([0, 1, 2, -1, 0, 1]))
    many = tmp_path / "many.npz"
    np.savez(many, X=x, y=np.array([0, 1, 2, 3, 11, 12]))
    for path in (neg, many):
        rc, _, err = run(capsys, "eval", "--model-from", str(lenet_run), "--data", str(path))
        line = one_error_line(err)
        assert rc == 2 and "--new-head" not in line
    rc, _, err = run(capsys, "eval", "--model-from", str(lenet_run), "--data", str(many))
    assert "model's classes" in err
