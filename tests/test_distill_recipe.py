"""The pieces of the Hinton et al. (2015) MNIST teacher recipe: whole-pixel jitter and input dropout (issue 16)."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from transferkit.commands.common import architecture_kwargs, build_model
from transferkit.distill import PixelJitter
from transferkit.errors import TransferkitError
from transferkit.models import create_model, load_model


def images(n: int = 64, size: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g)


def test_pixel_jitter_moves_each_image_by_whole_pixels_without_resampling():
    x = images()
    y = PixelJitter(2)(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    shifts = set()
    for i in range(len(x)):
        # the jittered image is the original shifted by some (dy, dx) in [-2, 2]^2, zero-filled: find it exactly
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy):10 - max(0, dy), max(0, -dx):10 - max(0, dx)]
                ref[:, max(0, dy):10 - max(0, -dy), max(0, dx):10 - max(0, -dx)] = src
                if torch.equal(ref, y[i]):
                    found.append((dy, dx))
        assert len(found) == 1, i
        shifts.add(found[0])
    assert len(shifts) > 10  # each image draws its own shift
    # every output pixel is an input pixel or 0: nothing is interpolated (bilinear shifts blur strokes)
    for i in range(len(x)):
        assert set(y[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {0.0}


def test_pixel_jitter_is_seeded_and_zero_shift_is_the_identity():
    x = images(8)
    a = PixelJitter(2)(x, torch.Generator().manual_seed(5))
    b = PixelJitter(2)(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(PixelJitter(0)(x, torch.Generator().manual_seed(5)), x)
    assert not PixelJitter(0).active


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_pixel_jitter_rejects_a_non_whole_or_negative_shift(bad):
    with pytest.raises(TransferkitError, match="whole number of pixels >= 0"):
        PixelJitter(bad)


def test_mlp_input_dropout_drops_inputs_in_training_only_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("mlp", 3, (1, 6, 6), hidden=(8,), input_dropout=0.5)
    plain = create_model("mlp", 3, (1, 6, 6), hidden=(8,))
    assert set(model.state_dict()) == set(plain.state_dict())  # no new parameters: checkpoints stay compatible
    x = torch.rand(4, 1, 6, 6)
    flat = model.backbone.flatten  # the input group: flatten, then dropout
    model.train()
    dropped = flat(x)
    assert (dropped == 0).float().mean() > 0.3  # about half the inputs are zeroed ...
    kept = dropped != 0
    assert torch.allclose(dropped[kept], (x.flatten(1) * 2)[kept])  # ... and the rest scaled by 1 / (1 - p)
    model.eval()
    assert torch.equal(flat(x), x.flatten(1))
    path = model.save(tmp_path / "m.safetensors")
    again = load_model(path)
    assert again.spec["kwargs"]["input_dropout"] == 0.5
    again.eval()
    assert torch.allclose(again(x), model(x))


def test_mlp_input_dropout_out_of_range_is_one_line_error():
    with pytest.raises(TransferkitError, match=r"mlp input dropout must be in \[0, 1\)"):
        create_model("mlp", 3, (4,), input_dropout=1.0)


def test_model_input_dropout_option_reaches_the_model():
    assert architecture_kwargs(None, None, 0.2) == {"input_dropout": 0.2}
    assert architecture_kwargs("16", 0.5) == {"hidden": (16,), "dropout": 0.5}
    model = build_model({"model_hidden": "16", "model_input_dropout": 0.2}, "mlp", 3, (4,))
    assert model.spec["kwargs"] == {"hidden": (16,), "input_dropout": 0.2}
    with pytest.raises(TransferkitError, match="--model lenet does not take --model-input-dropout"):
        build_model({"model_input_dropout": 0.2}, "lenet", 3, (1, 28, 28))


def test_train_and_adapt_cli_list_model_input_dropout():
    from transferkit.cli import cli

    for command in ("train", "adapt"):
        out = CliRunner().invoke(cli, [command, "--help"])
        assert out.exit_code == 0, out.output
        assert "--model-input-dropout" in out.output
