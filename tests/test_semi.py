"""Semi-supervised domain adaptation: --target-labels-per-class, MME and FixMatch.

Reference tests (MME's minimax gradients against a hand-written entropy, FixMatch's masked
consistency by hand), behaviour on a small shifted pair made here (with K labels the method
beats source-only and fine-tuning on the K labels alone), the cosine head's save/load round
trip through `predict --model-from`, and each bad input as one line.
"""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferkit.adapt import AdaptSpec, adapt
from transferkit.adapt.fixmatch import FixMatch, StrongAugment, fixmatch_consistency
from transferkit.adapt.methods import create_method
from transferkit.adapt.mme import MME, minimax_entropy
from transferkit.adapt.semi import WithTargetLabels, split_target_labels
from transferkit.cli import main
from transferkit.data import TensorData, load_data
from transferkit.engine import RunDir, StepInfo, TrainConfig, evaluate
from transferkit.errors import TransferkitError
from transferkit.finetune.api import FinetuneSpec, finetune
from transferkit.models import CosineHead, create_model, load_model

K = 2
INFO = StepInfo(epoch=0, step=0, total_steps=10)


# ------------------------------------------------------------------ data made here
@pytest.fixture(scope="module")
def shifted() -> dict[str, TensorData]:
    """sklearn digits as 64-column tables; the target halves the contrast and adds a grey offset.

    The target's first 600 rows are its training data (K labelled per class, the rest
    unlabelled); the last 297 are held out for testing.
    """
    d = load_data("digits", "all")
    perm = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))
    s, t = d.subset(perm[:900]), d.subset(perm[900:])
    tx = (t.x * 0.5 + 0.3).flatten(1)
    return {
        "source": TensorData(s.x.flatten(1), s.y, s.classes, "digits"),
        "target": TensorData(tx[:600], t.y[:600], t.classes, "digits-shifted"),
        "test": TensorData(tx[600:], t.y[600:], t.classes, "digits-shifted-test"),
    }


@pytest.fixture(scope="module")
def baselines(shifted) -> dict[str, object]:
    """The source-only model, and fine-tuning it on the K labelled target examples alone."""
    torch.manual_seed(0)
    base = adapt(shifted["source"], shifted["target"].unlabeled(), AdaptSpec(method="source-only", source_epochs=10),
                 TrainConfig(epochs=10, lr=1e-3, seed=0), "mlp", target_test=shifted["test"], verbose=False, callbacks=[])
    labelled, _ = split_target_labels(shifted["target"], K, 10, seed=0)
    tuned = copy.deepcopy(base.source_model)
    torch.manual_seed(0)
    finetune(tuned, labelled, None, FinetuneSpec(), TrainConfig(epochs=5, steps=100, lr=1e-3, seed=0), batch_size=len(labelled),
             verbose=False, callbacks=[])
    return {"model": base.source_model, "source_only": base.summary["target_test"]["acc"],
            "labels_only": evaluate(tuned, shifted["test"])["acc"]}


def _semi(shifted, baselines, method: str) -> dict:
    torch.manual_seed(0)
    return adapt(shifted["source"], shifted["target"], AdaptSpec(method=method, target_labels_per_class=K),
                 TrainConfig(epochs=10, lr=1e-3, seed=0), "mlp", target_test=shifted["test"],
                 source_model=copy.deepcopy(baselines["model"]), verbose=False, callbacks=[]).summary


# ------------------------------------------------------------------ the K labelled target examples
def test_split_target_labels_is_stratified_seeded_and_leaves_the_rest_unlabelled(shifted):
    target = shifted["target"]
    labelled, rest = split_target_labels(target, 3, 10, seed=4)
    assert torch.equal(torch.bincount(labelled.y, minlength=10), torch.full((10,), 3))
    assert rest.y is None and len(rest) + len(labelled) == len(target)
    again, _ = split_target_labels(target, 3, 10, seed=4)
    other, _ = split_target_labels(target, 3, 10, seed=5)
    assert torch.equal(labelled.x, again.x) and not torch.equal(labelled.x, other.x)
    # the labelled rows are not in the unlabelled rest
    rows = {tuple(r.tolist()) for r in rest.x}
    assert not any(tuple(r.tolist()) in rows for r in labelled.x)


