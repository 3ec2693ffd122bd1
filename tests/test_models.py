"""Models: every architecture, layer groups, checkpoints, hooks, user backbones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferkit.errors import TransferkitError
from transferkit.models import (
    BACKBONE_DOCS,
    BACKBONES,
    Classifier,
    FeatureHooks,
    create_model,
    load_init,
    load_model,
    read_checkpoint,
)

TEXT_ARCHS = {"minilm", "text-bag", "text-tiny"}  # read token ids: tests/test_text*.py


def test_text_architectures_are_the_ones_this_file_leaves_out():
    assert {a for a in BACKBONES if "text" in BACKBONE_DOCS[a].lower()} == TEXT_ARCHS


@pytest.mark.parametrize("arch", sorted(TEXT_ARCHS))
def test_text_architectures_refuse_images_in_one_line(arch):
    with pytest.raises(TransferkitError, match=f"--model {arch} reads text"):
        create_model(arch, 7, (1, 28, 28))


@pytest.mark.parametrize("arch", sorted(set(BACKBONES) - TEXT_ARCHS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 16, 16), (3, 32, 32)])
def test_every_architecture_builds_for_each_input_size(arch, shape):
    model = create_model(arch, 7, shape)
    model.eval()
    assert model(torch.rand(2, *shape)).shape == (2, 7)
    assert model.features(torch.rand(2, *shape)).shape == (2, model.feature_dim)


def test_mlp_on_feature_tables_and_image_models_refuse_them():
    assert create_model("mlp", 3, (12,), hidden=(8,))(torch.rand(4, 12)).shape == (4, 3)
    with pytest.raises(TransferkitError, match="use --model mlp"):
        create_model("lenet", 3, (12,))


def test_unknown_model_lists_known():
    with pytest.raises(TransferkitError, match="unknown model 'lenett'.*lenet"):
        create_model("lenett", 10, (1, 28, 28))


def test_layer_groups_cover_all_parameters_in_order():
    m = create_model("lenet", 10, (1, 28, 28), bottleneck_dim=32)
    names = [n for n, _ in m.layer_groups()]
    assert names == ["backbone.conv1", "backbone.conv2", "backbone.fc", "bottleneck", "head"]
    n_grouped = sum(p.numel() for _, ps in m.layer_groups() for p in ps)
    assert n_grouped == sum(p.numel() for p in m.parameters())


def test_save_and_load_roundtrip(tmp_path):
    m = create_model("dtn", 4, (1, 16, 16), classes=["a", "b", "c", "d"]).eval()
    x = torch.rand(3, 1, 16, 16)
    m.save(tmp_path / "m.safetensors")
    m2 = load_model(tmp_path / "m.safetensors").eval()
    assert torch.allclose(m(x), m2(x)) and m2.classes == ["a", "b", "c", "d"]


def test_wrong_architecture_lists_mismatched_keys(tmp_path):
    create_model("lenet", 10, (1, 28, 28)).save(tmp_path / "lenet.safetensors")
    other = create_model("dtn", 10, (1, 28, 28))
    with pytest.raises(TransferkitError, match="does not fit this architecture.*(missing|unexpected|shape)"):
        load_init(other, tmp_path / "lenet.safetensors", skip_head=False)


def test_user_state_dict_and_pickle_refusal(tmp_path):
    m = create_model("mlp", 3, (5,), hidden=(4,))
    torch.save(m.state_dict(), tmp_path / "plain.pt")
    state, info = read_checkpoint(tmp_path / "plain.pt")
    assert info == {} and set(state) == set(m.state_dict())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(TransferkitError, match="refused to load"):
        read_checkpoint(tmp_path / "evil.pt")


def test_head_replacement_keeps_backbone():
    m = create_model("lenet", 10, (1, 28, 28))
    w = m.backbone.conv1[0].weight.clone()
    m.replace_head(3, ["x", "y", "z"])
    assert m.num_classes == 3 and m(torch.rand(1, 1, 28, 28)).shape == (1, 3)
    assert torch.equal(w, m.backbone.conv1[0].weight)


def test_feature_hooks_by_path_and_unknown_path():
    m = create_model("lenet", 10, (1, 28, 28))
    with FeatureHooks(m, ["backbone.conv2"]) as feats:
        m(torch.rand(2, 1, 28, 28))
    assert feats["backbone.conv2"].shape == (2, 800)
    with pytest.raises(TransferkitError, match="no module named backbone.nope; module paths are: .*backbone.conv1"):
        FeatureHooks(m, ["backbone.nope"])


def test_any_user_module_as_backbone():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU())
    m = Classifier.from_backbone(net, num_classes=2, out_features=6)
    assert m(torch.rand(5, 1, 4, 4)).shape == (5, 2)
    assert [n for n, _ in m.layer_groups()][-1] == "head"


def test_bare_backbone_state_dict_must_fit(tmp_path):
    m = create_model("lenet", 10, (1, 28, 28))
    torch.save(m.backbone.state_dict(), tmp_path / "bb.pt")
    fresh = create_model("lenet", 10, (1, 28, 28))
    load_init(fresh, tmp_path / "bb.pt", skip_head=True)
    assert torch.equal(fresh.backbone.conv1[0].weight, m.backbone.conv1[0].weight)
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(TransferkitError, match="does not fit this backbone"):
        load_init(fresh, tmp_path / "foreign.pt", skip_head=True)


def test_conv4_global_pool_averages_the_last_map_and_survives_a_roundtrip(tmp_path):
    flat = create_model("conv4", 5, (1, 28, 28))
    pooled = create_model("conv4", 5, (1, 28, 28), global_pool=True).eval()
    assert flat.head.in_features == 256 and pooled.head.in_features == 64
    x = torch.rand(4, 1, 28, 28)
    feats = pooled.features(x)
    block4 = pooled.backbone.block4[0]  # conv, BN, pool, ReLU: the map before the average
    h = x
    for name in ("block1", "block2", "block3"):
        h = getattr(pooled.backbone, name)(h)
    assert torch.allclose(feats, block4(h).mean((2, 3)), atol=1e-6)
    pooled.save(tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors").eval()
    assert again.head.in_features == 64 and torch.allclose(again(x), pooled(x))
