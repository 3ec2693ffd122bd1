"""Run folders: ``runs/<name>/`` holds everything needed to resume and compare.

Layout: ``config.yaml`` (the resolved configuration), ``metrics.jsonl`` (one
line per epoch), ``checkpoints/{last,best}/``, ``summary.json``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import TransferkitError
from ..io import append_jsonl, dump_yaml, read_jsonl, write_json, write_text


class RunDir:
    """A run folder that refuses to overwrite a previous run by accident."""

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        exists = self.path.exists() and any(self.path.iterdir())
        if resume and overwrite:
            raise TransferkitError("--resume and --overwrite contradict each other; choose one")
        if exists and not (resume or overwrite):
            raise TransferkitError(
                f"run folder {self.path} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --run-dir/--name"
            )
        if resume and not (self.path / "checkpoints").is_dir():
            raise TransferkitError(f"cannot resume: {self.path} has no checkpoints; start it without --resume")
        if overwrite and exists and is_main:
            if not (self.path / "config.yaml").exists() and not (self.path / "metrics.jsonl").exists():
                raise TransferkitError(f"refusing to overwrite {self.path}: it does not look like a transferkit run folder")
            shutil.rmtree(self.path)
        if is_main:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def save_config(self, config: dict[str, Any]) -> None:
        if self.is_main:
            dump_yaml(self.path / "config.yaml", config)

    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            append_jsonl(self.metrics_file, record)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_file) if self.metrics_file.exists() else []

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop lines written after the checkpoint we resume from."""
        if not self.is_main or not self.metrics_file.exists():
            return
        import json

        keep = [r for r in self.metrics() if r.get("epoch", -1) <= last_epoch]
        write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in keep))

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.path / "summary.json", summary)
