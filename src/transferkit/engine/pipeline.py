"""The one run pipeline: a method and a batch stream in, the best model and a run folder out.

Every family's recipe (``finetune``, ``distill``, ``adapt`` and its source stage,
``meta_train``) ends here::

    stream = index_stream(len(data), batch_size, make_batch, device)   # or any BatchStream
    outcome = train(method, stream, config, validate=..., run=run, resume=resume)
    write_summary(run, family="finetune", method="full", outcome=outcome, metrics={...})

:func:`train` builds the :class:`~transferkit.engine.Trainer`, resumes it when asked, fits,
and **always** puts the best epoch's weights back into the model, with or without a run folder
(the best weights are held in memory by :class:`KeepBest`; a resumed run whose best epoch came
before the resume reads them from ``checkpoints/best``). With a run folder it also writes
``model.safetensors`` at the folder's top: the chosen model with its preprocessing and classes,
so any run of any family can be given as ``--init``, ``--model-from`` or ``--teacher``.

Step budgets: ``TrainConfig.steps`` fixes the number of optimizer steps whatever the data size;
the batch stream is then repeated as often as needed and each of the ``epochs`` validation
periods is ``ceil(steps / epochs)`` steps long.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..data.tensors import index_batches
from .callbacks import Callback, ProgressBar
from .loop import BatchesFn, FitResult, ScoreFn, TrainConfig, Trainer, ValidateFn
from .method import Method
from .run import RunDir
from .state import checkpoint_folder

SUMMARY_SCHEMA = 1
FEW_STEPS = 100  # below this many optimizer steps in all, a run says how to train longer


@dataclass
class BatchStream:
    """One epoch of batches, ``batches(epoch, generator)``, and how many steps one pass gives."""

    batches: BatchesFn
    steps_per_pass: int

    def forever(self) -> BatchStream:
        """The same batches, passes repeated without end (for budgets longer than one pass)."""
        inner = self.batches

        def endless(epoch: int, gen: torch.Generator) -> Iterator[Any]:
            while True:
                yield from inner(epoch, gen)

        return BatchStream(endless, self.steps_per_pass)


def index_stream(
    n: int,
    batch_size: int,
    make_batch: Callable[[torch.Tensor, torch.Generator], Any],
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> BatchStream:
    """Shuffled index batches over ``n`` examples, each turned into a batch by ``make_batch(idx, gen)``.

    The data stay where they are (on the compute device); a batch is an index slice, and any
    augmentation in ``make_batch`` runs on the whole batch.
    """
    drop = drop_last and n > batch_size

    def batches(epoch: int, gen: torch.Generator) -> Iterator[Any]:
        for idx in index_batches(n, batch_size, True, gen, drop_last=drop, device=device):
            yield make_batch(idx, gen)

    steps = n // batch_size if drop else -(-n // batch_size)
    return BatchStream(batches, max(1, steps))


class KeepBest(Callback):
    """Hold the weights of the best-scoring epoch in memory (with or without a run folder)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if record.get("best"):
            self.state = {k: v.detach().clone() for k, v in trainer.method.model.state_dict().items()}


@dataclass
class Outcome:
    """What :func:`train` returns: the trainer (its method holds the best weights) and the fit result."""

    trainer: Trainer
    result: FitResult

    @property
    def method(self) -> Method:
        return self.trainer.method

    def __iter__(self) -> Iterator[Any]:  # ``trainer, result = train(...)``
        return iter((self.trainer, self.result))


def budget(config: TrainConfig, stream: BatchStream) -> tuple[TrainConfig, BatchStream]:
    """Resolve ``config.steps`` / ``config.steps_per_epoch`` against one pass of the stream."""
    if config.steps is not None:
        config = replace(config, steps_per_epoch=max(1, math.ceil(config.steps / config.epochs)))
    if config.steps_per_epoch is not None and config.steps_per_epoch > stream.steps_per_pass:
        stream = stream.forever()
    return config, stream


def train(
    method: Method,
    stream: BatchStream,
    config: TrainConfig,
    *,
    validate: ValidateFn | None = None,
    score: ScoreFn | None = None,
    select_name: str = "val_acc",
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
    callbacks: list[Callback] | None = None,
    resume: bool = False,
    val_label: str = "val acc",
) -> Outcome:
    """Fit ``method`` on ``stream`` and restore the best epoch's weights into ``method.model``.

    ``callbacks=None`` shows a progress bar (when ``verbose``); ``val_label`` names ``val["acc"]``
    in the per-epoch lines (adaptation: the held-out *source* accuracy).
    """
    config, stream = budget(config, stream)
    keep = KeepBest()
    shown = ([ProgressBar()] if verbose else []) if callbacks is None else list(callbacks)
    trainer = Trainer(
        method, config, stream.batches, stream.steps_per_pass, validate=validate, score=score,
        select_name=select_name, run=run, device=device, callbacks=[*shown, keep], verbose=verbose,
    )
    trainer.val_label = val_label
    total = trainer.steps_per_epoch * config.epochs
    if verbose and trainer.is_main and total < FEW_STEPS and config.steps is None:
        print(f"note: {total} optimizer steps in all ({config.epochs} epochs of {trainer.steps_per_epoch}); "
              "pass --steps N to set the budget in steps whatever the data size", file=sys.stderr)
    if resume and run is not None and run.checkpoints.is_dir():
        trainer.resume()
    if run is not None:
        run.start()  # the run is known to start: create the folder, write config.yaml
    result = trainer.fit()
    if keep.state is not None:
        method.model.load_state_dict(keep.state)
    elif run is not None:
        load_best(trainer)
    if run is not None and run.is_main and hasattr(method.model, "save"):
        method.model.save(run.path / "model.safetensors", {"best_epoch": result.best_epoch, "select_by": trainer.select_name})
    return Outcome(trainer, result)


def load_best(trainer: Trainer) -> None:
    """Put the weights of the run folder's ``checkpoints/best`` back into the model."""
    if trainer.run is None:
        return
    folder = checkpoint_folder(trainer.run.checkpoints / "best")
    if folder is not None:
        from ..models import read_checkpoint

        state, _ = read_checkpoint(folder / "model.safetensors")
        trainer.method.model.load_state_dict(state)


def summary(
    family: str,
    method: str,
    outcome: Outcome | None = None,
    metrics: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The run summary every family writes (schema ``SUMMARY_SCHEMA``, documented in docs/run-summary.md).

    ``metrics`` holds the run's numbers, each a flat ``name: value`` (``test_acc``,
    ``target_test_acc``, ``val_acc``, ...); ``headline`` (an ``extra`` key) names the one a
    report shows first. ``val`` holds the validation metrics of the chosen epoch.
    Family-specific details go in other ``extra`` keys.
    """
    out: dict[str, Any] = {"schema": SUMMARY_SCHEMA, "family": family, "method": method}
    if outcome is not None:
        r = outcome.result
        out["selection"] = {"by": outcome.trainer.select_name, "epoch": r.best_epoch, "score": r.best_score}
        out["epochs_run"] = len(r.history)
        out["steps"] = outcome.trainer.global_step
        out["stopped_early"] = r.stopped_early
        out["wall_s"] = r.wall_s
        best = next((h for h in r.history if h.get("epoch") == r.best_epoch), r.last)
        if best.get("val"):
            out["val"] = best["val"]  # validation metrics of the chosen (best) epoch
    out["metrics"] = dict(metrics or {})
    out["headline"] = None
    out.update(extra)
    return out
