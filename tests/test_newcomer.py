"""A newcomer's first hour (issue 13): the README's code runs as written, `make test` needs no manual
step, installing gives no deprecation warning, the demo shows progress, adapt examples are quiet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TRANSFERKIT_OFFLINE="1", TRANSFERKIT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT / "src"))
    env.pop("TRANSFERKIT_DATA_DIR", None)
    return env


def test_readme_has_python_blocks() -> None:
    assert len(PY_BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_readme_python_block_runs_as_written(tmp_path, index) -> None:
    block = PY_BLOCKS[index]
    env = _env(tmp_path)
    if "runs/source" in block:  # made by the README's `transferkit train ... --run-dir runs/source` (shortened)
        subprocess.run([sys.executable, "-m", "transferkit", "train", "--data", "mnist5k", "--model", "lenet",
                        "--epochs", "1", "--steps", "5", "--quiet", "--run-dir", "runs/source"],
                       cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    (tmp_path / "block.py").write_text(block, encoding="utf-8")
    res = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"README python block {index + 1} failed:\n{block}\n{res.stderr[-2000:]}"


def test_make_test_installs_the_browser_when_missing() -> None:
    make = (ROOT / "Makefile").read_text()
    target = re.search(r"^test:(.*)$", make, flags=re.M)
    assert target and "browser" in target.group(1)
    assert re.search(r"^browser:\n\t.*\[ -x /usr/bin/chromium \] \|\| \.ci/install-browser\.sh", make, flags=re.M)
    assert (ROOT / ".ci" / "install-browser.sh").stat().st_mode & 0o111
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', text, flags=re.M)  # not the deprecated { text = ... } table
    found = re.search(r'^requires = \[.*"setuptools>=(\d+)', text, flags=re.M)
    assert found and int(found.group(1)) >= 77  # the first setuptools that reads the SPDX string


def test_demo_shows_progress_for_the_source_and_each_seed(capsys, monkeypatch) -> None:
    import transferkit.demo as demo

    calls: list[int] = []

    def fake_finetune(model, data, *a, **k):  # training is what takes minutes; progress is what we check
        calls.append(len(data))

    monkeypatch.setattr(demo, "finetune", fake_finetune)
    monkeypatch.setattr(demo, "evaluate", lambda model, data: {"acc": 50.0})
    demo.run_demo(seeds=2, labels_per_class=2, source_epochs=1, target_epochs=1, out=None)
    out = capsys.readouterr().out
    assert "about 1-3 min" in out
    assert "[source] training" in out and "[source] done in" in out
    assert "[seed 1/2]" in out and "[seed 2/2]" in out and "s left)" in out
    assert len(calls) == 1 + 2 * len(demo.DEMO_METHODS)


def test_adapt_says_labels_are_ignored_once_and_not_for_named_datasets(tmp_path) -> None:
    from transferkit.adapt.api import prepare_domains
    from transferkit.data import load_data

    source = load_data("digits", "train")
    target = load_data("digits", "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the README's `--target digits`: no warning
        prepare_domains(source, target, None, None, None, True)
    named = type(target)(target.x, target.y, target.classes, str(tmp_path / "mine.npz"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prepare_domains(source, named, None, None, None, True)
        prepare_domains(source, named, None, None, None, True)
    assert len([w for w in seen if "labels found in target" in str(w.message)]) == 1
