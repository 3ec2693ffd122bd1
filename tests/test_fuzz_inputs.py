"""Fuzz: malformed `.npz` and `.csv` files given to `train`, `eval` and `predict`.

Every file is broken in one of the ways users break them (text or object arrays, NaN/Inf, wrong
shapes, huge or missing labels, truncated archives, ragged rows, Latin-1 bytes...). Each command
must end with one `error:` line and a non-zero status, no traceback, and change no file outside
its own new run folder or output file (the trained model's run folder included).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferkit.cli import main

D = 4  # features of the model under test

NPZ_KINDS = ("text_x", "object_x", "object_y", "complex_x", "nan_x", "inf_x", "y_2d", "y_nan", "y_inf", "y_huge",
             "y_length", "no_x", "empty_x", "x_1d", "x_5d", "truncated", "random_bytes", "npy_not_npz", "flipped_byte")
CSV_KINDS = ("latin1", "ragged", "text_cell", "nan_cell", "inf_cell", "empty_label", "nan_label", "huge_label",
             "header_only", "no_features", "random_bytes", "nul_byte")
# a flipped byte may land where the zip format does not look, random bytes may happen to parse:
# those need no error, only no traceback and no damage
LENIENT = {"flipped_byte", "random_bytes"}


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


@st.composite
def bad_npz(draw: st.DrawFn, kinds: tuple[str, ...] = NPZ_KINDS) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(2, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    row = draw(st.integers(0, n - 1))
    x = rng.random((n, D)).astype(np.float32)
    y = rng.integers(0, 3, n)
    if kind == "text_x":
        return kind, _npz_bytes(X=x.astype(str), y=y)
    if kind == "object_x":
        return kind, _npz_bytes(X=x.astype(object), y=y)
    if kind == "object_y":
        return kind, _npz_bytes(X=x, y=np.array([f"c{v}" for v in y], dtype=object))
    if kind == "complex_x":
        return kind, _npz_bytes(X=x + 1j, y=y)
    if kind in ("nan_x", "inf_x"):
        x[row, draw(st.integers(0, D - 1))] = np.nan if kind == "nan_x" else -np.inf
        return kind, _npz_bytes(X=x, y=y)
    if kind == "y_2d":
        return kind, _npz_bytes(X=x, y=np.eye(3)[y])
    if kind in ("y_nan", "y_inf"):
        yf = y.astype(np.float64)
        yf[row] = np.nan if kind == "y_nan" else np.inf
        return kind, _npz_bytes(X=x, y=yf)
    if kind == "y_huge":
        y[row] = draw(st.sampled_from([2_000_000_000, 2**40, 10**7]))
        return kind, _npz_bytes(X=x, y=y)
    if kind == "y_length":
        return kind, _npz_bytes(X=x, y=y[: n - 1])
    if kind == "no_x":
        return kind, _npz_bytes(features=x, y=y)
    if kind == "empty_x":
        return kind, _npz_bytes(X=np.zeros((0, D), np.float32), y=np.zeros(0, np.int64))
    if kind == "x_1d":
        return kind, _npz_bytes(X=x[:, 0], y=y)
    if kind == "x_5d":
        return kind, _npz_bytes(X=x.reshape(n, 1, 1, 2, 2)[:, None], y=y)
    good = _npz_bytes(X=x, y=y)
    if kind == "truncated":
        return kind, good[: draw(st.integers(0, len(good) - 1))]
    if kind == "random_bytes":
        return kind, draw(st.binary(max_size=200))
    if kind == "npy_not_npz":
        buf = io.BytesIO()
        np.save(buf, x)
        return kind, buf.getvalue()
    at = draw(st.integers(0, len(good) - 1))  # flipped_byte
    return kind, good[:at] + bytes([good[at] ^ (1 << draw(st.integers(0, 7)))]) + good[at + 1 :]


@st.composite
def bad_csv(draw: st.DrawFn, kinds: tuple[str, ...] = CSV_KINDS) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    row = draw(st.integers(0, n - 1))
    col = draw(st.integers(0, D - 1))
    header = [f"f{j}" for j in range(D)] + ["label"]
    rows = [[f"{v:.3f}" for v in rng.random(D)] + [f"c{rng.integers(0, 3)}"] for _ in range(n)]
    if kind == "random_bytes":
        return kind, draw(st.binary(max_size=200))
    if kind == "header_only":
        rows = []
    elif kind == "no_features":
        header, rows = ["label"], [[r[-1]] for r in rows]
    elif kind == "ragged":
        del rows[row][col]
    elif kind == "text_cell":
        rows[row][col] = draw(st.sampled_from(["abc", "", "1;5", "--", "0x10", "1 2", "true"]))
    elif kind in ("nan_cell", "inf_cell"):
        rows[row][col] = draw(st.sampled_from(["nan", "NaN"] if kind == "nan_cell" else ["inf", "-inf", "1e999"]))
    elif kind == "empty_label":
        rows[row][-1] = ""
    elif kind == "nan_label":
        rows = [[*r[:-1], str(i % 3)] for i, r in enumerate(rows)]
        rows[row][-1] = "nan"
    elif kind == "huge_label":
        rows = [[*r[:-1], str(i % 3)] for i, r in enumerate(rows)]
        rows[row][-1] = "2000000000"
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    if kind == "latin1":
        return kind, text.replace(rows[row][-1], rows[row][-1] + "\xe9", 1).encode("latin-1")
    if kind == "nul_byte":
        return kind, text.replace(rows[row][col], rows[row][col] + "\x00", 1).encode()
    return kind, text.encode()


def _snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                out[str(f)] = (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mlp trained for one epoch on a valid 4-feature table of three classes."""
    root = tmp_path_factory.mktemp("fuzz-model")
    rng = np.random.default_rng(0)
    lines = [",".join([*(f"f{j}" for j in range(D)), "label"])]
    lines += [",".join([*(f"{v:.3f}" for v in rng.random(D)), f"c{i % 3}"]) for i in range(30)]
    (root / "good.csv").write_text("\n".join(lines) + "\n")
    run = root / "run"
    assert main(["train", "--data", str(root / "good.csv"), "--model", "mlp", "--epochs", "1", "--quiet",
                 "--device", "cpu", "--val-split", "0", "--run-dir", str(run)]) == 0
    return run


