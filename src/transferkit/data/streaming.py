"""Image folders streamed from disk: decoded per batch by ``DataLoader`` worker processes.

**The switch** (:func:`open_image_folder`, called by ``commands/common.py load`` for every
folder given on the command line): a folder whose decoded size at the model's input size,
``N x C x S x S x 4`` bytes (float32, as a :class:`~transferkit.data.TensorData` holds it),
is at most the memory budget is held as a tensor: batches are index slices and augmentation
runs on whole batches, the fastest path for anything that fits (the Speed rules of
DESIGN.md). A larger folder streams: files are listed once and decoded per batch in worker
processes, so memory stays at a few batches whatever the folder's size. The budget is
``$TRANSFERKIT_STREAM_BUDGET_MB`` MiB, else a quarter of the available memory, at most
4 GiB; ``--stream`` / ``--no-stream`` force either side.

A :class:`StreamingFolder` offers what the recipes use of a ``TensorData`` (``y``,
``classes``, ``name``, ``input_shape``, ``subset``, ``unlabeled``, ``to``, ...) except ``x``;
the recipes build their batches through :func:`source_stream` / :func:`endless_pairs` and
measure through :func:`evaluate_source` / :func:`source_logits`, which take either kind.

Transforms (all on 8-bit PIL images, in the workers; the model normalises its own input, so
the data side only decodes, converts and crops; pixels reach the model in [0, 1]):

- training: random-resized crop (area fraction drawn from ``crop_scale``, aspect ratio from
  [3/4, 4/3] on a log scale, as in Szegedy et al. 2015) to ``S x S``, then a horizontal flip
  with probability 1/2;
- evaluation and prediction: the largest centred square, resized to ``S x S`` (the same as
  resizing the shorter side to ``S`` and cropping the centre; for square files the same
  bilinear resize as the in-memory path).

Randomness never depends on the number of workers: each epoch draws its order and one seed
from the trainer's generator, and the crop of example ``i`` is drawn from
``numpy.random.default_rng([seed, i, view])``, so a run is the same with 0 or 8 workers and
a resumed run sees the same batches.

Unreadable files (truncated, not an image) are skipped with one warning each naming the file
and the count so far, or stop the run with ``on_bad_file="error"``.

The linear probe's features of a streamed folder are computed once and kept on disk
(:func:`cached_features`): ``$TRANSFERKIT_CACHE/features/<key>/features.npy``, read back
memory-mapped; ``key`` digests the frozen weights, the file listing (names, sizes,
modification times) and the input size, so a changed model or folder computes them again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import TransferkitError
from .datasets import GREY_MODES, IMAGE_SUFFIXES, pil_to_mode
from .tensors import TensorData, available_memory

DEFAULT_CROP_SCALE = (0.35, 1.0)
MAX_BUDGET = 4 * 2**30
BUDGET_ENV = "TRANSFERKIT_STREAM_BUDGET_MB"


# ------------------------------------------------------------------ listing
@dataclass(frozen=True)
class Listing:
    """The files of a folder (relative to ``root``), their labels (or ``None``) and class names."""

    root: Path
    files: tuple[str, ...]
    labels: tuple[int, ...] | None
    classes: tuple[str, ...]


def _visible(p: Path) -> bool:
    return p.is_file() and not any(part.startswith(".") for part in p.parts[-1:])


def list_folder(root: str | Path, labelled: bool = True) -> Listing:
    """``root/<class>/<file>`` (labelled, classes sorted) or every image under ``root`` (unlabelled).

    Labelled listings keep every visible file of a class folder (an unreadable one is skipped
    when decoded, as the in-memory path does); unlabelled ones keep the image suffixes only.
    """
    root = Path(root)
    if not root.is_dir():
        raise TransferkitError(f"image folder {root} does not exist; give a folder of images")
    if not labelled:
        images = sorted(f for f in root.rglob("*") if _visible(f) and f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise TransferkitError(f"image folder {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Listing(root, tuple(str(f.relative_to(root)) for f in images), None, ())
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = any(_visible(f) for f in root.iterdir())
        hint = " (it holds files directly: put each class's images in a subfolder named after the class)" if loose else ""
        raise TransferkitError(f"{root} has no class folders{hint}; expected {root}/<class>/<image>")
    files: list[str] = []
    labels: list[int] = []
    for label, cdir in enumerate(class_dirs):
        found = sorted(p for p in cdir.rglob("*") if _visible(p))
        if not found:
            raise TransferkitError(f"class folder {cdir} is empty; add images or remove the folder")
        files += [str(f.relative_to(root)) for f in found]
        labels += [label] * len(found)
    return Listing(root, tuple(files), tuple(labels), tuple(d.name for d in class_dirs))


def listing_digest(root: Path, files: Sequence[str]) -> str:
    """A digest of the files' names, sizes and modification times (any change gives another one)."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for name in files:
        try:
            st = (root / name).stat()
            h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}|missing\n".encode())
    return h.hexdigest()


