"""The one training loop.

Every family trains through :class:`Trainer`: a method turns a batch into
named losses; the trainer steps the optimizer and schedule, validates each
epoch, picks the best checkpoint by a declared score, logs ``metrics.jsonl``,
checkpoints (safetensors + JSON state), resumes, stops early, and stops on a
non-finite loss keeping the last good checkpoint.

Reproducibility: the data order and augmentation of epoch ``e`` come from a
generator seeded with ``(seed, e)``, and the global RNG state is saved at each
epoch end, so a run resumed from its last checkpoint replays exactly what an
uninterrupted run would have done.

Distributed data parallel (``torchrun``, see :mod:`transferkit.engine.distributed`): when a
process group is initialised, each rank keeps its slice of every global batch
(``batch_split``), gradients and logged losses are all-reduced weighted by each rank's share
of the batch, buffers follow rank 0, and only rank 0 writes the run folder.

Crash safety: ``checkpoints/best`` is written before ``checkpoints/last``, so a run killed
between the two resumes from the previous epoch and rewrites both; it never resumes with a
``best`` folder older than the ``best_epoch`` its state records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist

from ..errors import NonFiniteLossError, TransferkitError
from ..options import check, option
from . import distributed as ddp
from .callbacks import Callback, ProgressBar
from .method import Method, StepInfo
from .run import RunDir
from .runtime import resolve_device
from .state import checkpoint_folder, load_checkpoint, save_checkpoint

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every family (each field is also a command-line option)."""

    epochs: int = option(10, "Epochs: validation and checkpoint periods (one pass over the data each, unless --steps).", min=1)
    steps: int | None = option(None, "Total optimizer steps, whatever the data size (each epoch is then steps/epochs long; data passes repeat).", min=1)
    lr: float = option(1e-3, "Learning rate.", min=0, min_open=True)
    optimizer: str = option("adam", "Optimizer.", choices=OPTIMIZERS)
    momentum: float = option(0.9, "SGD momentum.", min=0, max=1)
    weight_decay: float = option(0.0, "Weight decay.", min=0)
    schedule: str = option("none", "Learning-rate schedule.", choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "Linear warm-up length in epochs.", min=0)
    step_epochs: int = option(30, "Epochs between decays with --schedule step.", min=1)
    gamma: float = option(0.1, "Decay factor for --schedule step.", min=0, max=1)
    grad_clip: float | None = option(None, "Clip the gradient norm.", min=0, min_open=True)
    patience: int | None = option(None, "Stop after this many epochs without improvement.", min=1)
    amp: bool = option(False, "bfloat16 mixed precision (CUDA only; ignored elsewhere).")
    seed: int = option(0, "Random seed.")
    steps_per_epoch: int | None = option(None, "Optimizer steps per epoch (default: one pass over the data).", min=1, hidden=True)
    eval_batch_size: int = option(1024, "Batch size of evaluation forwards.", min=1, hidden=True)

    def validate(self) -> None:
        check(self)


