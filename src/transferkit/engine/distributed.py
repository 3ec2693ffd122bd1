"""Data-parallel training through PyTorch's own distributed engine (``torchrun``).

How a run scales to ``N`` processes (one per CPU socket share or GPU):

* :func:`init_from_env` joins the process group from the variables ``torchrun`` sets
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): backend
  ``nccl`` on CUDA, ``gloo`` on CPU.
* Every rank builds the same *global* batch (the epoch generator is seeded identically on
  all ranks, so the permutation and the augmentation are shared) and keeps its slice along
  dimension 0 (:func:`split_leading`). The :class:`~transferkit.engine.Trainer` does this;
  a family whose batches are not "one row per example" (for example a single few-shot
  episode) passes its own ``batch_split``.
* After ``backward`` the gradients are all-reduced, each rank weighted by its share of the
  global batch, ``g = sum_r (n_r / N) g_r`` (:func:`all_reduce_gradients`): for losses that
  are means over examples this is exactly the single-process gradient of the global batch.
  A :class:`~transferkit.engine.Method` is an ``nn.Module`` whose ``forward`` is not used,
  so an explicit all-reduce is simpler and more honest than wrapping it in
  ``DistributedDataParallel``.
* Buffers (batch-norm running statistics) are broadcast from rank 0 after every step, as
  DDP's ``broadcast_buffers`` does, so all ranks hold the same model.
* Only rank 0 writes the run folder and prints; every rank validates (same numbers), so
  early stopping and best-checkpoint decisions agree without extra messages.

What is *not* identical to one process: batch statistics (batch norm, MMD, CORAL, BSS, RKD)
are computed on each rank's slice, as in any data-parallel training without synchronised
batch norm.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..errors import TransferkitError
from .run import RunDir

BatchSplit = Callable[[Any, int, int], tuple[Any, float]]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes and its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True inside a process started by ``torchrun`` / ``torch.distributed.run``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """The current process group (a single process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    return info().is_main


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group ``torchrun`` prepared; a no-op outside ``torchrun``.

    Args:
        device: the ``--device`` option; ``cuda`` (or ``auto`` with a GPU) selects NCCL and
            this process's GPU ``LOCAL_RANK``, anything else gloo on CPU.
        timeout_s: how long a collective may wait for a missing rank.
    """
    if not launched_by_torchrun():
        return info()
    if not dist.is_available():
        raise TransferkitError("this torch build has no torch.distributed; run without torchrun/--nproc")
    if dist.is_initialized():
        return info()
    use_cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise TransferkitError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                "lower --nproc_per_node"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransferkitError(f"could not join the {backend} process group: {first}") from None
    return info()


def shutdown() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable object made by transferkit itself)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ------------------------------------------------------------------ batches
def _leading(batch: Any) -> int | None:
    """Leading size of the first tensor (depth first) in a nested batch."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = _leading(item)
            if n is not None:
                return n
    return None


def _slice(batch: Any, rank: int, world: int) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            return batch
        return torch.tensor_split(batch, world)[rank]
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):  # e.g. a meta-batch of tasks
        return dataclasses.replace(batch, **{f.name: _slice(getattr(batch, f.name), rank, world) for f in dataclasses.fields(batch) if f.init})
    if isinstance(batch, dict):
        return {k: _slice(v, rank, world) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_slice(v, rank, world) for v in batch)
    if isinstance(batch, list):
        return [_slice(v, rank, world) for v in batch]
    return batch


def split_leading(batch: Any, rank: int, world: int) -> tuple[Any, float]:
    """This rank's slice of a global batch, and its share of the examples.

    Every tensor in a (nested dict / list / tuple / dataclass) batch is cut into ``world``
    nearly equal contiguous pieces along dimension 0 (``torch.tensor_split``): examples, or
    the tasks of a meta-learning :class:`~transferkit.meta.episodes.Episode`. The share
    ``n_r / N`` is taken from the first tensor. A rank that would get no examples (a global
    batch smaller than the number of processes) computes on the whole batch with share 0, so
    its gradient does not count. A batch without tensors is computed whole on every rank
    (share ``1 / world``).
    """
    if world <= 1:
        return batch, 1.0
    n = _leading(batch)
    if n is None:
        return batch, 1.0 / world
    local_n = _piece(n, rank, world)
    if local_n == 0:
        return batch, 0.0
    return _slice(batch, rank, world), local_n / n


def _piece(n: int, rank: int, world: int) -> int:
    """Size of piece ``rank`` of ``torch.tensor_split`` of ``n`` items into ``world`` pieces."""
    q, r = divmod(n, world)
    return q + (1 if rank < r else 0)


def no_split(batch: Any, rank: int, world: int) -> tuple[Any, float]:
    """Every rank computes on the whole batch (share ``1/world``): for batches that cannot be cut."""
    return batch, 1.0 / world


# ---------------------------------------------------------------- gradients
def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], share: float) -> None:
    """``p.grad <- sum_r share_r * p.grad_r`` over all ranks, in one flat all-reduce per dtype.

    Parameters without a gradient on this rank (unused in its slice) contribute zeros, so
    every rank takes part in the same collective.
    """
    params = [p for p in params if p.requires_grad]
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for group in by_dtype.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
        flat = _flat(grads) * share
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


def all_reduce_values(values: torch.Tensor, share: float) -> torch.Tensor:
    """Weighted sum over ranks of a vector of loss values (the global-batch mean)."""
    out = values.detach().to(torch.float64) * share
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_module(module: torch.nn.Module, parameters: bool = True, buffers: bool = True) -> None:
    """Copy rank 0's parameters and/or buffers into every rank's ``module``."""
    if not is_active():
        return
    with torch.no_grad():
        tensors: list[torch.Tensor] = []
        if parameters:
            tensors += list(module.parameters())
        if buffers:
            tensors += [b for b in module.buffers() if b.dtype.is_floating_point or b.dtype in (torch.int64, torch.int32)]
        for t in tensors:
            dist.broadcast(t.data, src=0)


# ---------------------------------------------------------------- run folder
class FollowerRunDir(RunDir):
    """The run folder as seen by ranks other than 0: same paths, writes nothing, checks nothing.

    Rank 0 performs every check (exists, resume, overwrite) and creates the folder; the
    others learn the outcome from it (:func:`open_run_dir`).
    """

    def __init__(self, path: str | Path):  # deliberately skips RunDir's checks
        self.path = Path(path)
        self.is_main = False


def open_run_dir(path: str | Path, resume: bool = False, overwrite: bool = False, defer: bool = False) -> RunDir:
    """A :class:`RunDir` that only rank 0 checks and creates; the same error on every rank.

    Outside distributed training this is ``RunDir(path, resume, overwrite, defer=defer)``.
    """
    if not is_active():
        return RunDir(path, resume=resume, overwrite=overwrite, defer=defer)
    error: str | None = None
    run: RunDir | None = None
    if is_main():
        try:
            run = RunDir(path, resume=resume, overwrite=overwrite, is_main=True, defer=defer)
        except TransferkitError as exc:
            error = str(exc)
    error = broadcast_object(error)
    if error is not None:
        raise TransferkitError(error)
    return run if run is not None else FollowerRunDir(path)
