"""Data: named loaders in their official layouts, user sources, batching, transforms."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import warnings

import h5py
import numpy as np
import pytest
import torch

from transferkit.data import (
    Augment,
    TensorData,
    balanced_batches,
    batches,
    check_labels,
    conform,
    endless,
    few_labels,
    load_data,
    pair_shapes,
)
from transferkit.data.datasets import read_idx
from transferkit.data.download import download, locate
from transferkit.errors import TransferkitError


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_official_idx_layout(tmp_path, gz):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28))
    labels = np.arange(7) % 10
    sfx = ".gz" if gz else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{sfx}", images, gz)
    write_idx(raw / f"t10k-labels-idx1-ubyte{sfx}", labels, gz)
    d = load_data("mnist:test", data_dir=tmp_path)
    assert d.x.shape == (7, 1, 28, 28)
    assert torch.allclose(d.x[3, 0], torch.tensor(images[3] / 255.0, dtype=torch.float32))
    assert d.y.tolist() == labels.tolist()


def test_idx_rejects_garbage(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(TransferkitError, match="not an idx file"):
        read_idx(bad)


def test_usps_h5_layout(tmp_path):
    (tmp_path / "USPS").mkdir()
    with h5py.File(tmp_path / "USPS" / "usps.h5", "w") as f:
        for split, n in (("train", 5), ("test", 3)):
            g = f.create_group(split)
            g["data"] = np.linspace(0, 1, n * 256, dtype=np.float32).reshape(n, 256)
            g["target"] = np.arange(n, dtype=np.int32)
    d = load_data("usps:test", data_dir=tmp_path)
    assert d.x.shape == (3, 1, 16, 16) and d.y.tolist() == [0, 1, 2]


def test_usps_libsvm_layout(tmp_path):
    lines = []
    for label in (1, 10):  # LIBSVM labels are 1..10, values in [-1, 1]
        lines.append(f"{label} " + " ".join(f"{i}:{-1 + 2 * (i % 2)}" for i in range(1, 257)))
    (tmp_path / "usps.bz2").write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    d = load_data("usps", data_dir=tmp_path)
    assert d.y.tolist() == [0, 9]
    assert d.x.shape == (2, 1, 16, 16)
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0


def test_missing_files_offline_names_file_and_folder(tmp_path):
    with pytest.raises(TransferkitError) as e:
        load_data("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path) in msg and "--data-dir" in msg


def test_env_data_dir_is_searched(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([1, 2]))
    monkeypatch.setenv("TRANSFERKIT_DATA_DIR", str(tmp_path))
    assert len(load_data("mnist:test")) == 2


def test_download_verifies_checksum_and_deletes_bad_file(tmp_path):
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "cache" / "file.bin"
    good = hashlib.md5(b"payload").hexdigest()
    assert download(src.as_uri(), dest, good).read_bytes() == b"payload"
    dest.unlink()
    with pytest.raises(TransferkitError, match="checksum mismatch"):
        download(src.as_uri(), dest, "0" * 32)
    assert not dest.exists() and not dest.with_name("file.bin.part").exists()


def test_locate_downloads_only_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFERKIT_OFFLINE")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "remote.txt"
    remote.write_text("hello")
    md5 = hashlib.md5(b"hello").hexdigest()
    got = locate("demo", ["demo/file.txt"], [remote.as_uri()], md5)
    assert got == tmp_path / "cache" / "demo" / "file.txt"
    remote.unlink()  # a second lookup finds the cached copy and does not download
    assert locate("demo", ["demo/file.txt"], [remote.as_uri()], md5) == got


def test_bundled_offline_sets():
    d = load_data("digits")
    m = load_data("mnist5k", "test")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert m.input_shape == (1, 28, 28) and len(m) == 1000
    assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0


def test_unknown_dataset_lists_known():
    with pytest.raises(TransferkitError, match="unknown dataset 'mnits'.*mnist"):
        load_data("mnits")


def test_image_folder_skips_or_refuses_corrupt_files(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray((np.random.default_rng(i).random((10, 12)) * 255).astype(np.uint8)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d = load_data(str(tmp_path))
    assert len(d) == 4 and d.classes == ["cat", "dog"] and d.input_shape == (1, 10, 12)
    assert any("broken.png" in str(x.message) for x in w)
    with pytest.raises(TransferkitError, match=r"broken\.png"):
        load_data(str(tmp_path), on_bad_file="error")
    d8 = load_data(str(tmp_path), image_size=8, channels=3)
    assert d8.input_shape == (3, 8, 8)


def test_npz_and_csv_sources(tmp_path):
    x = np.random.default_rng(0).random((6, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", X=x, y=np.array([0, 1, 2, 0, 1, 2]))
    d = load_data(str(tmp_path / "a.npz"))
    assert d.x.shape == (6, 1, 4, 4) and d.num_classes == 3
    (tmp_path / "t.csv").write_text("f1,f2,label\n0.5,1.0,cat\n0.1,0.2,dog\n0.3,0.3,cat\n")
    c = load_data(str(tmp_path / "t.csv"))
    assert c.x.shape == (3, 2) and c.classes == ["cat", "dog"] and c.y.tolist() == [0, 1, 0]
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(TransferkitError, match="no array 'X'"):
        load_data(str(tmp_path / "bad.npz"))


def test_batches_cover_every_index_once():
    d = TensorData(torch.arange(10.0).view(10, 1), torch.arange(10) % 3)
    seen = torch.cat([x for x, _ in batches(d, 4, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert sorted(seen.flatten().tolist()) == list(range(10))
    it = endless(d, 4, torch.Generator().manual_seed(0))
    assert all(next(it)[0].shape[0] == 4 for _ in range(7))


def test_few_labels_is_seeded_and_per_class(digits16):
    a, rest = few_labels(digits16, 5, seed=3)
    b, _ = few_labels(digits16, 5, seed=3)
    assert torch.equal(a.x, b.x)
    assert a.class_counts().tolist() == [5] * 10 and len(rest) == len(digits16) - 50
    with pytest.raises(TransferkitError, match="fewer than --labels-per-class"):
        few_labels(digits16, 10_000)


def test_balanced_sampling_evens_out_classes():
    y = torch.tensor([0] * 90 + [1] * 10)
    d = TensorData(torch.zeros(100, 1), y)
    drawn = torch.cat([b for _, b in balanced_batches(d, 200, 10, torch.Generator().manual_seed(0))])
    frac = drawn.float().mean().item()
    assert 0.45 < frac < 0.55


def test_check_labels_out_of_range():
    d = TensorData(torch.zeros(3, 2), torch.tensor([0, 1, 5]), name="t")
    with pytest.raises(TransferkitError, match="label 5 is out of range for a head with 3 classes"):
        check_labels(d, 3)


def test_conform_and_pair_shapes():
    a = TensorData(torch.rand(2, 1, 28, 28), None, name="a")
    b = TensorData(torch.rand(2, 3, 16, 16), None, name="b")
    with pytest.raises(TransferkitError, match="--image-size"):
        pair_shapes(a, b, None, None)
    a2, b2 = pair_shapes(a, b, 16, 1)
    assert a2.input_shape == b2.input_shape == (1, 16, 16)
    grey = conform(TensorData(torch.full((1, 3, 4, 4), 0.5), None), channels=1)
    assert torch.allclose(grey.x, torch.full((1, 1, 4, 4), 0.5))


def test_augment_shift_moves_pixels_and_is_seeded():
    x = torch.zeros(8, 1, 9, 9)
    x[:, :, 4, 4] = 1.0
    aug = Augment(shift=2)
    y1 = aug(x, torch.Generator().manual_seed(0))
    y2 = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2)
    assert not torch.allclose(y1, x)
    assert torch.allclose(y1.sum((1, 2, 3)), torch.ones(8), atol=1e-4)  # mass kept: a translation
    flipped = Augment(flip=True)(torch.arange(4.0).view(1, 1, 1, 4).repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    rows = {tuple(r.round().tolist()) for r in flipped[:, 0, 0]}
    assert rows == {(0.0, 1.0, 2.0, 3.0), (3.0, 2.0, 1.0, 0.0)}


def test_augment_colour_folds_each_channel_about_its_own_random_level():
    x = torch.zeros(64, 3, 5, 5)
    x[:, :, 2, 2] = 1.0  # a white dot on black
    y = Augment(colour=True)(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, Augment(colour=True)(x, torch.Generator().manual_seed(0)))
    level = y[:, :, 0, 0]  # the background takes the level l ...
    assert torch.allclose(y[:, :, 2, 2], 1 - level)  # ... and the dot 1 - l: contrast kept, colours differ
    assert torch.allclose(y[:, :, 1:, 1:].amax((2, 3)), torch.maximum(level, 1 - level))
    assert level.std(0).min() > 0.2 and (level[:, 0] - level[:, 1]).abs().mean() > 0.2  # drawn per image and channel
    assert Augment(colour=True).active and not Augment(colour=True).geometric
    moved = Augment(colour=True, shift=2)(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(moved, y)