def test_split_target_labels_refuses_unlabelled_target_and_too_large_k(shifted):
    with pytest.raises(TransferkitError, match="has no labels"):
        split_target_labels(shifted["target"].unlabeled(), 1, 10, 0)
    with pytest.raises(TransferkitError, match=r"more than target .* has of class .*choose K <="):
        split_target_labels(shifted["target"], 500, 10, 0)


def test_semi_supervised_summary_and_the_labels_never_choose_the_checkpoint(shifted, baselines):
    s = _semi(shifted, baselines, "source-only")  # S+T: the source-only method plus the K target labels
    assert s["target_labels"]["per_class"] == K and s["target_labels"]["count"] == 10 * K
    assert s["selection"]["by"] == "im" and not s["selection"]["oracle"]
    assert "no target labels used for selection" in s["selection"]["note"]
    assert s["target_test"]["acc"] > baselines["source_only"] + 5  # stage 2 ran and the target labels helped


def test_every_unsupervised_method_gains_the_target_cross_entropy():
    model = create_model("mlp", 3, (4,))
    method = WithTargetLabels(create_method("dann", model))
    g = torch.Generator().manual_seed(0)
    xs, xt, xl = (torch.randn(6, 4, generator=g) for _ in range(3))
    ys, yl = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 1, 0, 2, 1, 0])
    out = method.training_losses(((xs, ys), xt, (xl, yl)), INFO)
    assert set(out) == {"ce", "domain", "ce_target"}
    model.eval()  # eval mode: the same forward as inside the method without dropout/BN noise
    method.eval()
    out = method.training_losses(((xs, ys), xt, (xl, yl)), INFO)
    assert out["ce_target"].item() == pytest.approx(F.cross_entropy(model(xl), yl).item(), rel=1e-6)
    assert any(p is q for p in method.parameters() for q in method.inner.discriminator.parameters())


# ------------------------------------------------------------------ MME: reference
def _entropy_by_hand(f: torch.Tensor, w: torch.Tensor, t: float) -> torch.Tensor:
    cos = (f @ w.t()) / (f.norm(dim=1, keepdim=True) * w.norm(dim=1)[None, :])
    p = torch.exp(cos / t) / torch.exp(cos / t).sum(1, keepdim=True)
    return -(p * torch.log(p)).sum(1).mean()


def test_mme_minimax_gradients_have_opposite_signs_on_head_and_features():
    g = torch.Generator().manual_seed(1)
    head = CosineHead(5, 4, temperature=0.5).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(4, 5, generator=g, dtype=torch.float64))
    f = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    lam = 0.1
    loss = minimax_entropy(f, head, lam)
    loss.backward()
    w_ref = head.weight.detach().clone().requires_grad_(True)
    f_ref = f.detach().clone().requires_grad_(True)
    h = _entropy_by_hand(f_ref, w_ref, 0.5)
    assert loss.item() == pytest.approx(-lam * h.item(), rel=1e-10)
    dh_dw, dh_df = torch.autograd.grad(h, (w_ref, f_ref))
    # the head descends -lambda H (it maximises the entropy) ...
    assert torch.allclose(head.weight.grad, -lam * dh_dw, atol=1e-12)
    # ... and the features receive the reversed gradient: they descend +lambda H (minimise it)
    assert torch.allclose(f.grad, lam * dh_df, atol=1e-12)
    step = 1e-2
    with torch.no_grad():
        h_head = _entropy_by_hand(f_ref, w_ref - step * head.weight.grad, 0.5)
        h_feat = _entropy_by_hand(f_ref - step * f.grad, w_ref, 0.5)
    assert h_head > h > h_feat


def test_mme_losses_by_hand_and_the_head_is_cosine():
    torch.manual_seed(0)
    model = create_model("mlp", 3, (4,))
    method = create_method("mme", model, cosine_temperature=0.1)
    assert isinstance(model.head, CosineHead) and model.spec["head"] == {"kind": "cosine", "temperature": 0.1}
    assert isinstance(method, MME) and method.schedule(0.5) == pytest.approx(0.1)
    model.eval()
    g = torch.Generator().manual_seed(0)
    xs, xl, xu = torch.randn(4, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    ys, yl = torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2, 0])
    out = method.training_losses(((xs, ys), xu, (xl, yl)), INFO)
    w = model.head.weight.detach()

    def logits(x: torch.Tensor) -> torch.Tensor:
        f = model.features(x).detach()
        return (F.normalize(f, dim=1) @ F.normalize(w, dim=1).t()) / 0.1

    assert out["ce"].item() == pytest.approx(F.cross_entropy(logits(xs), ys).item(), rel=1e-5)
    assert out["ce_target"].item() == pytest.approx(F.cross_entropy(logits(xl), yl).item(), rel=1e-5)
    p = F.softmax(logits(xu), 1)
    assert out["minimax_entropy"].item() == pytest.approx(0.1 * (p * p.log()).sum(1).mean().item(), rel=1e-5)


