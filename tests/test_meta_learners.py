"""Meta-learners against independent computations: finite differences, hand-written formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.data import load_data
from transferkit.engine import TrainConfig
from transferkit.errors import TransferkitError
from transferkit.meta import (
    ANIL,
    MAML,
    Episode,
    EpisodeSampler,
    MetaSpec,
    ProtoNet,
    Reptile,
    SinusoidTasks,
    build_learner,
    meta_train,
    sinusoid_model,
)
from transferkit.models import Classifier, create_model


def tiny(bn: bool = False, ways: int = 3) -> Classifier:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(4, 5)]
    if bn:
        layers.append(nn.BatchNorm1d(5))
    layers.append(nn.Tanh())
    bb = nn.Sequential(*layers)
    bb.out_features = 5
    return Classifier(bb, ways).double()


def episode(tasks: int = 3, ways: int = 3, shots: int = 2, queries: int = 2, d: int = 4) -> Episode:
    g = torch.Generator().manual_seed(1)
    sx = torch.randn(tasks, ways * shots, d, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, ways * queries, d, generator=g, dtype=torch.float64)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1)
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1)
    return Episode(sx, sy, qx, qy, sy)


def flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_maml_meta_gradient_matches_finite_differences():
    model = tiny()
    learner = MAML(model, inner_lr=0.3, inner_steps=2)
    ep = episode()
    model.zero_grad()
    learner.meta_loss(ep).backward()
    analytic = flat_grad(model)
    params = list(model.parameters())
    numeric = []
    eps = 1e-6
    with torch.no_grad():
        for p in params:
            for i in range(p.numel()):
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = learner.meta_loss(ep).item()
                p.view(-1)[i] = old - eps
                down = learner.meta_loss(ep).item()
                p.view(-1)[i] = old
                numeric.append((up - down) / (2 * eps))
    assert torch.allclose(analytic, torch.tensor(numeric, dtype=torch.float64), atol=1e-7, rtol=1e-5)


def test_first_order_equals_second_order_without_second_derivatives():
    model = tiny()
    ep = episode()
    fo = MAML(model, inner_lr=0.3, inner_steps=2, first_order=True)
    model.zero_grad()
    fo.meta_loss(ep).backward()
    got = flat_grad(model)
    # by hand: adapt with plain autograd, then take the query gradient at phi as the meta-gradient
    expected = torch.zeros_like(got)
    for t in range(ep.num_tasks):
        phi = [p.detach().clone() for p in model.parameters()]
        for _ in range(2):
            phi = [q.requires_grad_(True) for q in phi]
            loss = F.cross_entropy(torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()], phi, strict=True)), (ep.support_x[t],)), ep.support_y[t])
            gs = torch.autograd.grad(loss, phi)
            phi = [(q - 0.3 * g).detach() for q, g in zip(phi, gs, strict=True)]
        phi = [q.requires_grad_(True) for q in phi]
        q_loss = F.cross_entropy(torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()], phi, strict=True)), (ep.query_x[t],)), ep.query_y[t])
        expected += torch.cat([g.flatten() for g in torch.autograd.grad(q_loss, phi)]) / ep.num_tasks
    assert torch.allclose(got, expected, atol=1e-12)
    so = MAML(model, inner_lr=0.3, inner_steps=2)
    model.zero_grad()
    so.meta_loss(ep).backward()
    assert not torch.allclose(flat_grad(model), got, atol=1e-6)  # the dropped term is not zero here


@pytest.mark.parametrize("cls,first_order", [(MAML, False), (MAML, True), (ANIL, False), (ProtoNet, None)])
def test_vmap_over_tasks_equals_python_loop_with_batch_norm(cls, first_order):
    # second order uses the plain-op batch norm, ProtoNets and first order the fused kernel
    model = tiny(bn=True)
    learner = cls(model) if cls is ProtoNet else cls(model, inner_lr=0.3, inner_steps=2, first_order=first_order)
    assert learner.double_backward == (first_order is False)
    ep = episode(tasks=4)
    grads = []
    for vec in (True, False):
        model.zero_grad()
        learner.meta_loss(ep, vectorise=vec).backward()
        grads.append(flat_grad(model))
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_vmap_in_chunks_equals_python_loop():
    model = tiny(bn=True)
    learner = MAML(model, inner_lr=0.3, inner_steps=2)
    ep = episode(tasks=5)
    grads = []
    for chunk, vec in ((2, True), (None, False)):
        learner.chunk_size = chunk
        model.zero_grad()
        learner.meta_loss(ep, vectorise=vec).backward()
        grads.append(flat_grad(model))
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_batch_stat_norm_matches_batch_norm_with_first_and_second_derivatives():
    from transferkit.meta.learner import batch_stat_norm

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    w = torch.randn(4, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(4, generator=g, dtype=torch.float64).requires_grad_()
    c = torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64)

    def reference(x, w, b):  # the textbook formula
        mean = x.mean((0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    got, ref = batch_stat_norm(x, w, b, 1e-5), reference(x, w, b)
    assert torch.allclose(got, ref, atol=1e-12)
    assert torch.allclose(got, F.batch_norm(x, None, None, w, b, True, 0.0, 1e-5), atol=1e-12)
    with torch.no_grad():  # the fused path used in evaluation
        assert torch.allclose(batch_stat_norm(x, w, b, 1e-5), ref, atol=1e-12)
    derivs = []
    for fn in (batch_stat_norm, lambda x, w, b, eps: reference(x, w, b)):
        first = torch.autograd.grad((fn(x, w, b, 1e-5) * c).sum(), (x, w, b), create_graph=True)
        second = torch.autograd.grad(sum((d ** 2).sum() for d in first), (x, w))  # the bias gradient is constant
        derivs.append(torch.cat([t.flatten() for t in (*first, *second)]))
    assert torch.allclose(derivs[0], derivs[1], atol=1e-10)


def test_protonet_logits_are_negative_squared_distances():
    model = tiny()
    learner = ProtoNet(model, ways=3)
    ep = episode(tasks=1, shots=3, queries=2)
    sx, sy, qx = ep.support_x[0], ep.support_y[0], ep.query_x[0]
    logits = learner.predict(learner.adapt(sx, sy), qx).detach().numpy()
    with torch.no_grad():
        fs, fq = model.features(sx).numpy(), model.features(qx).numpy()
    expected = np.zeros((len(fq), 3))
    for i in range(len(fq)):
        for k in range(3):
            proto = fs[sy.numpy() == k].mean(0)
            expected[i, k] = -sum((fq[i, d] - proto[d]) ** 2 for d in range(fs.shape[1]))
    np.testing.assert_allclose(logits, expected, rtol=1e-10)


def test_reptile_gradient_is_theta_minus_mean_adapted_weights():
    model = tiny()
    learner = Reptile(model, inner_lr=0.2, inner_steps=3)
    ep = episode(tasks=2)
    model.zero_grad()
    learner.meta_loss(ep).backward()
    names = [n for n, _ in model.named_parameters()]
    mean_phi = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in range(2):
        x = torch.cat([ep.support_x[t], ep.query_x[t]])
        y = torch.cat([ep.support_y[t], ep.query_y[t]])
        phi = [p.detach().clone() for p in model.parameters()]
        for _ in range(3):
            phi = [q.requires_grad_(True) for q in phi]
            loss = F.cross_entropy(torch.func.functional_call(model, dict(zip(names, phi, strict=True)), (x,)), y)
            phi = [(q - 0.2 * g).detach() for q, g in zip(phi, torch.autograd.grad(loss, phi), strict=True)]
        for n, q in zip(names, phi, strict=True):
            mean_phi[n] += q / 2
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, p.detach() - mean_phi[n], atol=1e-12)


def test_anil_adapts_only_the_head():
    model = tiny()
    learner = ANIL(model, inner_lr=0.5, inner_steps=2)
    ep = episode(tasks=1)
    adapted = learner.adapt(ep.support_x[0], ep.support_y[0])
    for n, p in model.named_parameters():
        same = torch.equal(adapted[n], p)
        assert same == (not n.startswith("head."))


def test_protonet_meta_training_through_the_engine_learns():
    # digit classes as few-shot classes: episodes from the train split, evaluated on the test split
    train = EpisodeSampler(load_data("digits", "train"), ways=5, shots=1, queries=5)
    test = EpisodeSampler(load_data("digits", "test"), ways=5, shots=1, queries=5)
    spec = MetaSpec(method="protonet", ways=5, shots=1, queries=5, meta_batch=8, episodes_per_epoch=30)
    torch.manual_seed(0)
    learner = build_learner(create_model("conv4", 5, (1, 8, 8), width=32), spec)
    before = learner.evaluate(test, 64)["acc"]
    meta_train(learner, train, spec, TrainConfig(epochs=1, lr=3e-3), verbose=False, callbacks=[])
    after = learner.evaluate(test, 64)
    assert after["acc"] > 85 and after["acc"] > before + 20
    assert 0 < after["ci95"] < 5 and after["episodes"] == 64


def test_maml_on_sinusoids_learns_to_adapt():
    torch.manual_seed(0)
    tasks = SinusoidTasks(shots=10, queries=10)
    spec = MetaSpec(method="maml", ways=1, shots=10, queries=10, meta_batch=10, inner_lr=0.01, episodes_per_epoch=300, loss="mse")
    learner = build_learner(sinusoid_model(), spec)
    before = learner.evaluate(tasks, 100)["mse"]
    meta_train(learner, tasks, spec, TrainConfig(epochs=1, lr=1e-2), verbose=False, callbacks=[])
    after = learner.evaluate(tasks, 100)
    assert after["mse"] < 0.5 * before


def test_maml_head_must_match_ways():
    with pytest.raises(TransferkitError, match="the model has 4 outputs but tasks are 5-way"):
        build_learner(create_model("mlp", 4, (3,)), MetaSpec(method="maml", ways=5))


@pytest.mark.parametrize("cls", [ProtoNet, MAML])
def test_fused_and_plain_batch_norm_give_the_same_gradient_without_double_backward(cls, monkeypatch):
    model = tiny(bn=True)
    learner = ProtoNet(model) if cls is ProtoNet else MAML(model, inner_lr=0.3, inner_steps=2, first_order=True)
    assert learner.double_backward is False
    ep = episode(tasks=2)
    grads = []
    for plain in (False, True):
        monkeypatch.setattr(cls, "double_backward", plain)  # force the path
        model.zero_grad()
        learner.meta_loss(ep).backward()
        grads.append(flat_grad(model))
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_conv4_pools_before_relu_as_relu_then_pool(tmp_path):
    torch.manual_seed(0)
    model = create_model("conv4", 5, (1, 28, 28)).eval()
    x = torch.randn(3, 1, 28, 28)
    h = x
    for name in ("block1", "block2", "block3", "block4"):
        block = getattr(model.backbone, name)
        block = block[0] if name == "block4" else block
        conv, bn, pool, relu = block
        assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU)
        h = pool(F.relu(bn(conv(h))))  # the textbook order
    assert torch.allclose(model.features(x), h.flatten(1), atol=1e-6)


def test_meta_train_loops_over_tasks_with_channels_last_for_conv_nets_on_cpu(tmp_path):
    from transferkit.meta import uses_vmap
    from transferkit.models import load_model

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    conv, dense = create_model("conv4", 5, (1, 28, 28)), sinusoid_model()
    assert uses_vmap("auto", conv, cpu) is False and uses_vmap("auto", conv, cuda) is True
    assert uses_vmap("auto", dense, cpu) is True
    assert uses_vmap("vmap", conv, cpu) is True and uses_vmap("loop", dense, cuda) is False
    with pytest.raises(TransferkitError, match="unknown tasks_as 'fast'"):
        MetaSpec(tasks_as="fast").validate()

    data = load_data("digits", "train")
    spec = MetaSpec(method="protonet", ways=3, shots=1, queries=2, meta_batch=2, episodes_per_epoch=1)
    model = create_model("conv4", 3, (1, 8, 8), width=8)
    learner = build_learner(model, spec)
    meta_train(learner, EpisodeSampler(data, ways=3, shots=1, queries=2), spec, TrainConfig(epochs=1), verbose=False, callbacks=[])
    assert learner.vectorise is False
    weight = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1).weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    # checkpoints are saved contiguous and load into an ordinary model with the same outputs
    loaded = load_model(model.save(tmp_path / "m.safetensors"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    ProtoNet(loaded)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)

    vspec = MetaSpec(method="protonet", ways=3, shots=1, queries=2, meta_batch=2, episodes_per_epoch=1, tasks_as="vmap")
    vmodel = create_model("conv4", 3, (1, 8, 8), width=8)
    vlearner = build_learner(vmodel, vspec)
    meta_train(vlearner, EpisodeSampler(data, ways=3, shots=1, queries=2), vspec, TrainConfig(epochs=1), verbose=False, callbacks=[])
    assert vlearner.vectorise is True
    assert all(p.is_contiguous() for p in vmodel.parameters())


def test_meta_train_augments_every_training_image_independently():
    from transferkit.data.transforms import Augment

    sampler = EpisodeSampler(load_data("digits", "train"), ways=3, shots=2, queries=2)
    fixed = sampler.sample(2, torch.Generator().manual_seed(0))

    class Fixed:
        ways = 3

        def sample(self, tasks, gen):
            return fixed

    seen = []
    learner = build_learner(create_model("conv4", 3, (1, 8, 8), width=8), MetaSpec(method="protonet", ways=3))
    original = learner.training_losses

    def spy(batch, info):
        seen.append(batch)
        return original(batch, info)

    learner.training_losses = spy
    spec = MetaSpec(method="protonet", ways=3, shots=2, queries=2, meta_batch=2, episodes_per_epoch=2)
    meta_train(learner, Fixed(), spec, TrainConfig(epochs=1), verbose=False, callbacks=[], augment=Augment(shift=2.0))
    assert len(seen) == 2
    for ep in seen:
        assert ep.support_x.shape == fixed.support_x.shape and torch.equal(ep.support_y, fixed.support_y)
        moved = (ep.support_x - fixed.support_x).flatten(2).abs().amax(-1) > 1e-4  # per image
        assert moved.all()
    assert not torch.equal(seen[0].query_x, seen[1].query_x)  # fresh draws each step


@pytest.mark.parametrize("cls", [MAML, ProtoNet])
def test_evaluation_outputs_are_the_same_with_vmap_or_a_loop(cls):
    model = tiny(bn=True)
    learner = cls(model) if cls is ProtoNet else cls(model, inner_lr=0.3, inner_steps=2)
    ep = episode(tasks=3)
    outs = []
    for vec in (True, False):
        learner.vectorise = vec
        with torch.no_grad():
            outs.append(learner.episode_outputs(ep))
    assert outs[0].shape == (3, 6, 3) and torch.allclose(outs[0], outs[1], atol=1e-12)


def test_protonet_with_one_value_per_batch_norm_channel_does_not_fail():
    model = tiny(bn=True)
    learner = ProtoNet(model, ways=1)
    x = torch.randn(1, 4, dtype=torch.float64)
    loss = learner.predict(learner.adapt(x, torch.zeros(1, dtype=torch.long)), x).sum()
    loss.backward()  # fused batch norm would raise "Expected more than 1 value per channel"
    assert torch.isfinite(flat_grad(model)).all()