# -------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Transform:
    """What the workers do to one file: mode, output size, and the training crop (``None``: eval)."""

    mode: str  # "L" or "RGB"
    size: int
    crop_scale: tuple[float, float] | None = None  # random-resized crop's area range; None: centre crop
    flip: bool = False

    def box(self, width: int, height: int, rng: np.random.Generator | None) -> tuple[float, float, float, float]:
        """The crop box (left, top, right, bottom) in the file's pixels."""
        if self.crop_scale is not None and rng is not None:
            area = width * height
            lo, hi = self.crop_scale
            for _ in range(10):
                target = area * rng.uniform(lo, hi)
                ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
                if 0 < w <= width and 0 < h <= height:
                    left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
                    return left, top, left + w, top + h
        side = min(width, height)  # the largest centred square
        left, top = (width - side) / 2, (height - side) / 2
        return left, top, left + side, top + side

    def __call__(self, im: Any, rng: np.random.Generator | None) -> np.ndarray:
        """A PIL image -> (C, S, S) uint8 array."""
        from PIL import Image

        im = pil_to_mode(im, self.mode)
        out = im.resize((self.size, self.size), Image.Resampling.BILINEAR, box=self.box(im.width, im.height, rng))
        if self.flip and rng is not None and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(out, dtype=np.uint8)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class FolderDataset(torch.utils.data.Dataset):
    """Map-style dataset over ``files``; an item key is ``(index, seed)``.

    Returns ``(index, views, ok, why)``: ``views`` a tuple of (C, S, S) uint8 arrays, one per
    transform (two for weak/strong pairs); ``ok`` False (and zeros) for an unreadable file.
    """

    def __init__(self, root: Path, files: Sequence[str], transforms: Sequence[Transform]):
        self.root, self.files, self.transforms = root, list(files), list(transforms)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, tuple[np.ndarray, ...], bool, str]:
        from PIL import Image

        index, seed = key
        try:
            with Image.open(self.root / self.files[index]) as im:
                im.load()
                views = tuple(
                    t(im, np.random.default_rng([seed, index, v]) if t.crop_scale is not None or t.flip else None)
                    for v, t in enumerate(self.transforms)
                )
            return index, views, True, ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            blank = tuple(np.zeros((1 if t.mode == "L" else 3, t.size, t.size), np.uint8) for t in self.transforms)
            return index, blank, False, f"{type(exc).__name__}: {exc}"


def _collate(items: list[tuple[int, tuple[np.ndarray, ...], bool, str]]) -> dict[str, Any]:
    """Stack the readable items' views (in the worker); ``ok`` marks which items of the batch they are."""
    good = [it for it in items if it[2]]
    ok = torch.tensor([it[2] for it in items], dtype=torch.bool)
    bad = [(it[0], it[3]) for it in items if not it[2]]
    views = tuple(torch.from_numpy(np.stack([it[1][v] for it in good])) for v in range(len(items[0][1]))) if good else ()
    return {"ok": ok, "views": views, "bad": bad}


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # the workers decode; the main process computes