# ------------------------------------------------------------------ FixMatch: reference
def test_fixmatch_consistency_by_hand():
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 5.0]])
    strong = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.5, 0.5, 0.5]], requires_grad=True)
    loss, mask = fixmatch_consistency(weak, strong, 0.95)
    p = F.softmax(weak, 1)
    assert p[0].max() >= 0.95 and p[2].max() >= 0.95 and p[1].max() < 0.95
    assert mask.tolist() == [1.0, 0.0, 1.0]
    ce0 = -F.log_softmax(strong[0], 0)[0]
    ce2 = -F.log_softmax(strong[2], 0)[2]
    assert loss.item() == pytest.approx(((ce0 + ce2) / 3).item(), rel=1e-6)
    weak_leaf = weak.clone().requires_grad_(True)
    fixmatch_consistency(weak_leaf, strong, 0.95)[0].backward()
    assert weak_leaf.grad is None  # the weak view only labels; it is not trained by the consistency term


def test_strong_augment_is_seeded_keeps_range_and_cuts_a_hole():
    x = torch.full((5, 1, 16, 16), 0.5)
    aug = StrongAugment(shift=0.0, scale=None, contrast=0.0, brightness=0.0, cutout=0.25)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and ((y == 0).flatten(1).sum(1) == 16).all()  # one 4x4 hole per image
    full = StrongAugment()
    a, b = full(x, torch.Generator().manual_seed(3)), full(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    assert torch.equal(full(torch.ones(3, 8), None), torch.ones(3, 8))  # tables pass through


def test_fixmatch_losses_with_the_labelled_target():
    torch.manual_seed(0)
    model = create_model("mlp", 3, (4,))
    method = create_method("fixmatch", model, confidence_threshold=0.5)
    assert isinstance(method, FixMatch)
    model.eval()
    g = torch.Generator().manual_seed(0)
    xs, xl, xu = torch.randn(4, 4, generator=g), torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    ys, yl = torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2, 0])
    out = method.training_losses(((xs, ys), xu, (xl, yl)), INFO)
    assert out["ce_target"].item() == pytest.approx(F.cross_entropy(model(xl), yl).item(), rel=1e-5)
    ref, _ = fixmatch_consistency(model(xu), model(xu), 0.5)  # tables: both views are the input itself
    assert out["pseudo"].item() == pytest.approx(ref.item(), rel=1e-5)


# ------------------------------------------------------------------ behaviour on shifted data
@pytest.mark.parametrize("method", ["mme", "fixmatch"])
def test_semi_supervised_beats_source_only_and_fine_tuning_on_the_labels_alone(shifted, baselines, method):
    s = _semi(shifted, baselines, method)
    acc = s["target_test"]["acc"]
    assert acc > baselines["source_only"] + 5, (acc, baselines)
    assert acc > baselines["labels_only"] + 2, (acc, baselines)


