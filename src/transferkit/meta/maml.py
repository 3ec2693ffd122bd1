"""MAML (second and first order) and ANIL, as functional learners over ``torch.func``.

MAML (Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation
of Deep Networks", ICML 2017). For a task T_i with support set S_i and query
set Q_i, the inner loop takes ``s`` gradient steps from the meta-parameters::

    phi_i^0 = theta,   phi_i^{j+1} = phi_i^j - alpha * grad_phi L_{S_i}(phi_i^j)

and the meta-loss is the mean query loss of the adapted parameters::

    L(theta) = 1/B sum_i L_{Q_i}(phi_i^s(theta))

Second-order MAML differentiates through the inner steps (the Jacobian
d phi / d theta = prod_j (I - alpha H_j)). First-order MAML (FOMAML, same paper,
Sec. 5.2) drops the second-derivative term: d phi / d theta := I, so the
meta-gradient is the query gradient at phi.

ANIL (Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse?",
ICLR 2020) adapts only the head: the inner loop updates ``head.weight`` and
``head.bias`` on fixed features f_theta(x), which are computed once per task.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import TransferkitError
from ..models import Classifier
from .episodes import Episode
from .learner import LEARNERS, MetaLearner, Params, sgd_steps


@LEARNERS.register("maml", "MAML (Finn et al. 2017), second order; --first-order for FOMAML")
class MAML(MetaLearner):
    """MAML / first-order MAML: every parameter is adapted in the inner loop.

    Args:
        model: the network; its head width is the number of ways.
        inner_lr: alpha, the inner-loop step size.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps at evaluation / few-shot time (default: ``inner_steps``).
        first_order: drop the second-derivative term (FOMAML).
        zero_head: every task's inner loop starts from ``head.weight = 0, head.bias = 0`` instead of the
            meta-learned head (Kao, Chiu, Hsu, Lee, "MAML is a Noisy Contrastive Learner in
            Classification", ICLR 2022). The first inner step then sets ``W' = alpha (Y - 1/N)^T F / n``:
            each class row is its support features' mean, a prototype classifier. The meta-learned head
            is unused, so its initial logits cannot grow: without it, first-order MAML on 20-way
            Omniglot (inner lr 0.03) takes the support loss before adaptation from 3.1 to 9.7 in 25
            meta-iterations, after which one inner step no longer adapts. (On its own it did not close
            first order's gap to second order there: see ``benchmarks/results/meta_omniglot.md``.)
    """

    name = "maml"

    def __init__(
        self,
        model: Classifier,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int | None = None,
        first_order: bool = False,
        loss: str = "ce",
        ways: int | None = None,
        zero_head: bool = False,
    ):
        super().__init__(model, loss, ways)
        if inner_steps < 1 or (eval_inner_steps is not None and eval_inner_steps < 1):
            raise TransferkitError(f"inner steps must be at least 1, got {inner_steps} / {eval_inner_steps}")
        if not inner_lr > 0:
            raise TransferkitError(f"inner lr must be positive, got {inner_lr}")
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.eval_inner_steps = eval_inner_steps or inner_steps
        self.first_order = first_order
        self.zero_head = zero_head

    @classmethod
    def from_spec(cls, model: Classifier, spec: Any) -> MAML:
        if spec.loss == "ce" and model.num_classes != spec.ways:
            raise TransferkitError(
                f"{spec.method} needs a head with one output per way: the model has {model.num_classes} outputs "
                f"but tasks are {spec.ways}-way; build the model with num_classes={spec.ways}"
            )
        return cls(model, spec.inner_lr, spec.inner_steps, spec.eval_inner_steps,
                   first_order=spec.first_order or spec.method == "fomaml", loss=spec.loss, ways=spec.ways,
                   zero_head=spec.zero_head)

    @property
    def double_backward(self) -> bool:
        return not self.first_order

    def _steps(self, steps: int | None) -> int:
        if steps is not None:
            return steps
        return self.inner_steps if self.training else self.eval_inner_steps

    def start(self, params: Params | None) -> Params:
        """The parameters an inner loop starts from: ``params`` (default theta), with a zero head under ``zero_head``."""
        params = params if params is not None else self.params()
        if not self.zero_head:
            return params
        return {**params, **{k: torch.zeros_like(params[k]) for k in ("head.weight", "head.bias")}}

    def adapt(self, support_x: Tensor, support_y: Tensor, params: Params | None = None, steps: int | None = None) -> Params:
        params = self.start(params)

        def inner(fast: Params) -> Tensor:
            return self.loss(self.forward_with(fast, support_x), support_y)

        return sgd_steps(inner, dict(params), self.inner_lr, self._steps(steps), self.first_order)

    def support_loss_change(self, episode: Episode) -> tuple[float, float]:
        """Mean support loss of ``episode``'s tasks before and after the training inner loop (no graph kept).

        A gradient step that *raises* the loss it descends overshoots: ``inner_lr`` is too large for
        this network's curvature. Second-order MAML can partly learn around that through the
        ``(I - alpha H)`` factor of its meta-gradient; first-order MAML cannot (its meta-gradient is
        the query gradient at the overshot weights), and stays far below second order.
        """
        params = {k: v.detach() for k, v in self.params().items()}
        was = self.training
        self.train()
        before = after = 0.0
        try:
            with torch.no_grad():
                for i in range(episode.num_tasks):
                    sx, sy = episode.support_x[i], episode.support_y[i]
                    before += float(self.loss(self.forward_with(self.start(params), sx), sy))
                    after += float(self.loss(self.predict(self.adapt(sx, sy, params), sx), sy))
        finally:
            self.train(was)
        return before / episode.num_tasks, after / episode.num_tasks


def _meta_gradient(learner: MAML, episode: Episode, first_order: bool) -> Tensor:
    """The flattened meta-gradient of ``episode`` at the current weights, of either order (no ``.grad`` touched)."""
    was = learner.first_order
    learner.first_order = first_order  # also switches batch norm to the plain ops a double backward needs
    try:
        params = [p for p in learner.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(learner.meta_loss(episode), params, allow_unused=True)
    finally:
        learner.first_order = was
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params, strict=True)])


def first_order_agreement(learner: MAML, episode: Episode) -> float:
    """Cosine between the first-order and the exact (second-order) meta-gradient of ``episode``.

    First-order MAML replaces ``d phi / d theta = prod_j (I - alpha H_j)`` by ``I``. That holds while
    ``alpha H`` is small; once ``alpha`` exceeds ``1 / lambda`` for the large curvatures ``lambda`` of
    the support loss, ``(I - alpha H)`` flips those directions, and the first-order meta-gradient can
    point *uphill* on the MAML objective (cosine < 0) even though the inner step still lowers the
    support loss (any ``alpha < 2 / lambda`` does). Costs one second-order meta-gradient.
    """
    fo = _meta_gradient(learner, episode, True)
    so = _meta_gradient(learner, episode, False)
    return float(torch.nn.functional.cosine_similarity(fo, so, dim=0))


LEARNERS.add("fomaml", "first-order MAML (Finn et al. 2017, Sec. 5.2)", MAML)


@LEARNERS.register("anil", "ANIL (Raghu et al. 2020): MAML adapting only the head")
class ANIL(MAML):
    """Almost No Inner Loop: MAML whose inner loop adapts only the linear head (features are reused)."""

    name = "anil"

    def adapt(self, support_x: Tensor, support_y: Tensor, params: Params | None = None, steps: int | None = None) -> Params:
        params = self.start(params)
        feats = self.features_with(params, support_x)
        head = {k: params[k] for k in ("head.weight", "head.bias")}

        def inner(fast: Params) -> Tensor:
            return self.loss(F.linear(feats, fast["head.weight"], fast["head.bias"]), support_y)

        return {**params, **sgd_steps(inner, head, self.inner_lr, self._steps(steps), self.first_order)}
