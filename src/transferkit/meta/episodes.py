"""Few-shot episodes from any labelled :class:`~transferkit.data.TensorData`.

An *episode* (a task) is N classes drawn at random, K labelled *support*
examples and Q *query* examples of each. Within an episode the classes are
relabelled ``0..N-1`` in a random order, so a learner cannot memorise them.

Sampling is vectorised: a (classes, max_count) table of example indices is
built once; a meta-batch of B episodes is one ``argsort`` of random keys to
choose classes, one ``argsort`` of random keys (invalid slots pushed last)
to choose examples, and one gather. No per-sample Python.

Optional 90-degree rotations turn every class into four (Omniglot
convention, Santoro et al. 2016; Vinyals et al. 2016): class ``c`` rotated by
``r * 90`` degrees is the virtual class ``4 c + r``.

Classes are split into meta-train / meta-val / meta-test with
:func:`split_classes`, optionally by *group* (Omniglot alphabets: class names
``"Alphabet/characterNN"``), so test classes share no alphabet with training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import TensorData
from ..errors import TransferkitError


@dataclass
class Episode:
    """A meta-batch of B tasks: support (B, N*K, ...), query (B, N*Q, ...), labels in 0..N-1.

    ``classes`` (B, N) holds the (virtual) class ids of each task, in label order.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def to(self, device: torch.device | str) -> Episode:
        return Episode(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x, self.query_y, self.classes)))

    def task(self, i: int) -> Episode:
        """Task ``i`` as a meta-batch of one."""
        return Episode(*(t[i : i + 1] for t in (self.support_x, self.support_y, self.query_x, self.query_y, self.classes)))


def class_groups(classes: Sequence[str], sep: str = "/") -> list[str]:
    """Group of each class: the part of its name before ``sep`` (Omniglot: the alphabet)."""
    return [c.split(sep, 1)[0] if sep in c else c for c in classes]


