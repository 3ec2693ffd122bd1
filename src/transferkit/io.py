"""Safe, atomic file handling.

Every file transferkit writes goes to a temporary name in the same folder and
is renamed into place, so a crash leaves the old file or the new one, never a
half-written one. Everything it reads from a user is read safely: YAML with
the safe loader, foreign checkpoints with safetensors or
``torch.load(weights_only=True)``, archives only after every member has been
checked to stay inside the destination.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import TransferkitError


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    Raises a :class:`TransferkitError` (leaving any previous file intact) when
    the write fails, for example on a full disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise TransferkitError(
            f"could not write {path}: {exc.strerror or exc}; the previous file (if any) is intact"
        ) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _finite_json(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats replaced by None (JSON has no NaN: strict parsers refuse it)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (``allow_nan=False``): a NaN or infinite float is written as ``null``."""
    return write_text(path, json.dumps(_finite_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_predictions(
    path: str | Path, names: Sequence[Any], probs: torch.Tensor, classes: Sequence[str], name_column: str = "file"
) -> Path:
    """Write one CSV row per input: its name, the predicted class and one probability per class.

    The header is ``name_column, prediction, p_<class>...``; the prediction is
    ``classes[argmax_k probs[i, k]]`` (the first maximum on ties) and probabilities
    have six decimals. ``names[i]`` labels row ``i`` (a file name or an index).
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([name_column, "prediction", *[f"p_{c}" for c in classes]])
    for name, row in zip(names, probs.tolist(), strict=True):
        k = max(range(len(row)), key=row.__getitem__)
        w.writerow([name, classes[k], *[f"{v:.6f}" for v in row]])
    return write_text(path, buf.getvalue())


def json_line(obj: Any) -> str:
    """One line of strict JSON (NaN and infinities become null)."""
    return json.dumps(_finite_json(obj), allow_nan=False)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a torn last line is skipped on read)."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json_line(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise TransferkitError(f"could not append to {path}: {exc.strerror or exc}") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash
    return rows


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; python tags, non-UTF-8 text and non-mappings are refused."""
    from .config_validation import read_config

    return read_config(path)


def dump_yaml(path: str | Path, data: dict[str, Any]) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False))


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise TransferkitError(
            f"refused to load {path}: it is not a plain tensor checkpoint ({type(exc).__name__}). "
            "Only safetensors files and weights-only torch files are read; re-save it with "
            "torch.save(model.state_dict(), path) or as safetensors"
        ) from None


def safe_extract_zip(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` into ``dest`` after checking that no member escapes it."""
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise TransferkitError(f"{archive} is not a valid zip archive; delete it and download again") from None
    with zf:
        for member in zf.namelist():
            target = (dest / member).resolve()
            if target != dest and dest not in target.parents:
                raise TransferkitError(
                    f"refused to extract {archive}: member '{member}' would be written outside {dest}"
                )
        dest.mkdir(parents=True, exist_ok=True)
        zf.extractall(dest)
    return dest
