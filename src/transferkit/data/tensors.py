"""In-memory tensor datasets and index-slicing batch iterators.

Small and medium datasets live as one tensor on the compute device; a batch is
an index slice of it. There is no per-sample Python anywhere in here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ..errors import TransferkitError


@dataclass
class TensorData:
    """Inputs ``x`` (N, ...) float32, labels ``y`` (N,) int64 or ``None``, class names."""

    x: Tensor
    y: Tensor | None
    classes: list[str] = field(default_factory=list)
    name: str = "data"
    # what the loader did to the files' pixels beyond reading them, which a model trained on these
    # inputs expects again: {"invert": True} when ink was made 1 (Omniglot). Saved with the model.
    preprocess: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.y is not None:
            if self.y.shape[0] != self.x.shape[0]:
                raise TransferkitError(
                    f"{self.name}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels"
                )
            if self.y.dim() != 1:
                raise TransferkitError(
                    f"{self.name}: labels must be one class index per example, shape (N,); got shape {tuple(self.y.shape)}"
                )
            if self.y.is_floating_point() and len(self.y) and not bool((torch.isfinite(self.y) & (self.y == self.y.round())).all()):
                raise TransferkitError(f"{self.name}: labels must be whole class indices, not NaN, infinite or fractional numbers")
            self.y = self.y.long()
            if not self.classes and len(self.y):
                check_label_count(int(self.y.max()), len(self.y), self.name)
                self.classes = [str(i) for i in range(int(self.y.max()) + 1)]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    def to(self, device: torch.device | str) -> TensorData:
        y = None if self.y is None else self.y.to(device)
        return replace(self, x=self.x.to(device), y=y)

    def subset(self, index: Tensor) -> TensorData:
        index = index.to(self.x.device)
        y = None if self.y is None else self.y[index]
        return replace(self, x=self.x[index], y=y)

    def unlabeled(self) -> TensorData:
        return replace(self, y=None)

    def require_labels(self, what: str) -> Tensor:
        if self.y is None:
            raise TransferkitError(f"{self.name} has no labels, but {what} needs them")
        return self.y

    def class_counts(self) -> Tensor:
        y = self.require_labels("class counts")
        return torch.bincount(y, minlength=self.num_classes)


MAX_SPARSE_CLASSES = 100_000
"""Integer labels may go up to ``max(MAX_SPARSE_CLASSES, N)``: each value up to the largest is a class."""


def check_label_count(largest: int, n: int, name: str, where: str = "") -> None:
    """Refuse integer labels that would make more classes than ``max(MAX_SPARSE_CLASSES, n)``.

    Integer labels are class indices: label ``k`` means ``k + 1`` classes at least (one name and
    one head output each), so a stray ``2000000000`` would allocate two billion. Checked from the
    largest value alone, before anything is allocated per class.
    """
    if largest + 1 > max(MAX_SPARSE_CLASSES, n):
        raise TransferkitError(
            f"{name}: label {largest}{where} would make {largest + 1} classes for {n} examples; integer labels are "
            f"class indices 0..K-1 (at most {max(MAX_SPARSE_CLASSES, n)} classes here). Renumber them "
            "(np.unique(y, return_inverse=True)) or store them as text, which makes each distinct value one named class"
        )


def check_classes(data: TensorData, what: str, minimum: int = 2) -> None:
    """Refuse labelled data with examples of fewer than ``minimum`` classes (a classifier needs two)."""
    y = data.require_labels(what)
    present = [int(c) for c in torch.unique(y).tolist()] if len(y) else []
    if len(present) < minimum:
        names = ", ".join(f"'{data.classes[c]}'" if 0 <= c < len(data.classes) else str(c) for c in present) or "none"
        raise TransferkitError(
            f"{data.name} has examples of {len(present)} class{'es' if len(present) != 1 else ''} only ({names}); "
            f"{what} needs at least {minimum}: a classifier of one class always predicts it. Add examples of the other classes"
        )


def available_memory() -> int | None:
    """Bytes of memory this process may still use: MemAvailable (or free pages) within the cgroup limit; None if unknown."""
    import os
    from pathlib import Path

    avail: int | None = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # a container's memory limit (cgroup v2)
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return avail


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse to allocate ``nbytes`` for ``what`` when more than the available memory (see :func:`available_memory`)."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise TransferkitError(f"{what} needs about {_size(nbytes)} of memory but only {_size(avail)} is available; {fix}")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def index_batches(
    n: int,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[Tensor]:
    """Index tensors covering ``range(n)`` in batches (shuffled by ``generator``)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(device)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def batches(
    data: TensorData,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """One pass over ``data`` in index slices; ``(x, y)`` tuples (``y`` may be None)."""
    for idx in index_batches(len(data), batch_size, shuffle, generator, drop_last, data.x.device):
        yield data.x[idx], None if data.y is None else data.y[idx]


def endless(
    data: TensorData, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Shuffled batches forever: the second stream of two-stream training."""
    if len(data) == 0:
        raise TransferkitError(f"{data.name} is empty")
    while True:
        yield from batches(data, min(batch_size, len(data)), True, generator, drop_last=True)


def balanced_batches(
    data: TensorData, batch_size: int, num_batches: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Class-balanced sampling: each example is drawn with probability 1 / (C * n_class)."""
    y = data.require_labels("class-balanced sampling")
    counts = torch.bincount(y, minlength=data.num_classes).clamp(min=1).float()
    weights = (1.0 / counts)[y].cpu()
    for _ in range(num_batches):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        idx = idx.to(data.x.device)
        yield data.x[idx], y[idx]


def few_labels(data: TensorData, per_class: int, seed: int = 0) -> tuple[TensorData, TensorData]:
    """Seeded split: ``per_class`` labelled examples of each class, and the rest.

    Raises when a class has fewer than ``per_class`` examples.
    """
    y = data.require_labels("a few-label split").cpu()
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(data.num_classes):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise TransferkitError(
                f"{data.name}: class '{data.classes[c]}' has {len(idx)} examples, "
                f"fewer than --labels-per-class {per_class}"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    picked = torch.cat(chosen)
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[picked] = False
    rest = torch.nonzero(mask).flatten()
    return data.subset(picked.sort().values), data.subset(rest)


def random_split(data: TensorData, fraction: float, seed: int = 0) -> tuple[TensorData, TensorData]:
    """Seeded split into (1 - fraction, fraction) parts, e.g. train and validation."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    n_second = max(1, round(len(data) * fraction))
    return data.subset(order[n_second:]), data.subset(order[:n_second])


def check_labels(data: TensorData, num_classes: int, fix: str = "use data with the model's classes") -> None:
    """Refuse labels outside ``[0, num_classes)``, naming the offending value.

    ``fix`` says what helps where the check runs (e.g. ``eval``: data with the model's classes).
    """
    if data.y is None or len(data.y) == 0:
        return
    lo, hi = int(data.y.min()), int(data.y.max())
    if lo < 0:
        raise TransferkitError(
            f"{data.name}: label {lo} is negative; labels are class indices 0..N-1 (or class names in a .csv "
            "'label' column): fix the labels in the file"
        )
    if hi >= num_classes:
        raise TransferkitError(
            f"{data.name}: label {hi} is out of range for a head with {num_classes} classes "
            f"(labels must be 0..{num_classes - 1}); {fix}"
        )