BatchesFn = Callable[[int, torch.Generator], Iterable[Any]]
ValidateFn = Callable[[Method], dict[str, Any]]
ScoreFn = Callable[[Method, dict[str, Any]], float]


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if cfg.schedule == "step":
            return cfg.gamma ** ((step // steps_per_epoch) // max(1, cfg.step_epochs))
        return 1.0

    return f


def build_optimizer(method: Method, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [g for g in method.param_groups(cfg.lr) if g["params"]]
    if not groups:
        raise TransferkitError("nothing to train: every parameter is frozen")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@dataclass
class FitResult:
    best_score: float | None
    best_epoch: int | None
    last: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    wall_s: float = 0.0


class Trainer:
    """Run ``method`` over ``train_batches(epoch, generator)`` for ``config.epochs``.

    Args:
        method: the method to train (its ``model`` is what gets checkpointed).
        config: optimisation settings.
        train_batches: returns the batches of one epoch; must draw randomness from the generator.
        steps_per_epoch: number of batches per epoch (for schedules and the progress bar).
        validate: computes validation metrics each epoch (default: none).
        score: the number the best checkpoint maximises, from the method and the validation
            metrics (default: ``val.acc`` when there is validation, else the negative train loss).
        select_name: what the score is called in logs and the summary.
        run: the run folder (``None`` trains without writing anything).
        batch_split: under distributed training, ``(batch, rank, world) -> (local batch, share)``
            (default :func:`~transferkit.engine.distributed.split_leading`: every tensor cut along
            dimension 0); unused in a single process.
    """

    val_label = "val acc"  # how per-epoch lines name val["acc"] (adaptation: "source-val acc")

    def __init__(
        self,
        method: Method,
        config: TrainConfig,
        train_batches: BatchesFn,
        steps_per_epoch: int,
        validate: ValidateFn | None = None,
        score: ScoreFn | None = None,
        select_name: str = "val_acc",
        run: RunDir | None = None,
        device: str | torch.device = "cpu",
        callbacks: list[Callback] | None = None,
        verbose: bool = True,
        batch_split: ddp.BatchSplit | None = None,
    ):
        config.validate()
        self.method = method
        self.config = config
        self.train_batches = train_batches
        self.steps_per_epoch = config.steps_per_epoch or steps_per_epoch
        self.validate = validate
        self.score_fn = score
        self.select_name = select_name if (score or validate) else "train_loss"
        self.run = run
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.is_main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
        self.dist = ddp.info()
        self.batch_split = batch_split or ddp.split_leading
        self.callbacks = callbacks if callbacks is not None else [ProgressBar()]
        self.verbose = verbose
        self.method.to(self.device)
        if self.dist.active:
            ddp.broadcast_module(self.method)  # every rank starts from rank 0's weights
        self.optimizer = build_optimizer(method, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, self.steps_per_epoch))
        self.start_epoch = 0
        self.global_step = 0
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def _checkpoint(self, name: str, epoch: int) -> None:
        if self.run is None or not self.is_main:
            return
        info = {
            "epoch": epoch,
            "global_step": self.global_step,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "select_by": self.select_name,
        }
        self.run.start()
        save_checkpoint(self.run.checkpoints / name, self.method.model, self.state(), info)

    def resume(self) -> None:
        """Restore everything from ``checkpoints/last`` of the run folder."""
        if self.run is None:
            raise TransferkitError("resume needs a run folder")
        state, info = load_checkpoint(self.run.checkpoints / "last")
        own = self.method.state_dict()
        saved = state["method"]
        differ = [k for k in own if k not in saved] + [k for k in saved if k not in own]
        differ += [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
        try:
            if differ:
                raise ValueError
            self.method.load_state_dict(saved)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError):
            what = f" (first difference: {differ[0]})" if differ else ""
            raise TransferkitError(
                f"cannot resume {self.run.path}: its checkpoint was written by another model, method or optimizer{what}; "
                "resume with the run's own options (see its config.yaml) or start a new --run-dir"
            ) from None
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.start_epoch = int(info["epoch"]) + 1
        self.global_step = int(info["global_step"])
        self.best_score = info["best_score"]
        self.best_epoch = info["best_epoch"]
        self.bad_epochs = int(info["bad_epochs"])
        self.run.truncate_metrics(int(info["epoch"]))
        ddp.barrier()  # other ranks read metrics.jsonl after rank 0 truncated it
        self.history = [r for r in self.run.metrics() if "epoch" in r]

    # ------------------------------------------------------------- loop
    def _step(self, batch: Any, epoch: int) -> dict[str, float]:
        info = StepInfo(epoch, self.global_step, self.config.epochs * self.steps_per_epoch)
        use_amp = self.config.amp and self.device.type == "cuda"
        share = 1.0
        if self.dist.active:
            batch, share = self.batch_split(batch, self.dist.rank, self.dist.world_size)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            losses = self.method.training_losses(batch, info)
        total = cast(torch.Tensor, sum(losses.values()))  # a method returns at least one loss
        reduced: torch.Tensor | None = None
        if self.dist.active:  # the global-batch losses, identical on every rank (so is the NaN check)
            values = torch.stack([total.detach().float(), *(v.detach().float() for v in losses.values())])
            reduced = ddp.all_reduce_values(values, share).cpu()
        if not torch.isfinite(total if reduced is None else reduced[0]):
            last = checkpoint_folder(self.run.checkpoints / "last") if self.run else None
            kept = f"the last good checkpoint is kept at {last}" if last else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                f"loss became {float(total.detach())} at epoch {epoch + 1}, step {self.global_step}; training stopped and "
                f"{kept}. Lower --lr or set --grad-clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.dist.active:
            ddp.all_reduce_gradients(self.method.parameters(), share)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        if reduced is not None:
            ddp.broadcast_module(self.method, parameters=False)  # batch-norm statistics follow rank 0
            out = {k: float(v) for k, v in zip(losses, reduced[1:].tolist(), strict=True)}
            out["loss"] = float(reduced[0])
            return out
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["loss"] = float(total.detach())
        return out

    def fit(self) -> FitResult:
        t0 = time.perf_counter()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        stopped = False
        for epoch in range(self.start_epoch, self.config.epochs):
            te = time.perf_counter()
            self.method.train()
            self.method.on_epoch_start(epoch)
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch, self.steps_per_epoch)
            sums: dict[str, float] = {}
            n = 0
            gen = epoch_generator(self.config.seed, epoch)
            batches = iter(self.train_batches(epoch, gen))
            for _ in range(self.steps_per_epoch):  # never draws (or augments) a batch it will not use
                batch = next(batches, None)
                if batch is None:
                    break
                losses = self._step(batch, epoch)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                for cb in self.callbacks:
                    cb.on_step_end(self, losses)
            if n == 0:
                raise TransferkitError("an epoch produced no batches: is the training set empty?")
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": self.global_step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "train": {k: v / n for k, v in sums.items()},
            }
            self.method.eval()
            if self.validate is not None:
                record["val"] = self.validate(self.method)
            if self.score_fn is not None:
                score = float(self.score_fn(self.method, record.get("val", {})))
            elif "val" in record and "acc" in record["val"]:
                score = float(record["val"]["acc"])
            else:
                score = -record["train"]["loss"]
            record["score"] = score
            record["time_s"] = time.perf_counter() - te
            improved = self.best_score is None or score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            else:
                self.bad_epochs += 1
            record["best"] = improved
            self.history.append(record)
            if self.run is not None:
                try:
                    self.run.log(record)
                except OSError as exc:  # disk full: stop with one line; the last checkpoint is untouched
                    raise TransferkitError(
                        f"could not append to {self.run.metrics_file}: {exc.strerror or exc}; training stopped, "
                        "the last checkpoint is intact (free space, then rerun with --resume)"
                    ) from None
            if improved:  # best first: a crash between the two leaves a consistent pair
                self._checkpoint("best", epoch)
            self._checkpoint("last", epoch)
            for cb in self.callbacks:
                cb.on_epoch_end(self, record)
            if self.config.patience is not None and self.bad_epochs >= self.config.patience:
                stopped = True
                break
        for cb in self.callbacks:
            cb.on_fit_end(self)
        ddp.barrier()  # rank 0 has finished writing checkpoints before anyone reads them
        last = self.history[-1] if self.history else {}
        return FitResult(self.best_score, self.best_epoch, last, self.history, stopped, time.perf_counter() - t0)
