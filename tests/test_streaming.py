"""Image folders streamed from disk: mode conversion, bad files, the switch, and every recipe on a stream."""

from __future__ import annotations

import copy
import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.adapt import AdaptSpec, adapt
from transferkit.cli import main
from transferkit.data import load_image_folder, read_image
from transferkit.data.streaming import (
    StreamingFolder,
    Transform,
    evaluate_source,
    list_folder,
    open_image_folder,
)
from transferkit.distill import DistillSpec, distill
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.models import create_model


def _grey16(value: int, size: int = 6) -> Image.Image:
    return Image.fromarray(np.full((size, size), value, dtype=np.uint16))


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """One file of each awkward kind in class ``a``; plain RGB files in ``b``; a truncated JPEG in ``a``."""
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(np.full((6, 6), 64, np.uint8), "L").save(root / "a" / "grey.png")
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent: composited over white
    Image.fromarray(rgba, "RGBA").save(root / "a" / "rgba.png")
    pal = Image.new("P", (6, 6), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 1: blue
    pal.save(root / "a" / "palette.png")
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(root / "a" / "cmyk.jpg", quality=100)  # red in CMYK
    _grey16(32768).save(root / "a" / "grey16.png")  # half of 65535
    jpg = root / "b" / "ok0.jpg"
    for i in range(3):
        Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(root / "b" / f"ok{i}.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(jpg, quality=90)
    data = jpg.read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    jpg.unlink()
    return root


def _decode(root: Path, name: str, mode: str) -> np.ndarray:
    with Image.open(root / name) as im:
        return Transform(mode, 6)(im, None).astype(np.float32) / 255.0


def test_modes_converted_to_rgb_and_grey(mixed: Path) -> None:
    grey = _decode(mixed, "a/grey.png", "RGB")
    assert grey.shape == (3, 6, 6) and np.allclose(grey, 64 / 255, atol=1e-6)
    assert np.allclose(_decode(mixed, "a/rgba.png", "RGB"), 1.0)  # transparent -> white, not red or black
    blue = _decode(mixed, "a/palette.png", "RGB")
    assert np.allclose(blue[2], 1.0) and np.allclose(blue[:2], 0.0)
    red = _decode(mixed, "a/cmyk.jpg", "RGB")
    assert red[0].mean() > 0.9 and red[1].mean() < 0.1 and red[2].mean() < 0.1
    half = _decode(mixed, "a/grey16.png", "RGB")
    assert np.allclose(half, 0.5, atol=1 / 255)  # scaled by 65535, not clipped to 1
    assert np.allclose(_decode(mixed, "a/grey16.png", "L"), 0.5, atol=1 / 255)
    arr, _ = read_image(mixed / "a" / "grey16.png")  # the in-memory path reads it the same way
    assert arr.shape == (1, 6, 6) and np.allclose(arr, 0.5, atol=1 / 255)


def test_bad_file_skipped_with_one_warning_or_stops(mixed: Path) -> None:
    src = StreamingFolder(list_folder(mixed), size=6, workers=0, crop_scale=None, flip=False)
    assert len(src) == 9 and src.classes == ["a", "b"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two passes: still one warning
            seen = sum(len(x) for _, x in src.eval_batches(4))
    msgs = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert seen == 8 and len(msgs) == 1 and "truncated.jpg" in msgs[0] and "1 skipped" in msgs[0]
    strict = StreamingFolder(list_folder(mixed), size=6, on_bad_file="error")
    with pytest.raises(TransferkitError, match="truncated.jpg.*--on-bad-file skip"):
        list(strict.eval_batches(4))


def _square_folder(root: Path, n: int = 8, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for c, base in (("cat", 0.2), ("dog", 0.7)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = np.clip(rng.normal(base, 0.15, (size, size, 3)), 0, 1)
            Image.fromarray((arr * 255).astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def test_switch_budget_and_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _square_folder(tmp_path / "f")
    monkeypatch.setenv("TRANSFERKIT_STREAM_BUDGET_MB", "1")
    assert not isinstance(open_image_folder(root), StreamingFolder)  # 16 x 3x8x8 floats: under 1 MiB
    assert isinstance(open_image_folder(root, size_hint=512), StreamingFolder)  # 16 x 3x512x512 floats: 48 MiB
    assert not isinstance(open_image_folder(root, size_hint=512, stream=False), StreamingFolder)
    assert isinstance(open_image_folder(root, stream=True), StreamingFolder)


def test_streamed_finetune_matches_tensor_path(tmp_path: Path) -> None:
    root = _square_folder(tmp_path / "f")
    tensor = load_image_folder(root, cache=False)
    stream = StreamingFolder(list_folder(root), size=8, crop_scale=None, flip=False)  # the evaluation transform
    model = create_model("mlp", 2, (3, 8, 8), classes=["cat", "dog"])
    config = TrainConfig(epochs=2, lr=0.05, seed=0)
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    finetune(m1, tensor, tensor, FinetuneSpec(), config, batch_size=4, verbose=False)
    finetune(m2, stream, stream, FinetuneSpec(), config, batch_size=4, verbose=False)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), k
    assert evaluate_source(m2, stream)["acc"] == pytest.approx(evaluate_source(m1, tensor)["acc"])


def test_two_workers_give_the_same_batches_as_none(tmp_path: Path) -> None:
    root = _square_folder(tmp_path / "f", n=5)
    batches = []
    for workers in (0, 2):
        src = StreamingFolder(list_folder(root), size=6, workers=workers, crop_scale=(0.3, 1.0), flip=True)
        gen = torch.Generator().manual_seed(3)
        batches.append([(idx, x, y) for idx, x, y in src.stream(4).batches(0, gen)])
    assert len(batches[0]) == 3
    for (i0, x0, y0), (i1, x1, y1) in zip(*batches, strict=True):
        assert torch.equal(i0, i1) and torch.equal(x0, x1) and torch.equal(y0, y1)
    plain = StreamingFolder(list_folder(root), size=6).transform(False)
    assert not torch.equal(batches[0][0][1][0], torch.zeros(0)) and plain.crop_scale is None


def test_two_views_weak_and_strong(tmp_path: Path) -> None:
    src = StreamingFolder(list_folder(_square_folder(tmp_path / "f", n=3)), size=6, crop_scale=(0.2, 0.4))
    (idx, (weak, strong), _y), *_ = list(src.stream(6, views=2).batches(0, torch.Generator().manual_seed(0)))
    clean = torch.cat([x for _, x in src.eval_batches(6)])
    assert torch.equal(weak, clean[idx]) and not torch.equal(strong, weak)


@pytest.mark.parametrize("method", ["dann", "adamatch", "mcc", "source-only"])
def test_adapt_with_streamed_target(tmp_path: Path, method: str) -> None:
    src = load_image_folder(_square_folder(tmp_path / "s"), cache=False)
    test = StreamingFolder(list_folder(_square_folder(tmp_path / "t", n=6)), size=8, workers=0)
    spec = AdaptSpec(method=method, source_epochs=1, batch_size=4, val_target_size=10, val_fraction=0.25)
    res = adapt(src, test.unlabeled(), spec, TrainConfig(epochs=1, lr=0.01, seed=0), model="mlp", target_test=test,
                verbose=False)
    assert 0.0 <= res.summary["metrics"]["target_test_acc"] <= 100.0
    assert res.summary["selection"]["note"] == "no target labels used"


def test_distill_on_streamed_folder(tmp_path: Path) -> None:
    stream = StreamingFolder(list_folder(_square_folder(tmp_path / "f")), size=8)
    teacher = create_model("mlp", 2, (3, 8, 8), classes=["cat", "dog"])
    student = create_model("mlp", 2, (3, 8, 8), classes=["cat", "dog"], hidden=(8,))
    out = distill(teacher, student, stream, stream, DistillSpec(), TrainConfig(epochs=1, seed=0), batch_size=4, verbose=False)
    assert out.result.best_epoch == 0


class _Counter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_args: object) -> None:
        self.calls += 1


def test_feature_cache_reused_and_invalidated(tmp_path: Path) -> None:
    root = _square_folder(tmp_path / "f")
    model = create_model("mlp", 2, (3, 8, 8), classes=["cat", "dog"])
    spec, config = FinetuneSpec(strategy="linear-probe"), TrainConfig(epochs=3, seed=0)

    def run() -> int:
        m = copy.deepcopy(model)
        counter = _Counter(m.backbone)
        finetune(m, StreamingFolder(list_folder(root), size=8), None, spec, config, batch_size=4, verbose=False)
        return counter.calls

    assert run() > 0  # computed once ...
    assert run() == 0  # ... and read back, memory-mapped, by the next run
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "cat" / "0.png")
    os.utime(root / "cat" / "0.png", ns=(1, 1))
    assert run() > 0  # a changed file: computed again
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.backbone.parameters()).add_(1.0)
    counter = _Counter(other.backbone)
    finetune(other, StreamingFolder(list_folder(root), size=8), None, spec, config, batch_size=4, verbose=False)
    assert counter.calls > 0  # other weights: computed again


def _saved_model(tmp_path: Path) -> Path:
    model = create_model("mlp", 2, (3, 8, 8), classes=["a", "b"])
    path = tmp_path / "m.safetensors"
    model.save(path)
    return path


def test_predict_and_eval_on_streamed_folder(mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _saved_model(tmp_path)
    out = tmp_path / "p.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["predict", "--model-from", str(model), "--data", str(mixed), "--output", str(out), "--workers", "2"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == [f for f in list_folder(mixed).files if "truncated" not in f]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["eval", "--model-from", str(model), "--data", str(mixed), "--stream"])
    assert rc == 0 and "n 8" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["empty", "flat", "workers"])
def test_bad_inputs_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    workers = "0"
    if case == "flat":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "x.png")
    if case == "workers":
        _square_folder(folder / "sub")
        folder, workers = folder / "sub", "-1"
    rc = main(["train", "--data", str(folder), "--model", "mlp", "--epochs", "1", "--stream", "--workers", workers,
               "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")
    expected = {"empty": "no class folders", "flat": "subfolder named after the class", "workers": "--workers must be"}[case]
    assert expected in err[0]
    assert not (tmp_path / "run").exists()


def test_cli_train_then_finetune_on_streamed_folders(tmp_path: Path) -> None:
    import json

    root = _square_folder(tmp_path / "f")
    common = ["--stream", "--workers", "0", "--epochs", "1", "--batch-size", "4", "--quiet", "--test-data", str(root)]
    assert main(["train", "--data", str(root), "--model", "mlp", "--val-split", "0.25", "--crop-scale", "0.5", "1",
                 "--run-dir", str(tmp_path / "src"), *common]) == 0
    summary = json.loads((tmp_path / "src" / "summary.json").read_text())
    assert summary["test"]["n"] == 16 and "val_acc" in summary["metrics"]
    assert main(["finetune", "--init", str(tmp_path / "src"), "--data", str(root), "--strategy", "linear-probe",
                 "--labels-per-class", "4", "--run-dir", str(tmp_path / "ft"), *common]) == 0
    assert list((Path(os.environ["TRANSFERKIT_CACHE"]) / "features").iterdir())  # the probe's features were cached


def test_stream_refused_where_data_is_held_in_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _square_folder(tmp_path / "f")
    rc = main(["adapt", "--method", "coral", "--source", str(root), "--target", str(root), "--stream", "--quiet",
               "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --stream: this command (or method) holds its data in memory; drop --stream"]
    rc = main(["eval", "--model-from", str(_saved_model(tmp_path)), "--data", str(root), "--stream", "--corruption", "gaussian_noise"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "add --no-stream" in err[0]
