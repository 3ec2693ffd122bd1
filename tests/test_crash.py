"""Crash safety: SIGKILL mid-training then --resume equals an uninterrupted run; a full disk keeps the last checkpoint."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from transferkit.cli import main
from transferkit.engine import state as state_mod
from transferkit.engine.state import load_checkpoint

ARGS = ["train", "--data", "digits", "--model", "mlp", "--epochs", "4", "--batch-size", "64", "--device", "cpu",
        "--deterministic", "--quiet", "--seed", "5", "--augment-shift", "1"]
# unsupervised adaptation: the kill lands in stage 2 (adversarial training); stage 1 is reused on resume
ADAPT_ARGS = ["adapt", "--method", "dann", "--source", "mnist5k:test", "--target", "digits:test", "--image-size", "8",
              "--model", "mlp", "--epochs", "4", "--source-epochs", "1", "--batch-size", "64", "--device", "cpu",
              "--deterministic", "--quiet", "--seed", "5"]

# The child runs the real CLI with every optimisation step slowed down, so the kill lands mid-training.
SLOW_CHILD = """
import sys, time
import transferkit.engine.loop as loop
step = loop.Trainer._step
def slow(self, batch, epoch):
    time.sleep(0.05)
    return step(self, batch, epoch)
loop.Trainer._step = slow
from transferkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)


def _records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("time_s")
    return rows


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if "wall" not in k and "time" not in k}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


@pytest.mark.slow
@pytest.mark.parametrize("args", [ARGS, ADAPT_ARGS], ids=["train", "adapt"])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, args):
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERKIT_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, *args, "--run-dir", str(killed)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "last" / "state.json").is_file():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    time.sleep(0.3)  # into the second epoch: ~6 of its 21 slowed steps
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    _, info = load_checkpoint(killed / "checkpoints" / "last")
    assert info["epoch"] < 3, "the run finished before it was killed; the test proves nothing"

    assert main([*args, "--run-dir", str(killed), "--resume"]) == 0
    assert main([*args, "--run-dir", str(tmp_path / "whole")]) == 0

    assert _records(killed) == _records(tmp_path / "whole")  # exact, every epoch
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert _strip_times(a) == _strip_times(b)
    assert not list((killed / "checkpoints").glob("*.tmp")) and not list((killed / "checkpoints").glob("*.old"))


def _disk_full(monkeypatch, target, name: str, allow: int) -> None:
    calls = {"n": 0}
    real = getattr(target, name)

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > allow:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)


SMALL = ["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--device", "cpu", "--quiet", "--val-split", "0"]


def test_disk_full_while_saving_checkpoint_keeps_previous(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    # epoch 1 writes best + last (2 trainer files); the third write (epoch 2) hits a full disk
    _disk_full(monkeypatch, state_mod, "save_file", allow=2)
    rc = main([*SMALL, "--run-dir", str(run)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: could not write checkpoint")
    assert "No space left on device" in err and "previous checkpoint is intact" in err
    _, info = load_checkpoint(run / "checkpoints" / "last")
    assert info["epoch"] == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last"]  # no half-written folder


def test_disk_full_while_swapping_checkpoint_keeps_previous(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = os.replace
    seen = {"n": 0}

    def replace(src, dst):  # the rename of the new `last` folder into place fails the second time
        if Path(dst).name == "last" and Path(src).name == "last.tmp":
            seen["n"] += 1
            if seen["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(state_mod.os, "replace", replace)
    rc = main([*SMALL, "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and "could not write checkpoint" in err and "Traceback" not in err
    _, info = load_checkpoint(run / "checkpoints" / "last")
    assert info["epoch"] == 0  # the old folder was put back


def test_disk_full_while_logging_metrics_stops_cleanly(tmp_path, monkeypatch, capsys):
    from transferkit.engine import run as run_mod

    _disk_full(monkeypatch, run_mod, "append_jsonl", allow=1)
    rc = main([*SMALL, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "could not append to" in err and "--resume" in err
    _, info = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert info["epoch"] == 0


def test_best_is_written_before_last(tmp_path, monkeypatch):
    """A crash between the two writes must never leave `last` newer than `best` claims to be."""
    order = []
    real = state_mod.save_checkpoint

    def spy(folder, *a, **k):
        order.append(Path(folder).name)
        return real(folder, *a, **k)

    monkeypatch.setattr("transferkit.engine.loop.save_checkpoint", spy)
    assert main([*SMALL, "--epochs", "2", "--run-dir", str(tmp_path / "run")]) == 0
    assert order[:2] == ["best", "last"]
