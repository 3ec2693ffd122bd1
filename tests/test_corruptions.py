"""Common corruptions (Hendrycks & Dietterich 2019): each one deterministic, in range, monotone in severity; the CLI option."""

from __future__ import annotations

import csv
import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.cli import main
from transferkit.data import TensorData, load_data
from transferkit.data.corruptions import (
    CORRUPTIONS,
    PARAMETERS,
    SEVERITIES,
    box_resize_matrix,
    corrupt,
    corrupt_data,
    disk_kernel,
)
from transferkit.engine import TrainConfig, seed_everything
from transferkit.errors import TransferkitError
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.models import create_model

REQUIRED = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness", "pixelate",
            "jpeg_compression"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four 32x32 RGB test images: colour gradients, a disk, a bright bar and texture, 8-bit values.

    The texture matters for pixelate: on a very smooth image its distance can dip from severity 2
    (32 -> 28 -> 32 pixels) to 3 (32 -> 27 -> 32), where the box grid happens to alias less.
    """
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    out = []
    for i in range(4):
        r = 0.2 + 0.6 * xx
        gch = 0.3 + 0.4 * yy
        b = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1 + 0.02 * i).float() * 0.5 + 0.2
        img = torch.stack([r, gch, b]) + 0.3 * torch.rand(3, 32, 32, generator=g)
        img[:, 8 + i : 14 + i, 4:28] = 0.9  # a bright bar: sharp edges
        out.append(img.clamp(0, 1))
    return (torch.stack(out) * 255).round() / 255


def test_the_required_corruptions_are_registered_with_five_severities_and_docs():
    for name in REQUIRED:
        assert name in CORRUPTIONS and len(PARAMETERS[name]) == 5
        assert CORRUPTIONS.entry(name).doc


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_in_range_keeps_shape_and_grows_with_severity(images, name):
    distances = []
    for s in SEVERITIES:
        out = corrupt(images, name, s, seed=3)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(out, corrupt(images, name, s, seed=3))  # same seed: same bytes
        distances.append(float((out - images).abs().mean()))
    assert distances[0] > 0, name
    assert all(a < b for a, b in itertools.pairwise(distances)), (name, distances)
    assert torch.equal(images, (images * 255).round() / 255)  # the input is left alone


def test_random_corruptions_change_with_the_seed(images):
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"):
        assert not torch.equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1)), name


def test_corruptions_differ_from_each_other(images):
    outs = {name: corrupt(images, name, 5, seed=0) for name in CORRUPTIONS}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert float((outs[a] - outs[b]).abs().mean()) > 1e-3, (a, b)


def test_noise_statistics_match_the_definitions():
    x = torch.full((64, 3, 32, 32), 0.5)
    noise = corrupt(x, "gaussian_noise", 5, seed=0) - x  # c = 0.10, no clipping at 0.5
    assert abs(float(noise.mean())) < 0.002 and abs(float(noise.std()) - 0.10) < 0.002
    shot = corrupt(x, "shot_noise", 5, seed=0) * 50  # Poisson(0.5 * 50) / 50
    assert abs(float(shot.mean()) - 25) < 0.1 and abs(float(shot.var()) - 25) < 1.0
    imp = corrupt(x, "impulse_noise", 5, seed=0)
    flipped = imp != 0.5
    assert abs(float(flipped.float().mean()) - 0.07) < 0.005  # 7% of the values
    assert abs(float(imp[flipped].mean()) - 0.5) < 0.02  # salt and pepper equally often


def test_contrast_and_brightness_match_their_formulas(images):
    mean = images.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(corrupt(images, "contrast", 5), ((images - mean) * 0.15 + mean).clamp(0, 1))
    # brightness: the HSV value (max over channels) rises by 0.3 (capped at 1); hue and saturation stay
    import colorsys

    out = corrupt(images, "brightness", 5)
    for (r, g, b), (r2, g2, b2) in zip(images[0, :, :4, :4].reshape(3, -1).t().tolist(), out[0, :, :4, :4].reshape(3, -1).t().tolist(), strict=True):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        expected = colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))
        assert np.allclose((r2, g2, b2), expected, atol=1e-5)
    black = corrupt(torch.zeros(1, 3, 4, 4), "brightness", 5)
    assert torch.allclose(black, torch.full_like(black, 0.3))  # black becomes grey


def test_pixelate_matches_pillows_box_resampling(images):
    for s, c in zip(SEVERITIES, PARAMETERS["pixelate"], strict=True):
        img = Image.fromarray((images[1] * 255).round().byte().permute(1, 2, 0).numpy())
        small = int(32 * c)
        ref = np.asarray(img.resize((small, small), Image.BOX).resize((32, 32), Image.BOX), dtype=np.float32) / 255
        ours = corrupt(images[1:2], "pixelate", s)[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - ref).max() <= 1.5 / 255, s  # Pillow rounds to 8 bits
    m = box_resize_matrix(4, 2)
    assert torch.allclose(m, torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], dtype=m.dtype))


def test_defocus_kernel_is_a_normalised_symmetric_disk():
    k = disk_kernel(1.5, 0.1)
    assert k.shape == (5, 5) and abs(float(k.sum()) - 1) < 1e-6
    assert torch.allclose(k, k.t()) and torch.allclose(k, k.flip(0))
    assert torch.allclose(k[1:4, 1:4], torch.full((3, 3), 1 / 9), atol=1e-6)  # pixel centres within 1.5: a 3x3 block
    assert disk_kernel(0.3, 0.4).shape == (3, 3)  # one pixel, softened by the 3x3 Gaussian


def test_jpeg_is_pillows_jpeg_at_the_severitys_quality(images):
    img = (images[0] * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=40)
    ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(corrupt(images[:1], "jpeg_compression", 5)[0], ref)
    grey = corrupt(images[:, :1], "jpeg_compression", 5)
    assert grey.shape == (4, 1, 32, 32)


def test_bad_names_severities_and_inputs_are_one_line_errors(images):
    with pytest.raises(TransferkitError, match="unknown corruption 'fog'; known corruptions: .*gaussian_noise"):
        corrupt(images, "fog", 3)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(TransferkitError, match="severity must be a whole number from 1 to 5"):
            corrupt(images, "contrast", bad)  # type: ignore[arg-type]
    table = TensorData(torch.rand(10, 4), torch.zeros(10, dtype=torch.long), name="table")
    with pytest.raises(TransferkitError, match="applies to images, but table holds feature vectors"):
        corrupt_data(table, "contrast", 3)
    with pytest.raises(TransferkitError, match="needs grey or RGB images"):
        corrupt(torch.rand(2, 2, 32, 32), "jpeg_compression", 1)


def test_corrupt_data_keeps_labels_and_names_the_corruption(digits16):
    out = corrupt_data(digits16, "shot_noise", 2, seed=1)
    assert torch.equal(out.y, digits16.y) and out.classes == digits16.classes
    assert out.name.endswith("+shot_noise:2") and not torch.equal(out.x, digits16.x)


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory, digits16):
    seed_everything(0)
    model = create_model("conv4", 10, digits16.input_shape, classes=digits16.classes)
    finetune(model, digits16, None, FinetuneSpec(), TrainConfig(epochs=2), verbose=False)
    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    model.save(path)
    return path


def test_eval_with_a_corruption_is_worse_and_reproducible(digit_model, tmp_path, capsys):
    def acc(*extra: str) -> float:
        rc = main(["eval", "--model-from", str(digit_model), "--data", "digits:test", "--image-size", "16", *extra])
        out = capsys.readouterr()
        assert rc == 0, out.err
        return float(out.out.split("accuracy ")[1].split("%")[0])

    clean = acc()
    noisy = acc("--corruption", "impulse_noise", "--severity", "5")
    assert noisy < clean - 5, (clean, noisy)
    assert acc("--corruption", "impulse_noise", "--severity", "5") == noisy
    assert acc("--corruption", "impulse_noise") == noisy  # severity 5 by default


def test_predict_with_a_corruption_and_tent(digit_model, tmp_path, capsys):
    out = tmp_path / "p.csv"
    rc = main(["predict", "--model-from", str(digit_model), "--data", "digits:test", "--image-size", "16",
               "--corruption", "contrast", "--severity", "4", "--adapt", "tent", "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == len(load_data("digits", "test"))


def test_adapt_shot_reads_a_corrupted_target(digit_model, tmp_path, capsys):
    rc = main(["adapt", "--method", "shot", "--init", str(digit_model), "--target", "digits:test", "--target-test", "digits:test",
               "--image-size", "16", "--corruption", "gaussian_noise", "--severity", "3", "--epochs", "1",
               "--run-dir", str(tmp_path / "run"), "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["target"].endswith("+gaussian_noise:3")


@pytest.mark.parametrize(("extra", "message"), [
    (["--corruption", "fog"], "unknown corruption 'fog'"),
    (["--corruption", "contrast", "--severity", "7"], "severity must be a whole number from 1 to 5"),
    (["--severity", "3"], "--severity sets the level of --corruption"),
])
def test_cli_refuses_a_bad_corruption_in_one_line(digit_model, tmp_path, capsys, extra, message):
    for command in (["eval"], ["predict", "--output", str(tmp_path / "p.csv")]):
        rc = main([*command, "--model-from", str(digit_model), "--data", "digits:test", "--image-size", "16", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "p.csv").exists()


def test_cli_refuses_a_corruption_of_a_feature_table(tmp_path, capsys):
    model = create_model("mlp", 3, (4,))
    model.save(tmp_path / "mlp.safetensors")
    np.savez(tmp_path / "t.npz", X=np.random.rand(6, 4).astype(np.float32), y=np.array([0, 1, 2, 0, 1, 2]))
    rc = main(["eval", "--model-from", str(tmp_path / "mlp.safetensors"), "--data", str(tmp_path / "t.npz"),
               "--corruption", "contrast"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "applies to images" in err[0], err


def test_datasets_lists_the_corruptions(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in REQUIRED) and "--corruption NAME --severity 1-5" in out
