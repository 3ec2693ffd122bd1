"""--model-hidden and --model-dropout reach the architecture, and are refused where they do not apply."""

from __future__ import annotations

from transferkit.cli import main
from transferkit.models import load_model


def test_train_builds_the_mlp_it_is_asked_for(tmp_path, capsys):
    rc = main(["train", "--data", "digits", "--model", "mlp", "--model-hidden", "64,32", "--model-dropout", "0.1",
               "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r")])
    assert rc == 0
    model = load_model(tmp_path / "r")
    assert model.spec["kwargs"] == {"hidden": [64, 32], "dropout": 0.1}
    widths = [m.out_features for m in model.backbone.modules() if m.__class__.__name__ == "Linear"]
    assert widths == [64, 32]


def test_an_option_the_architecture_does_not_take_is_one_line_before_any_run_folder(tmp_path, capsys):
    rc = main(["adapt", "--method", "dann", "--source", "digits", "--target", "digits:test", "--model", "lenet",
               "--model-hidden", "64", "--quiet", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == "error: --model lenet does not take --model-hidden; see `transferkit models`"
    assert not (tmp_path / "r").exists()


def test_standardize_is_saved_with_the_model_and_makes_it_blind_to_brightness_and_tint(tmp_path, capsys):
    import torch

    rc = main(["train", "--data", "digits", "--model", "lenet", "--image-size", "16", "--channels", "3", "--model-standardize",
               "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r")])
    assert rc == 0, capsys.readouterr().err
    model = load_model(tmp_path / "r").eval()
    assert model.spec["kwargs"] == {"standardize": True}
    x = torch.rand(4, 3, 16, 16)
    gain, offset = torch.tensor([0.5, 2.0, 1.3]).view(1, 3, 1, 1), torch.tensor([0.2, -0.1, 0.4]).view(1, 3, 1, 1)
    with torch.no_grad():
        same = model(x * gain + offset)
        assert torch.allclose(model(x), same, atol=1e-3)
        assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-3)  # it still sees the image


def test_standardize_is_refused_by_an_architecture_without_it(tmp_path, capsys):
    rc = main(["train", "--data", "digits", "--model", "mlp", "--model-standardize", "--epochs", "1", "--quiet",
               "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1] == "error: --model mlp does not take --model-standardize; see `transferkit models`"
