"""Run folders: ``runs/<name>/`` holds everything needed to resume and compare.

Layout: ``config.yaml`` (the resolved configuration), ``metrics.jsonl`` (one
line per epoch), ``checkpoints/{last,best}/``, ``summary.json``.

Nothing is written to a run folder until the run is known to start (:meth:`RunDir.start`,
called when training begins, after a resume was checked): a command that fails on a typo or
an incompatible checkpoint leaves no folder behind and never rewrites another run's config.
A folder holding only the ``config.yaml`` of a run that never started is reused.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import TransferkitError
from ..io import append_jsonl, dump_yaml, json_line, read_jsonl, write_json, write_text


def folder_state(path: Path) -> str:
    """``missing`` (or empty), ``never-started`` (only the config.yaml of a run that failed before
    training), ``run`` (a transferkit run) or ``foreign`` (something else, e.g. a file)."""
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "foreign"
    names = {p.name for p in path.iterdir()}
    if not names:
        return "missing"
    if names == {"config.yaml"}:
        return "never-started"
    if names & {"config.yaml", "metrics.jsonl", "checkpoints", "summary.json", "model.safetensors", "source"}:
        return "run"
    return "foreign"


def check_writable(path: Path) -> None:
    """Refuse a run folder that cannot be created or written, before anything is trained."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise TransferkitError(f"cannot create run folder {path}: {existing} is a file; choose another --run-dir")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_fs(existing) else "permission denied"
        raise TransferkitError(f"cannot create run folder {path}: {existing} is not writable ({why}); choose another --run-dir")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


class RunDir:
    """A run folder that refuses to overwrite a previous run by accident."""

    # a follower rank (distributed) skips __init__: these defaults make it a no-op writer
    _files: dict[str, Any] | None = None
    _started = True
    _clear = False

    def __init__(
        self, path: str | Path, resume: bool = False, overwrite: bool = False, is_main: bool = True, defer: bool = False
    ):
        """Check the folder and create it; with ``defer`` (the command line), write nothing until
        :meth:`start`, called when the run is known to start."""
        self.path = Path(path)
        self.is_main = is_main
        state = folder_state(self.path)
        if resume and overwrite:
            raise TransferkitError("--resume and --overwrite contradict each other; choose one")
        if state == "run" and not (resume or overwrite):
            raise TransferkitError(
                f"run folder {self.path} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir"
            )
        if resume and not (self.path / "checkpoints").is_dir():
            never = " (a run that never started)" if state == "never-started" else ""
            raise TransferkitError(f"cannot resume: {self.path} has no checkpoints{never}; start it without --resume")
        if overwrite and state == "foreign":
            raise TransferkitError(f"refusing to overwrite {self.path}: it does not look like a transferkit run folder")
        if state == "foreign" and not resume:
            raise TransferkitError(
                f"run folder {self.path} already exists and is not a transferkit run folder; choose another --run-dir"
            )
        check_writable(self.path)
        if state == "never-started" and not resume and is_main:
            print(f"note: reusing {self.path}: it holds only the config.yaml of a run that never started", file=sys.stderr)
        self._clear = bool(overwrite and state in ("run", "never-started"))
        self._started = False
        self._files = {}
        if not defer:
            self.start()

    def start(self) -> None:
        """Create the folder (replacing the old run with --overwrite) and write the config; once."""
        if self._started or not self.is_main:
            return
        try:
            if self._clear:
                shutil.rmtree(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            for name, obj in (self._files or {}).items():
                dump_yaml(self.path / name, obj)
        except OSError as exc:
            raise TransferkitError(f"cannot create run folder {self.path}: {exc.strerror or exc}; choose another --run-dir") from None
        self._started = True

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def save_config(self, config: dict[str, Any]) -> None:
        """The resolved configuration, ``config.yaml``."""
        self.save_yaml("config.yaml", dict(config))

    def save_yaml(self, name: str, obj: Any) -> None:
        """A YAML file of the run (``config.yaml``, ``meta.yaml``): written now if the run has started,
        else by :meth:`start`."""
        self._files = {**(self._files or {}), name: obj}
        if self.is_main and self._started:
            dump_yaml(self.path / name, obj)

    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            self.start()
            append_jsonl(self.metrics_file, record)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_file) if self.metrics_file.exists() else []

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop lines written after the checkpoint we resume from."""
        if not self.is_main or not self.metrics_file.exists():
            return
        keep = [r for r in self.metrics() if r.get("epoch", -1) <= last_epoch]
        write_text(self.metrics_file, "".join(json_line(r) + "\n" for r in keep))

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.is_main:
            self.start()
            write_json(self.path / "summary.json", summary)
