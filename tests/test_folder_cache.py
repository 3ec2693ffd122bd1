"""Decoded image folders are cached: the second read is exact, and any change to the folder is seen."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transferkit.data import datasets as ds
from transferkit.data import load_image_folder


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_second_read_comes_from_the_cache_and_is_identical(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs")
    first = load_image_folder(root, image_size=8)
    with monkeypatch.context() as m:
        m.setattr(ds, "read_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
        second = load_image_folder(root, image_size=8)
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert second.classes == ["cat", "dog"] and second.x.dtype == torch.float32
    assert torch.equal(load_image_folder(root, image_size=8, cache=False).x, first.x)


def test_a_changed_file_or_other_options_decode_again(tmp_path):
    root = _folder(tmp_path / "imgs")
    before = load_image_folder(root, image_size=8)
    Image.fromarray(np.zeros((9, 7, 3), dtype=np.uint8)).save(root / "dog" / "0.png")
    os.utime(root / "dog" / "0.png", ns=(1, 1))  # a new modification time even on coarse clocks
    after = load_image_folder(root, image_size=8)
    assert not torch.equal(before.x, after.x) and float(after.x[3].abs().sum()) == 0.0
    assert load_image_folder(root, image_size=4).x.shape[-1] == 4
    assert load_image_folder(root, image_size=8, channels=1).x.shape[1] == 1