class _Keys:
    """The batch sampler: the main process sets ``batches`` before each pass."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class _Shared:
    """State shared by a folder and its subsets: files already reported unreadable, open loaders."""

    bad: dict[str, str] = field(default_factory=dict)
    loaders: dict[Any, tuple[Any, _Keys]] = field(default_factory=dict)


# ----------------------------------------------------------------- the source
@dataclass
class StreamingFolder:
    """An image folder read from disk batch by batch (see the module docstring).

    ``indices`` select files of the listing (subsets share the listing); ``size`` and
    ``channels`` are the decoded input (``1``: grey, ``3``: RGB); ``crop_scale`` is the
    random-resized crop's area range for training (``None``: the evaluation transform is used
    for training too); ``workers`` decoding processes (0: in the main process).
    """

    listing: Listing
    size: int
    channels: int = 3
    workers: int = 0
    on_bad_file: str = "skip"
    crop_scale: tuple[float, float] | None = DEFAULT_CROP_SCALE
    flip: bool = True
    indices: np.ndarray | None = None
    labelled: bool = True
    name: str = ""
    preprocess: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    shared: _Shared = field(default_factory=_Shared, repr=False)

    def __post_init__(self) -> None:
        check_workers(self.workers)
        if self.on_bad_file not in ("skip", "error"):
            raise TransferkitError(f"on_bad_file must be 'skip' or 'error', got {self.on_bad_file!r}")
        if self.channels not in (1, 3):
            raise TransferkitError(f"channels must be 1 or 3, got {self.channels}")
        if self.size < 1:
            raise TransferkitError(f"image size must be positive, got {self.size}")
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0 < lo <= hi <= 1:
                raise TransferkitError(f"crop scale takes LO HI with 0 < LO <= HI <= 1, got {lo} {hi}")
        if self.indices is None:
            self.indices = np.arange(len(self.listing.files))
        self.name = self.name or self.listing.root.name

    # -- what a TensorData also offers
    def __len__(self) -> int:
        assert self.indices is not None
        return len(self.indices)

    @property
    def files(self) -> list[str]:
        assert self.indices is not None
        return [self.listing.files[i] for i in self.indices]

    @functools.cached_property
    def y(self) -> Tensor | None:
        if not self.labelled or self.listing.labels is None:
            return None
        return torch.tensor(self.listing.labels, dtype=torch.long)[torch.from_numpy(self.indices)]

    @property
    def classes(self) -> list[str]:
        return list(self.listing.classes)

    @property
    def num_classes(self) -> int:
        return len(self.listing.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.channels, self.size, self.size)

    @property
    def is_image(self) -> bool:
        return True

    def to(self, device: torch.device | str) -> StreamingFolder:
        return replace(self, device=torch.device(device))

    def subset(self, index: Tensor | np.ndarray | Sequence[int]) -> StreamingFolder:
        assert self.indices is not None
        pick = np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64)
        return replace(self, indices=self.indices[pick])

    def unlabeled(self) -> StreamingFolder:
        return replace(self, labelled=False)

    def require_labels(self, what: str) -> Tensor:
        if self.y is None:
            raise TransferkitError(f"{what} needs labels, but {self.name} has none")
        return self.y

    def class_counts(self) -> Tensor:
        return torch.bincount(self.require_labels("class counts"), minlength=self.num_classes)

    def conformed(self, size: int | None = None, channels: int | None = None) -> StreamingFolder:
        """The same files decoded at another size / channel count (nothing is read now)."""
        return replace(self, size=size or self.size, channels=channels or self.channels)

    # -- batches
    def transform(self, train: bool) -> Transform:
        mode = "L" if self.channels == 1 else "RGB"
        if train:
            return Transform(mode, self.size, self.crop_scale, self.flip)
        return Transform(mode, self.size)

    def _loader(self, transforms: tuple[Transform, ...], batch_size: int) -> tuple[Any, _Keys]:
        key = (transforms, batch_size, self.workers, self.listing.root)
        if key not in self.shared.loaders:
            keys = _Keys()
            loader = torch.utils.data.DataLoader(
                FolderDataset(self.listing.root, self.listing.files, transforms), batch_sampler=keys,
                num_workers=self.workers, collate_fn=_collate, worker_init_fn=_worker_init if self.workers else None,
                persistent_workers=self.workers > 0, prefetch_factor=4 if self.workers else None,
            )
            self.shared.loaders[key] = (loader, keys)
        return self.shared.loaders[key]

    def _report(self, bad: list[tuple[int, str]]) -> None:
        for index, why in bad:
            path = self.listing.root / self.listing.files[index]
            if self.on_bad_file == "error":
                raise TransferkitError(f"cannot read image {path} ({why}); remove it or use --on-bad-file skip")
            if str(path) not in self.shared.bad:
                self.shared.bad[str(path)] = why
                warnings.warn(f"skipping unreadable file {path} ({why}); {len(self.shared.bad)} skipped so far",
                              stacklevel=3)

    def _pixels(self, views: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        out = []
        for v in views:
            x = v.to(self.device, non_blocking=True).float().div_(255.0)
            if self.preprocess.get("invert"):
                x = 1.0 - x
            out.append(x)
        return tuple(out)

    def iterate(
        self, order: Sequence[int], batch_size: int, transforms: tuple[Transform, ...], seed: int = 0
    ) -> Iterator[tuple[Tensor, tuple[Tensor, ...]]]:
        """Batches over positions ``order`` (into this folder): ``(positions, views)``, unreadable files left out."""
        assert self.indices is not None
        loader, keys = self._loader(transforms, batch_size)
        positions = torch.as_tensor(np.asarray(order, dtype=np.int64))
        files = self.indices[positions.numpy()].tolist()  # built once per pass, before the first batch
        keys.batches = [[(f, seed) for f in files[i : i + batch_size]] for i in range(0, len(files), batch_size)]
        for k, b in enumerate(loader):  # the loader keeps the batches in order
            self._report(b["bad"])
            if b["views"]:
                yield positions[k * batch_size : (k + 1) * batch_size][b["ok"]], self._pixels(b["views"])

    def stream(self, batch_size: int, train: bool = True, drop_last: bool = False, views: int = 1) -> Any:
        """A :class:`~transferkit.engine.pipeline.BatchStream` of ``(positions, x, y)`` (``x``: a tuple when ``views`` > 1).

        ``views=2`` gives (evaluation transform, training transform) pairs of each example: the
        clean and the augmented view self-training methods compare.
        """
        from ..engine.pipeline import BatchStream

        n = len(self)
        drop = drop_last and n > batch_size
        transforms = (self.transform(train),) if views == 1 else (self.transform(False), self.transform(True))
        labels = self.y

        def batches(epoch: int, gen: torch.Generator) -> Iterator[Any]:
            order = torch.randperm(n, generator=gen)  # as index_stream draws it: an unaugmented stream gives the same batches
            random = any(t.crop_scale is not None or t.flip for t in transforms)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) if random else 0
            if drop:
                order = order[: n - n % batch_size]
            for pos, xs in self.iterate(order.tolist(), batch_size, transforms, seed):
                pos = pos.to(self.device)
                y = labels.to(self.device)[pos] if labels is not None else None
                yield pos, (xs[0] if views == 1 else xs), y

        steps = n // batch_size if drop else -(-n // batch_size)
        return BatchStream(batches, max(1, steps))

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The folder in order with the evaluation transform: ``(positions, x)``."""
        for pos, xs in self.iterate(list(range(len(self))), batch_size, (self.transform(False),)):
            yield pos, xs[0]

    def materialize(self) -> TensorData:
        """Decode into a :class:`TensorData` (evaluation transform); for bounded subsets such as validators' samples."""
        xs, ps = [], []
        for pos, x in self.eval_batches(256):
            xs.append(x.cpu())
            ps.append(pos)
        if not xs:
            raise TransferkitError(f"no readable images in {self.name}")
        pos = torch.cat(ps)
        y = self.y
        return TensorData(torch.cat(xs), y[pos] if y is not None else None, self.classes, self.name, preprocess=dict(self.preprocess))


