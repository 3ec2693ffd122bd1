"""Checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a folder (``checkpoints/last``, ``checkpoints/best``) with
``model.safetensors`` (loadable on its own), ``trainer.safetensors`` (method,
optimizer, scheduler and RNG tensors) and ``state.json``. It is written to a
temporary folder and swapped in with renames, so a crash leaves the previous
checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import TransferkitError


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Replace every tensor in a nested structure by ``{"__tensor__": key}``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, tensors, prefix), flatten(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [flatten(v, tensors, prefix) for v in obj]}
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return {"__float__": repr(obj)}
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save_checkpoint(folder: Path, model: Any, trainer_state: dict[str, Any], info: dict[str, Any]) -> None:
    """Write a checkpoint folder atomically (temporary folder, then renames)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save(tmp / "model.safetensors", extra={"checkpoint": info})
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten(trainer_state, tensors)
        save_file(tensors, str(tmp / "trainer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"info": info, "state": skeleton}))
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, SafetensorError) as exc:  # e.g. no space left on device
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.exists() and old.exists():
            os.replace(old, folder)
        raise TransferkitError(
            f"could not write checkpoint {folder}: {_reason(exc)}; the previous checkpoint is intact "
            "(free space or fix the folder, then rerun with --resume)"
        ) from None


def _reason(exc: BaseException) -> str:
    """One line for an OSError or a safetensors error (which wraps the OS message)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    found = re.search(r'message: "([^"]+)"', text)
    return found.group(1) if found else (text.splitlines()[0] if text else type(exc).__name__)


def checkpoint_folder(folder: Path) -> Path | None:
    """The folder to read: ``folder``, or its ``.old`` twin left by a crash mid-swap."""
    folder = Path(folder)
    if (folder / "state.json").is_file():
        return folder
    old = folder.with_name(folder.name + ".old")
    if (old / "state.json").is_file():
        return old
    return None


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(trainer_state, info)`` of a checkpoint folder."""
    found = checkpoint_folder(folder)
    if found is None:
        raise TransferkitError(f"no checkpoint in {folder}; nothing to resume from (start without --resume)")
    blob = json.loads((found / "state.json").read_text())
    tensors = load_file(str(found / "trainer.safetensors"))
    return unflatten(blob["state"], tensors), blob["info"]
