"""Callbacks: things that watch training without being part of it."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


class Callback:
    def on_fit_start(self, trainer: Any) -> None: ...
    def on_epoch_start(self, trainer: Any, epoch: int, steps: int) -> None: ...
    def on_step_end(self, trainer: Any, losses: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None: ...
    def on_fit_end(self, trainer: Any) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr, with the running loss; one line per epoch when not a terminal."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar: Any = None

    def on_epoch_start(self, trainer: Any, epoch: int, steps: int) -> None:
        if self.enabled and trainer.is_main:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{trainer.config.epochs}", leave=False, file=sys.stderr)

    def on_step_end(self, trainer: Any, losses: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{losses['loss']:.4f}", refresh=False)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if trainer.is_main and trainer.verbose:
            parts = [f"epoch {record['epoch'] + 1}/{trainer.config.epochs}", f"loss {record['train']['loss']:.4f}"]
            if "acc" in record.get("val", {}):
                parts.append(f"{getattr(trainer, 'val_label', 'val acc')} {record['val']['acc']:.2f}%")
            if "score" in record and trainer.select_name not in ("val_acc", "train_loss"):
                parts.append(f"{trainer.select_name} {record['score']:.4f}")
            parts.append(f"{record['time_s']:.1f}s")
            print("  ".join(parts), file=sys.stderr, flush=True)