def _run(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)  # an exception escaping main() fails the test with its traceback
    return rc, err.getvalue()


def _check_all_commands(kind: str, content: bytes, suffix: str, model_run: Path, root: Path) -> None:
    work = root / f"case{len(list(root.iterdir()))}"
    work.mkdir()
    bad = work / f"bad{suffix}"
    bad.write_bytes(content)
    commands = {
        "train": (["train", "--data", str(bad), "--model", "mlp", "--epochs", "1", "--quiet", "--device", "cpu",
                   "--val-split", "0", "--run-dir", str(work / "run")], work / "run"),
        "eval": (["eval", "--model-from", str(model_run), "--data", str(bad), "--device", "cpu",
                  "--output", str(work / "eval.json")], work / "eval.json"),
        "predict": (["predict", "--model-from", str(model_run), "--data", str(bad), "--device", "cpu",
                     "--output", str(work / "pred.csv")], work / "pred.csv"),
    }
    for name, (args, own) in commands.items():
        before = _snapshot(work, model_run)
        rc, err = _run(args)
        assert "Traceback" not in err, f"{name} on {kind}: {err}"
        after = {k: v for k, v in _snapshot(work, model_run).items() if not k.startswith(str(own))}
        assert after == before, f"{name} on {kind} changed files outside {own}"
        if kind in LENIENT and rc == 0:
            continue
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), f"{name} on {kind}: rc {rc}, {err!r}"
        assert not own.exists(), f"{name} on {kind} failed but wrote {own}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_npz())
def test_malformed_npz_files_end_in_one_error_line(case, model_run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder either
    _check_all_commands(*case, ".npz", model_run, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("case")] == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bad_csv())
def test_malformed_csv_files_end_in_one_error_line(case, model_run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _check_all_commands(*case, ".csv", model_run, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("case")] == []


@pytest.mark.parametrize("kind", NPZ_KINDS)
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_npz_kind_once(kind, data, model_run, tmp_path) -> None:
    """Each kind of breakage at least once, whatever the fuzz tests draw."""
    _check_all_commands(*data.draw(bad_npz((kind,))), ".npz", model_run, tmp_path)


@pytest.mark.parametrize("kind", CSV_KINDS)
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_csv_kind_once(kind, data, model_run, tmp_path) -> None:
    _check_all_commands(*data.draw(bad_csv((kind,))), ".csv", model_run, tmp_path)