# ------------------------------------------------------------------ cosine head: save, reload, predict
def test_mme_model_round_trips_through_predict_model_from(shifted, baselines, tmp_path, capsys):
    folder = tmp_path / "mme"
    torch.manual_seed(0)
    res = adapt(shifted["source"], shifted["target"], AdaptSpec(method="mme", target_labels_per_class=1),
                TrainConfig(epochs=2, lr=1e-3, seed=0), "mlp", source_model=copy.deepcopy(baselines["model"]),
                run=RunDir(folder), verbose=False, callbacks=[])
    assert isinstance(res.model.head, CosineHead)
    x = shifted["test"].x[:20]
    res.model.eval()
    with torch.no_grad():
        expected = F.softmax(res.model(x), 1)
    for saved in (folder, folder / "model.safetensors"):
        loaded = load_model(saved)
        assert isinstance(loaded.head, CosineHead) and loaded.head.temperature == pytest.approx(0.05)
        with torch.no_grad():
            assert torch.allclose(F.softmax(loaded.eval()(x), 1), expected, atol=1e-6)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, X=x.numpy())
    out = tmp_path / "preds.csv"
    rc = main(["predict", "--model-from", str(folder), "--data", str(inputs), "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    probs = torch.tensor([[float(r[f"p_{c}"]) for c in res.model.classes] for r in rows])
    assert torch.allclose(probs, expected, atol=2e-6)
    # the source model in the same folder keeps its linear head
    assert isinstance(load_model(folder / "source_model.safetensors").head, torch.nn.Linear)


def test_replace_head_goes_back_to_linear():
    model = create_model("mlp", 3, (4,))
    create_method("mme", model)
    model.replace_head(5)
    assert isinstance(model.head, torch.nn.Linear) and "head" not in model.spec


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def tables(tmp_path_factory, shifted) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("semi_tables")
    paths = {}
    for name in ("source", "target", "test"):
        d = shifted[name]
        paths[name] = str(folder / f"{name}.npz")
        np.savez(paths[name], X=d.x.numpy(), y=d.y.numpy())
    paths["unlabelled"] = str(folder / "unlabelled.npz")
    np.savez(paths["unlabelled"], X=shifted["target"].x.numpy())
    return paths


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error"), err
    return lines[0]


def test_cli_target_labels_per_class_trains_fixmatch(capsys, tmp_path, tables):
    rd = tmp_path / "run"
    rc, _, err = _cli(capsys, "adapt", "--method", "fixmatch", "--target-labels-per-class", "2", "--source", tables["source"],
                        "--target", tables["target"], "--target-test", tables["test"], "--epochs", "2", "--source-epochs", "2",
                        "--quiet", "--run-dir", str(rd))
    assert rc == 0, err
    assert "labels found in target" not in err  # the target's labels are used, not ignored
    s = json.loads((rd / "summary.json").read_text())
    assert s["method"] == "fixmatch" and s["target_labels"]["count"] == 20 and s["spec"]["target_labels_per_class"] == 2
    rows = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    assert any("ce_target" in r.get("train", {}) for r in rows)


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "mme"], "--method mme is semi-supervised: it needs a few labelled target examples"),
    (["--method", "fixmatch"], "--method fixmatch is semi-supervised"),
    (["--method", "mme", "--target-labels-per-class", "1", "--target", "unlabelled"], "has no labels"),
    (["--method", "dann", "--target-labels-per-class", "200"], "choose K <="),
    (["--method", "mme", "--target-labels-per-class", "0"], "target-labels-per-class"),
    (["--method", "coral", "--target-labels-per-class", "1"], "does not take them"),
])
def test_cli_bad_semi_supervised_input_is_one_line(capsys, tmp_path, tables, args, message):
    given = dict(zip(args[::2], args[1::2], strict=True))
    target = tables[given.pop("--target", "target")]
    flat = [a for kv in given.items() for a in kv]
    rc, _, err = _cli(capsys, "adapt", *flat, "--source", tables["source"], "--target", target, "--epochs", "1",
                      "--source-epochs", "1", "--quiet", "--run-dir", str(tmp_path / "run"))
    assert rc != 0
    assert message in _error_line(err)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_cli_shot_refuses_target_labels(capsys, tmp_path, tables, baselines):
    model_path = tmp_path / "m.safetensors"
    baselines["model"].save(model_path)
    rc, _, err = _cli(capsys, "adapt", "--method", "shot", "--init", str(model_path), "--target", tables["target"],
                      "--target-labels-per-class", "1", "--run-dir", str(tmp_path / "run"))
    assert rc != 0 and "does not take them" in _error_line(err)


def test_python_api_refuses_mme_without_labels(shifted):
    with pytest.raises(TransferkitError, match="needs a few labelled target examples"):
        adapt(shifted["source"], shifted["target"], AdaptSpec(method="mme"), TrainConfig(epochs=1), "mlp", verbose=False)


def test_fixmatch_strong_view_of_text_drops_more_tokens_than_the_weak_one():
    ids = torch.randint(1, 500, (64, 40), generator=torch.Generator().manual_seed(0))
    strong = StrongAugment()(ids, torch.Generator().manual_seed(1))
    assert strong.dtype == ids.dtype and strong.shape == ids.shape
    dropped = (strong == 0).float().mean().item()
    assert 0.2 < dropped < 0.4  # about 0.3 of the tokens (the first, CLS, is kept)
    assert torch.equal(strong[strong != 0], ids[strong != 0])
