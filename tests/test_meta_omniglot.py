"""The omniglot loader on small archives made in the test (official names and layout)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from transferkit.data import load_data
from transferkit.data.download import cache_dir
from transferkit.errors import TransferkitError
from transferkit.meta import class_groups


def png(dark: bool) -> bytes:
    arr = np.full((105, 105), 255, np.uint8)
    if dark:
        arr[40:60, 40:60] = 0
    buf = io.BytesIO()
    Image.fromarray(arr).convert("1").save(buf, "PNG")
    return buf.getvalue()


def make_zip(path, top, chars, extra=None):
    with zipfile.ZipFile(path, "w") as z:
        for alphabet, char in chars:
            for d in range(3):
                z.writestr(f"{top}/{alphabet}/{char}/{d:02d}.png", png(d == 0))
        for name, data in (extra or {}).items():
            z.writestr(name, data)


@pytest.fixture()
def mirror(tmp_path):
    (tmp_path / "omniglot").mkdir()
    make_zip(tmp_path / "omniglot" / "images_background_small1.zip", "images_background_small1",
             [("Greek", "character01"), ("Greek", "character02"), ("Korean", "character01")])
    make_zip(tmp_path / "omniglot" / "images_background_small2.zip", "images_background_small2",
             [("Greek", "character01"), ("Tagalog", "character01")])
    return tmp_path


def test_small_sets_merge_decode_and_cache(mirror):
    d = load_data("omniglot:small", data_dir=mirror)
    assert d.classes == ["Greek/character01", "Greek/character02", "Korean/character01", "Tagalog/character01"]
    assert d.x.shape == (12, 1, 28, 28) and d.input_shape == (1, 28, 28)
    assert d.class_counts().tolist() == [3, 3, 3, 3]  # Greek/character01 kept once
    assert float(d.x[0].max()) > 0.9 and float(d.x[0, 0, 0, 0]) == 0.0  # strokes high, paper 0
    assert float(d.x[1].max()) == 0.0  # a blank drawing
    assert class_groups(d.classes) == ["Greek", "Greek", "Korean", "Tagalog"]
    cached = cache_dir() / "omniglot" / "images_background_small1.28x28.npz"
    assert cached.is_file()
    again = load_data("omniglot:small1", data_dir=mirror)
    assert again.num_classes == 3 and np.array_equal(again.x.numpy(), d.x[:9].numpy())


def test_unsafe_archive_is_refused(tmp_path):
    (tmp_path / "omniglot").mkdir()
    make_zip(tmp_path / "omniglot" / "images_background_small2.zip", "images_background_small2",
             [("Greek", "character01")], extra={"../../evil.txt": b"x"})
    with pytest.raises(TransferkitError, match="would be written outside"):
        load_data("omniglot:small2", data_dir=tmp_path)


def test_missing_archive_offline_says_where(tmp_path):
    with pytest.raises(TransferkitError, match="images_evaluation.zip' not found"):
        load_data("omniglot:evaluation", data_dir=tmp_path)
