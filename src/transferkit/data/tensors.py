"""In-memory tensor datasets and index-slicing batch iterators.

Small and medium datasets live as one tensor on the compute device; a batch is
an index slice of it. There is no per-sample Python anywhere in here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

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

    def __post_init__(self) -> None:
        if self.y is not None:
            if self.y.shape[0] != self.x.shape[0]:
                raise TransferkitError(
                    f"{self.name}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels"
                )
            self.y = self.y.long()
            if not self.classes and len(self.y):
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


def check_labels(data: TensorData, num_classes: int) -> None:
    """Refuse labels outside ``[0, num_classes)``, naming the offending value."""
    if data.y is None or len(data.y) == 0:
        return
    lo, hi = int(data.y.min()), int(data.y.max())
    if lo < 0 or hi >= num_classes:
        bad = hi if hi >= num_classes else lo
        raise TransferkitError(
            f"{data.name}: label {bad} is out of range for a head with {num_classes} classes "
            f"(labels must be 0..{num_classes - 1}); use a model with more classes or --new-head"
        )
