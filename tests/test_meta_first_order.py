"""First- and second-order MAML against closed forms, and the inner-step overshoot check (issue 16).

On a linear model ``f(x) = w.x + b`` with the squared loss, every task loss is quadratic, so one
inner step and both meta-gradients have closed forms:

    phi = theta - alpha * g_S(theta),   FO = g_Q(phi),   SO = (I - alpha * H_S) g_Q(phi)

with ``g_D(t) = 2/n X_D^T (X_D t - y_D)`` and ``H_D = 2/n X_D^T X_D`` (X with a column of ones).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.engine import TrainConfig
from transferkit.meta import (
    MAML,
    Episode,
    MetaSpec,
    build_learner,
    first_order_agreement,
    meta_train,
)
from transferkit.meta.api import warn_if_inner_step_overshoots
from transferkit.models import Classifier, create_model


def linear_model(d: int = 3) -> Classifier:
    torch.manual_seed(0)
    backbone = nn.Flatten()
    backbone.out_features = d  # type: ignore[assignment]
    return Classifier(backbone, 1).double()


def regression_episode(tasks: int = 4, shots: int = 5, queries: int = 6, d: int = 3) -> Episode:
    g = torch.Generator().manual_seed(3)
    sx = torch.randn(tasks, shots, d, generator=g, dtype=torch.float64)
    qx = torch.randn(tasks, queries, d, generator=g, dtype=torch.float64)
    w = torch.randn(tasks, d, 1, generator=g, dtype=torch.float64)
    return Episode(sx, sx @ w + 0.1, qx, qx @ w + 0.1, torch.zeros(tasks, 1, dtype=torch.long))


def closed_form(model: Classifier, ep: Episode, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(first-order, second-order) meta-gradients over (w, b), averaged over tasks, computed by hand."""
    theta = torch.cat([model.head.weight.detach().flatten(), model.head.bias.detach()])

    def design(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    fo = torch.zeros_like(theta)
    so = torch.zeros_like(theta)
    for t in range(ep.num_tasks):
        xs, ys = design(ep.support_x[t]), ep.support_y[t].flatten()
        xq, yq = design(ep.query_x[t]), ep.query_y[t].flatten()
        h_s = 2 / len(xs) * xs.T @ xs
        phi = theta - alpha * 2 / len(xs) * xs.T @ (xs @ theta - ys)
        g_q = 2 / len(xq) * xq.T @ (xq @ phi - yq)
        fo += g_q / ep.num_tasks
        so += (torch.eye(len(theta), dtype=theta.dtype) - alpha * h_s) @ g_q / ep.num_tasks
    return fo, so


def meta_gradient(learner: MAML, ep: Episode, vectorise: bool) -> torch.Tensor:
    learner.model.zero_grad()
    learner.meta_loss(ep, vectorise=vectorise).backward()
    return torch.cat([learner.model.head.weight.grad.flatten(), learner.model.head.bias.grad])


@pytest.mark.parametrize("vectorise", [True, False])
def test_first_and_second_order_match_the_closed_form_on_a_quadratic_task_loss(vectorise):
    model = linear_model()
    ep = regression_episode()
    alpha = 0.1
    fo_expected, so_expected = closed_form(model, ep, alpha)
    fo = meta_gradient(MAML(model, inner_lr=alpha, first_order=True, loss="mse", ways=1), ep, vectorise)
    so = meta_gradient(MAML(model, inner_lr=alpha, first_order=False, loss="mse", ways=1), ep, vectorise)
    assert torch.allclose(fo, fo_expected, atol=1e-12)
    assert torch.allclose(so, so_expected, atol=1e-12)
    # the two differ exactly by the Hessian term, which is not negligible here
    assert (so - fo).abs().max() > 1e-2


def test_first_order_equals_second_order_when_the_support_hessian_vanishes():
    # support inputs all zero: the support loss only sees the bias, whose Hessian block is 2 (not 0), so
    # use a support set with zero inputs AND compare only the weight block, where H_S is exactly 0
    model = linear_model()
    ep = regression_episode()
    ep = Episode(torch.zeros_like(ep.support_x), ep.support_y, ep.query_x, ep.query_y, ep.classes)
    fo = meta_gradient(MAML(model, inner_lr=0.1, first_order=True, loss="mse", ways=1), ep, False)
    so = meta_gradient(MAML(model, inner_lr=0.1, first_order=False, loss="mse", ways=1), ep, False)
    assert torch.allclose(fo[:-1], so[:-1], atol=1e-12)  # weight block: d phi_w / d theta = I
    assert torch.allclose(so[-1], (1 - 0.1 * 2) * fo[-1], atol=1e-12)  # bias: (1 - alpha * 2) g


def test_first_order_conv4_meta_gradient_with_fused_channels_last_batch_norm_matches_plain_autograd():
    # what the Omniglot benchmark trains: conv4, channels-last weights, first order uses the fused BN kernel
    torch.manual_seed(0)
    model = create_model("conv4", 5, (1, 12, 12)).double()
    learner = MAML(model, inner_lr=0.4, first_order=True)
    learner.vectorise = False
    model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.randn(5, 1, 12, 12, generator=g, dtype=torch.float64), torch.randn(10, 1, 12, 12, generator=g, dtype=torch.float64)
    sy, qy = torch.arange(5), torch.arange(5).repeat(2)
    model.zero_grad()
    learner.task_loss(learner.params(), sx, sy, qx, qy).backward()
    got = [p.grad.clone() for p in model.parameters()]
    # by hand: the model as a plain module with ordinary batch norm in training mode (batch statistics)
    torch.manual_seed(0)
    ref = create_model("conv4", 5, (1, 12, 12)).double()
    ref.load_state_dict(model.state_dict())
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    names = [n for n, _ in ref.named_parameters()]
    theta = [p.detach() for p in ref.parameters()]
    grads = torch.autograd.grad(
        F.cross_entropy(torch.func.functional_call(ref, dict(zip(names, [t.requires_grad_() for t in theta], strict=True)), (sx,)), sy),
        theta)
    phi = [(t - 0.4 * gr).detach().requires_grad_() for t, gr in zip(theta, grads, strict=True)]
    q_loss = F.cross_entropy(torch.func.functional_call(ref, dict(zip(names, phi, strict=True)), (qx,)), qy)
    expected = torch.autograd.grad(q_loss, phi)
    for n, a, b in zip(names, got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-10), n


def classification_episode(tasks: int = 4, ways: int = 3, d: int = 4) -> Episode:
    g = torch.Generator().manual_seed(1)
    sx = torch.randn(tasks, ways, d, generator=g, dtype=torch.float64) * 3
    qx = torch.randn(tasks, 2 * ways, d, generator=g, dtype=torch.float64) * 3
    sy = torch.arange(ways).expand(tasks, -1)
    return Episode(sx, sy, qx, torch.arange(ways).repeat(2).expand(tasks, -1), sy)


def tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    return create_model("mlp", 3, (4,), hidden=(16,)).double()


def test_an_overshooting_inner_step_is_detected_and_warned():
    ep = classification_episode()
    big = MAML(tiny_classifier(), inner_lr=50.0, first_order=True)
    before, after = big.support_loss_change(ep)
    assert after > before
    with pytest.warns(UserWarning, match="--inner-lr 50 overshoots for this model; lower it"):
        assert warn_if_inner_step_overshoots(big, ep)
    small = MAML(tiny_classifier(), inner_lr=0.05, first_order=True)
    before, after = small.support_loss_change(ep)
    assert after < before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_inner_step_overshoots(small, ep)


class Tasks:
    """Three-way tasks from a fixed table: sample(tasks, generator) like EpisodeSampler."""

    def sample(self, tasks: int, generator: torch.Generator | None = None) -> Episode:
        return classification_episode(tasks)


def test_meta_train_warns_when_the_inner_step_overshoots():
    spec = MetaSpec(method="fomaml", ways=3, shots=1, queries=2, meta_batch=2, inner_lr=50.0, episodes_per_epoch=1)
    learner = build_learner(tiny_classifier(), spec)
    with pytest.warns(UserWarning, match="inner loop raises the support loss"):
        meta_train(learner, Tasks(), spec, TrainConfig(epochs=1), verbose=False, callbacks=[])
    spec.inner_lr = 0.05
    learner = build_learner(tiny_classifier(), spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        meta_train(learner, Tasks(), spec, TrainConfig(epochs=1), verbose=False, callbacks=[])


@pytest.mark.parametrize("alpha", [0.1, 0.4, 0.5, 0.8])
def test_first_order_agreement_matches_the_closed_form_cosine(alpha):
    model = linear_model()
    ep = regression_episode()
    fo, so = closed_form(model, ep, alpha)
    expected = float(F.cosine_similarity(fo, so, dim=0))
    learner = MAML(model, inner_lr=alpha, first_order=True, loss="mse", ways=1)
    assert first_order_agreement(learner, ep) == pytest.approx(expected, abs=1e-10)
    assert learner.first_order and model.head.weight.grad is None  # the check leaves the learner as it was


def test_an_uphill_first_order_step_is_warned_although_the_support_loss_falls():
    # 1 / lambda_max < alpha < 2 / lambda_max: the step still lowers the support loss, but (I - alpha H_S) flips the
    # sharpest direction and the first-order meta-gradient points uphill (the Omniglot conv4 case at inner lr 0.03)
    ep = regression_episode()
    uphill = MAML(linear_model(), inner_lr=0.5, first_order=True, loss="mse", ways=1)
    before, after = uphill.support_loss_change(ep)
    assert after < before and first_order_agreement(uphill, ep) < 0
    with pytest.warns(UserWarning, match="first-order meta-gradient of a first meta-batch points uphill"):
        assert warn_if_inner_step_overshoots(uphill, ep)
    second = MAML(linear_model(), inner_lr=0.5, first_order=False, loss="mse", ways=1)  # second order is exact: no warning
    fine = MAML(linear_model(), inner_lr=0.1, first_order=True, loss="mse", ways=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_inner_step_overshoots(second, ep)
        assert not warn_if_inner_step_overshoots(fine, ep)


def test_zero_head_first_step_is_the_prototype_classifier_and_the_head_gets_no_meta_gradient():
    # from W = 0 the support loss's gradient reaches only the head: W' = alpha (Y - 1/N)^T F / n, b' = alpha mean(Y - 1/N)
    ep = classification_episode(tasks=2)
    model = tiny_classifier()
    learner = MAML(model, inner_lr=0.3, first_order=True, zero_head=True)
    sx, sy = ep.support_x[0], ep.support_y[0]
    fast = learner.adapt(sx, sy)
    feats = model.features(sx).detach()
    target = F.one_hot(sy, 3).double() - 1 / 3
    assert torch.allclose(fast["head.weight"], 0.3 * target.T @ feats / len(sx), atol=1e-12)
    assert torch.allclose(fast["head.bias"], 0.3 * target.mean(0), atol=1e-12)
    assert torch.equal(fast["backbone.fc1.0.weight"], model.backbone.fc1[0].weight)  # no gradient reaches the body at W = 0
    model.zero_grad(set_to_none=True)
    learner.meta_loss(ep, vectorise=False).backward()
    assert model.head.weight.grad is None and model.backbone.fc1[0].weight.grad.abs().sum() > 0
    plain = MAML(tiny_classifier(), inner_lr=0.3, first_order=True)
    assert not torch.allclose(plain.adapt(sx, sy)["head.weight"], fast["head.weight"])


class ShuffledGaussianTasks:
    """20-way 1-shot tasks over Gaussian classes in 16-d, each task's labels a fresh permutation (the Omniglot structure)."""

    def __init__(self, classes: torch.Tensor, ways: int = 20, queries: int = 3):
        self.centres = torch.randn(60, 16, generator=torch.Generator().manual_seed(0))
        self.classes, self.ways, self.queries = classes, ways, queries

    def sample(self, tasks: int, generator: torch.Generator | None = None) -> Episode:
        g = generator or torch.Generator().manual_seed(0)
        parts = []
        for _ in range(tasks):
            pick = self.classes[torch.randperm(len(self.classes), generator=g)[: self.ways]]
            c = self.centres[pick]
            sx = c + 0.7 * torch.randn(c.shape, generator=g)
            qx = c.repeat(self.queries, 1) + 0.7 * torch.randn(len(c) * self.queries, c.shape[1], generator=g)
            parts.append((sx, torch.arange(self.ways), qx, torch.arange(self.ways).repeat(self.queries), pick))
        return Episode(*(torch.stack(t) for t in zip(*parts, strict=True)))


def first_order_after_training(inner_lr: float, inner_steps: int, zero_head: bool = False) -> tuple[float, list[str]]:
    """Held-out-class 20-way accuracy of first-order MAML after 150 meta-iterations, and the warnings it gave."""
    torch.manual_seed(0)
    spec = MetaSpec(method="fomaml", ways=20, shots=1, queries=3, meta_batch=4, inner_lr=inner_lr, inner_steps=inner_steps,
                    episodes_per_epoch=150, zero_head=zero_head)
    learner = build_learner(create_model("mlp", 20, (16,), hidden=(64,)), spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta_train(learner, ShuffledGaussianTasks(torch.arange(40)), spec, TrainConfig(epochs=1, lr=1e-3), verbose=False,
                   callbacks=[])
    acc = learner.evaluate(ShuffledGaussianTasks(torch.arange(40, 60)), 100, seed=1)["acc"]
    return acc, [str(w.message) for w in caught if "inner loop" in str(w.message)]


def test_first_order_maml_learns_only_when_its_inner_loop_adapts_and_is_warned_when_it_barely_does():
    # the 20-way Omniglot failure (7.7% against second order's 52.7%): one inner step of 0.03 lowers the support loss by
    # ~1%, so the first-order meta-gradient has no task signal and the learner stays at chance (5%)
    tiny, said = first_order_after_training(0.03, 1)
    assert tiny < 10
    assert len(said) == 1 and "barely adapts" in said[0] and "--inner-steps" in said[0]
    paper, said = first_order_after_training(0.1, 5)  # the MAML paper's 20-way inner loop
    assert paper > 30 and not said
    zero, said = first_order_after_training(0.1, 5, zero_head=True)
    assert zero > paper and not said