def split_classes(
    classes: Sequence[str],
    val_fraction: float = 0.0,
    test_fraction: float = 0.25,
    by_group: bool = False,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Seeded split of class indices into ``train`` / ``val`` / ``test``.

    With ``by_group``, whole groups (e.g. alphabets) are assigned, so no group
    has classes on both sides. Each non-zero fraction gets at least one unit.
    """
    if not 0 <= val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise TransferkitError(
            f"class split fractions must leave some training classes: val {val_fraction}, test {test_fraction}"
        )
    units = sorted(set(class_groups(classes))) if by_group else list(classes)
    if len(units) < 2 + (val_fraction > 0):
        what = "groups" if by_group else "classes"
        raise TransferkitError(f"cannot split {len(units)} {what} into meta-train/val/test; need at least {2 + (val_fraction > 0)}")
    g = torch.Generator().manual_seed(seed)
    order = [units[i] for i in torch.randperm(len(units), generator=g).tolist()]
    n_test = max(1, round(test_fraction * len(units)))
    n_val = max(1, round(val_fraction * len(units))) if val_fraction > 0 else 0
    if n_test + n_val >= len(units):
        n_test, n_val = 1, int(val_fraction > 0)
    test_u, val_u = set(order[:n_test]), set(order[n_test : n_test + n_val])
    keys = class_groups(classes) if by_group else list(classes)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, k in enumerate(keys):
        out["test" if k in test_u else "val" if k in val_u else "train"].append(i)
    return out


def rotate_batch(x: Tensor, quarter_turns: Tensor) -> Tensor:
    """Rotate each image of ``x`` (..., C, H, W) by ``quarter_turns`` (...) x 90 degrees, without a Python loop over images."""
    if x.shape[-1] != x.shape[-2]:
        raise TransferkitError(f"rotations need square images, got {tuple(x.shape[-2:])}")
    r = quarter_turns.reshape(*quarter_turns.shape, 1, 1, 1)
    out = x
    for k in range(1, 4):  # four whole-batch rotations, selected by mask
        out = torch.where(r == k, torch.rot90(x, k, dims=(-2, -1)), out)
    return out


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class over a subset of classes.

    Args:
        data: labelled data (all classes); lives on its device, episodes come out there.
        classes: the class indices this sampler draws from (e.g. the meta-train split); default all.
        ways, shots, queries: N, K, Q.
        rotations: add the 90/180/270-degree rotations of every class as extra classes.

    Raises a one-line :class:`TransferkitError` when a class has fewer than
    K + Q examples (naming it) or when there are fewer than N classes.
    """

    def __init__(
        self,
        data: TensorData,
        classes: Sequence[int] | None = None,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        rotations: bool = False,
    ):
        y = data.require_labels("episode sampling")
        if ways < 1 or shots < 1 or queries < 0:
            raise TransferkitError(f"ways and shots must be >= 1 and queries >= 0, got {ways}-way {shots}-shot {queries} queries")
        if not data.is_image and rotations:
            raise TransferkitError(f"{data.name} is not an image set; rotations apply to images only")
        self.data, self.ways, self.shots, self.queries, self.rotations = data, ways, shots, queries, rotations
        cls = torch.arange(data.num_classes) if classes is None else torch.as_tensor(list(classes), dtype=torch.long)
        y_cpu = y.cpu()
        counts = torch.bincount(y_cpu, minlength=data.num_classes)[cls]
        need = shots + queries
        short = torch.nonzero(counts < need).flatten()
        if len(short):
            c = int(cls[short[0]])
            raise TransferkitError(
                f"{data.name}: class '{data.classes[c]}' has {int(counts[short[0]])} examples but "
                f"{shots}-shot with {queries} queries needs {need}; lower --shots/--queries or drop that class"
            )
        available = len(cls) * (4 if rotations else 1)
        if ways > available:
            rot = " (counting rotations)" if rotations else ""
            raise TransferkitError(
                f"{ways}-way episodes need {ways} classes but this split of {data.name} has {available}{rot}; lower --ways"
            )
        # (classes, max_count) table of example indices; -1 pads short classes
        order = torch.argsort(y_cpu, stable=True)
        sorted_y = y_cpu[order]
        starts = torch.searchsorted(sorted_y, cls)
        width = int(counts.max()) if len(counts) else 0
        pos = torch.arange(width)
        idx = starts[:, None] + pos[None, :]
        valid = pos[None, :] < counts[:, None]
        table = torch.where(valid, order[idx.clamp(max=len(order) - 1)], torch.full_like(idx, -1))
        dev = data.x.device
        self.base_classes = cls.to(dev)
        self.table, self.valid = table.to(dev), valid.to(dev)
        self.num_classes = available

    def sample(self, tasks: int = 1, generator: torch.Generator | None = None) -> Episode:
        """A meta-batch of ``tasks`` episodes (seeded by ``generator``, a CPU generator)."""
        n, k, q = self.ways, self.shots, self.queries
        dev = self.table.device
        pick = torch.rand(tasks, self.num_classes, generator=generator).argsort(1)[:, :n].to(dev)  # (B, N)
        base = pick // 4 if self.rotations else pick
        keys = torch.rand(tasks, n, self.table.shape[1], generator=generator).to(dev)
        keys = keys.masked_fill(~self.valid[base], 2.0)  # padding sorts last
        slots = keys.argsort(-1)[..., : k + q]  # (B, N, K+Q)
        idx = self.table[base.unsqueeze(-1), slots]  # (B, N, K+Q)
        x = self.data.x[idx]  # (B, N, K+Q, ...)
        if self.rotations:
            x = rotate_batch(x, (pick % 4)[..., None].expand(-1, -1, k + q))
        labels = torch.arange(n, device=dev).view(1, n, 1)
        sx = x[:, :, :k].flatten(1, 2)
        qx = x[:, :, k:].flatten(1, 2)
        sy = labels.expand(tasks, n, k).flatten(1)
        qy = labels.expand(tasks, n, q).flatten(1)
        virtual = self.base_classes[base] * 4 + pick % 4 if self.rotations else self.base_classes[base]
        return Episode(sx, sy, qx, qy, virtual)

    def class_name(self, virtual: int) -> str:
        """Name of a (virtual) class id from :attr:`Episode.classes`."""
        if self.rotations:
            return f"{self.data.classes[virtual // 4]}@rot{(virtual % 4) * 90}"
        return self.data.classes[virtual]