Source = TensorData | StreamingFolder


def check_workers(workers: int) -> None:
    if not isinstance(workers, int) or workers < 0:
        raise TransferkitError(f"--workers must be 0 (decode in the main process) or a positive number, got {workers}")


# -------------------------------------------------------------- the switch
def stream_budget() -> int:
    """Bytes a folder may take as a tensor before it streams (see the module docstring)."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        try:
            return int(float(env) * 2**20)
        except ValueError:
            raise TransferkitError(f"${BUDGET_ENV} must be a number of MiB, got {env!r}") from None
    avail = available_memory()
    return MAX_BUDGET if avail is None else min(MAX_BUDGET, avail // 4)


def _first_image(listing: Listing) -> tuple[int, int, str] | None:
    """(width, height, mode) of the first readable file, read from its header only."""
    from PIL import Image

    for name in listing.files[:50]:
        try:
            with Image.open(listing.root / name) as im:
                return im.width, im.height, im.mode
        except (OSError, ValueError, SyntaxError):
            continue
    return None


def open_image_folder(
    root: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    on_bad_file: str = "skip",
    *,
    stream: bool | None = None,
    workers: int = 0,
    crop_scale: tuple[float, float] | None = DEFAULT_CROP_SCALE,
    size_hint: int | None = None,
    labelled: bool = True,
) -> Source:
    """A labelled folder as a tensor when it fits the budget, else as a :class:`StreamingFolder`.

    ``size_hint`` is the model's input size when known (the size the folder will be used at,
    so the estimate is the memory the tensor would really take); ``stream`` forces a side.
    """
    check_workers(workers)
    listing = list_folder(root, labelled)
    if not listing.files:
        raise TransferkitError(f"image folder {root} has no images")
    first = _first_image(listing)
    if first is None:
        raise TransferkitError(f"no readable images among the first files of {root}; check the folder holds images")
    width, height, mode = first
    size = image_size or size_hint or min(width, height)
    chans = channels or (1 if mode in GREY_MODES else 3)
    estimate = len(listing.files) * chans * size * size * 4
    if stream is None:
        stream = estimate > stream_budget()
    if not stream and labelled:
        from .datasets import load_image_folder

        return load_image_folder(root, image_size, channels, on_bad_file)
    return StreamingFolder(listing, size, chans, workers, on_bad_file, crop_scale, labelled=labelled)


# ---------------------------------------------------- either kind of source
def source_stream(data: Source, batch_size: int, device: torch.device | str = "cpu", drop_last: bool = False,
                  train: bool = True) -> Any:
    """``(idx, x, y)`` batches of either kind of source (``y`` None when unlabelled), as a BatchStream."""
    from ..engine.pipeline import index_stream

    if isinstance(data, StreamingFolder):
        return data.to(device).stream(batch_size, train, drop_last)
    d = data.to(device)
    return index_stream(len(d), batch_size, lambda idx, gen: (idx, d.x[idx], None if d.y is None else d.y[idx]), device,
                        drop_last)


def endless_pairs(data: Source, batch_size: int, gen: torch.Generator, device: torch.device | str = "cpu",
                  train: bool = True) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``(x, y)`` batches forever (the second stream of two-stream training), drawn from ``gen``."""
    if len(data) == 0:
        raise TransferkitError(f"{data.name} is empty")
    if not isinstance(data, StreamingFolder):
        from .tensors import endless

        yield from endless(data.to(device), batch_size, gen)
        return
    stream = data.to(device).stream(min(batch_size, len(data)), train, drop_last=True)
    epoch = 0
    while True:
        for _, x, y in stream.batches(epoch, gen):
            yield x, y
        epoch += 1


