"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): 1,623 handwritten characters from 50 alphabets.

The official archives (github.com/brendenlake/omniglot, ``python/``) are used
by name and layout ``<set>/<alphabet>/<character>/<drawer>.png`` (105x105,
1-bit). Splits:

- ``background`` (also ``train``): images_background.zip, 30 alphabets, 964 characters;
- ``evaluation`` (also ``test``): images_evaluation.zip, 20 alphabets, 659 characters;
- ``small1`` / ``small2``: the two "minimal" background sets (5 alphabets each);
- ``small``: small1 and small2 together; characters present in both (Greek,
  Latin) are kept once: 242 characters from 8 alphabets.

Images are resized to 28x28 (antialiased bilinear, whole batch) and inverted so
strokes are 1 and paper is 0. Class names are ``"Alphabet/characterNN"`` so
classes can be split by alphabet (:func:`transferkit.meta.episodes.split_classes`
with ``by_group=True``). Archives are extracted with a member check
(:func:`transferkit.io.safe_extract_zip`); the decoded 28x28 images are cached
as ``<cache>/omniglot/<archive>.28x28.npz`` so the second load is fast.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import TransferkitError
from ..io import atomic_write, safe_extract_zip
from .datasets import register_dataset
from .download import cache_dir, locate
from .tensors import TensorData
from .transforms import resize

OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/{}.zip"
OMNIGLOT_ARCHIVES = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
    "images_background_small1": "e704a628b5459e08445c13499850abc4",
    "images_background_small2": "b75a71a51d3b13f821f212756fe481fd",
}
SPLITS = {
    "background": ("images_background",),
    "train": ("images_background",),
    "evaluation": ("images_evaluation",),
    "test": ("images_evaluation",),
    "small1": ("images_background_small1",),
    "small2": ("images_background_small2",),
    "small": ("images_background_small1", "images_background_small2"),
}
SIZE = 28


def decode_folder(root: Path, size: int = SIZE) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Images (N, size, size) uint8 (strokes high), class names ``alphabet/character`` and labels, from an extracted set."""
    from PIL import Image

    chars = sorted(p for p in root.glob("*/*") if p.is_dir())
    if not chars:
        raise TransferkitError(f"{root} has no <alphabet>/<character>/ folders; is this an Omniglot archive?")
    imgs: list[np.ndarray] = []
    labels: list[int] = []
    for label, cdir in enumerate(chars):
        for f in sorted(cdir.glob("*.png")):
            with Image.open(f) as im:
                imgs.append(np.asarray(im.convert("L"), dtype=np.uint8))
            labels.append(label)
    if not imgs:
        raise TransferkitError(f"{root} holds no .png images")
    big = torch.from_numpy(np.stack(imgs)).float().div_(255.0).unsqueeze(1)
    small = torch.cat([resize(big[i : i + 1024], size) for i in range(0, len(big), 1024)])
    x = ((1.0 - small.squeeze(1)).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    names = [f"{c.parent.name}/{c.name}" for c in chars]
    return x, names, np.asarray(labels, dtype=np.int64)


def load_archive(name: str, data_dir: str | Path | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One official archive, decoded to 28x28 and cached as .npz."""
    archive = locate(
        "omniglot", [f"omniglot/{name}.zip", f"omniglot-py/{name}.zip", f"{name}.zip"],
        [OMNIGLOT_URL.format(name)], OMNIGLOT_ARCHIVES[name], data_dir,
    )
    cached = cache_dir() / "omniglot" / f"{name}.{SIZE}x{SIZE}.npz"
    stamp = np.asarray([archive.stat().st_size], dtype=np.int64)
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                if np.array_equal(z["archive_size"], stamp):
                    return z["x"], [str(c) for c in z["classes"]], z["y"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    with tempfile.TemporaryDirectory(prefix="omniglot-") as tmp:
        safe_extract_zip(archive, tmp)
        sets = [p for p in Path(tmp).iterdir() if p.is_dir() and not p.name.startswith("__")]
        root = sets[0] if len(sets) == 1 else Path(tmp)
        x, names, y = decode_folder(root)
    cached.parent.mkdir(parents=True, exist_ok=True)

    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, x=x, y=y, classes=np.asarray(names), archive_size=stamp)

    atomic_write(cached, write)
    return x, names, y


@register_dataset(
    "omniglot", "Omniglot characters by alphabet (Lake et al. 2015), 28x28; splits background, evaluation, small1, small2, small",
    "1x28x28", tuple(SPLITS), False,
)
def load_omniglot(split: str, data_dir: str | Path | None) -> TensorData:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    classes: list[str] = []
    for name in SPLITS[split]:
        x, names, y = load_archive(name, data_dir)
        new = [i for i, c in enumerate(names) if c not in set(classes)]  # a character in two sets is kept once
        remap = np.full(len(names), -1, dtype=np.int64)
        remap[new] = np.arange(len(classes), len(classes) + len(new))
        keep = remap[y] >= 0
        xs.append(x[keep])
        ys.append(remap[y[keep]])
        classes += [names[i] for i in new]
    x_t = torch.from_numpy(np.concatenate(xs)).float().div_(255.0).unsqueeze(1)
    return TensorData(x_t, torch.from_numpy(np.concatenate(ys)), classes, f"omniglot:{split}", preprocess={"invert": True})