@torch.no_grad()
def source_outputs(model: nn.Module, data: Source, batch_size: int = 256, fn: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``fn`` (default: the model) over every example in order, eval mode: (outputs, positions of readable examples)."""
    from ..engine.evaluate import batched_forward

    if not isinstance(data, StreamingFolder):
        return batched_forward(model, data.x, batch_size, fn, device=next(model.parameters()).device), torch.arange(len(data))
    fn = model if fn is None else fn
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    outs, ps = [], []
    try:
        for pos, x in data.to(device).eval_batches(batch_size):
            outs.append(fn(x))
            ps.append(pos)
    finally:
        model.train(was)
    if not outs:
        raise TransferkitError(f"no readable images in {data.name}")
    return torch.cat(outs), torch.cat(ps)


def source_logits(model: nn.Module, data: Source, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    return source_outputs(model, data, batch_size)


def evaluate_source(model: nn.Module, data: Source, batch_size: int = 1024) -> dict[str, Any]:
    """:func:`~transferkit.engine.evaluate` for either kind of source (a streamed one is read once, in order)."""
    from ..engine.evaluate import evaluate, metrics_from_logits

    if not isinstance(data, StreamingFolder):
        return evaluate(model, data, batch_size)
    y = data.require_labels("evaluation")
    logits, pos = source_outputs(model, data, min(batch_size, 256))
    return metrics_from_logits(logits, y[pos.cpu()].to(logits.device), max(int(logits.shape[1]), data.num_classes))


# ------------------------------------------------------------ feature cache
def weights_digest(module: nn.Module, skip_prefix: str = "head.") -> str:
    """A digest of a module's parameters and buffers (those under ``skip_prefix`` left out)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if name.startswith(skip_prefix):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def features_key(model: nn.Module, data: StreamingFolder) -> str:
    parts = [weights_digest(model), listing_digest(data.listing.root, data.files),
             f"{data.size}|{data.channels}|{json.dumps(data.preprocess, sort_keys=True)}|v1"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def cached_features(model: Any, data: StreamingFolder, batch_size: int = 256, verbose: bool = False) -> tuple[Tensor, Tensor]:
    """The frozen backbone's features of a streamed folder, computed once and memory-mapped from disk.

    Returns (features (N_readable, D) backed by the file, positions of the readable examples).
    The entry lives in ``$TRANSFERKIT_CACHE/features/<key>/`` (see :func:`features_key`); it is
    written to a temporary folder and renamed, so an interrupted run leaves no half entry.
    """
    from .download import cache_dir

    folder = cache_dir() / "features" / features_key(model, data)
    feats_path, pos_path = folder / "features.npy", folder / "positions.npy"
    if feats_path.is_file() and pos_path.is_file():
        try:
            z = np.load(feats_path, mmap_mode="c")
            pos = np.load(pos_path)
            if verbose:
                print(f"linear probe: features of {data.name} read from the cache {folder}")
            return torch.from_numpy(z), torch.from_numpy(pos)
        except (OSError, ValueError):
            pass  # a damaged entry is computed again
    z_t, pos_t = source_outputs(model, data, batch_size, fn=model.features)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "features.npy", z_t.cpu().numpy().astype(np.float32))
        np.save(tmp / "positions.npy", pos_t.cpu().numpy())
        (tmp / "meta.json").write_text(json.dumps({"root": str(data.listing.root), "n": len(data), "size": data.size}))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        if verbose:
            print(f"linear probe: features of {data.name} cached in {folder}")
        return torch.from_numpy(np.load(feats_path, mmap_mode="c")), pos_t.cpu()
    except OSError as exc:  # a read-only or full cache only costs speed
        shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(f"could not cache features in {folder.parent}: {exc.strerror or exc}", stacklevel=2)
        return z_t.cpu(), pos_t.cpu()


# ------------------------------------------------------- shapes of two sources
def conform_source(data: Source, size: int | None = None, channels: int | None = None) -> Source:
    """:func:`~transferkit.data.conform` for either kind (a streamed folder only changes what its workers decode)."""
    from .transforms import conform

    if isinstance(data, StreamingFolder):
        return data.conformed(size, channels)
    return conform(data, size, channels)


def pair_sources(a: Source, b: Source, size: int | None, channels: int | None) -> tuple[Source, Source]:
    """:func:`~transferkit.data.pair_shapes` for either kind: a streamed folder takes the other's size and channels."""
    from .transforms import pair_shapes

    if not isinstance(a, StreamingFolder) and not isinstance(b, StreamingFolder):
        return pair_shapes(a, b, size, channels)
    for d in (a, b):
        if not d.is_image:
            raise TransferkitError(f"{d.name} is a feature table and the other domain an image folder: they cannot be paired")
    if size is None or channels is None:  # take what the tensor side has, else the larger
        shapes = [d.input_shape for d in (a, b) if not isinstance(d, StreamingFolder)] or [a.input_shape, b.input_shape]
        size = size or max(s[1] for s in shapes)
        channels = channels or max(s[0] for s in shapes)
    return conform_source(a, size, channels), conform_source(b, size, channels)


def take_inputs(data: Source, index: Tensor) -> Tensor:
    """``data.x[index]`` for either kind (a streamed folder decodes those files with the evaluation transform)."""
    if isinstance(data, StreamingFolder):
        return data.subset(index.cpu()).materialize().x.to(data.device)
    return data.x[index.to(data.x.device)]


def as_tensor_data(data: Source) -> TensorData:
    """A tensor source as it is; a streamed one decoded (for bounded sets: validation splits, samples)."""
    return data.materialize() if isinstance(data, StreamingFolder) else data


def bounded_sample(data: Source, limit: int = 2000) -> TensorData:
    """At most ``limit`` examples in memory: a tensor source as it is, a streamed one's first ``limit`` files decoded."""
    if not isinstance(data, StreamingFolder):
        return data
    return data.subset(np.arange(min(limit, len(data)))).materialize()
