"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018).

For each task of a meta-batch, run ``s`` steps of SGD from theta on the task's
data to get phi_i; then move theta towards the mean adapted weights::

    theta <- theta + epsilon * (1/B sum_i phi_i - theta)

Reptile is not the gradient of a loss. To train it through the one engine
(which back-propagates a loss and steps an optimizer) we return the
*surrogate* ``R(theta) = 1/2 ||theta - sg(phi_bar)||^2`` where ``sg`` stops the
gradient and ``phi_bar`` is the mean adapted weights. Its gradient is exactly
``theta - phi_bar``, the (negated) Reptile direction; its value is half the
squared distance the meta-step closes. With ``--optimizer sgd --momentum 0``
and ``--lr epsilon`` one engine step *is* the Reptile update; with Adam (the
default) it is Reptile's direction with Adam's per-parameter scaling, as the
Reptile paper's own implementation allows for the outer step.

The inner loop trains on the support and query examples of the task together
(Reptile has no support/query distinction at meta-training time); at test time
``adapt`` uses the support set only.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torch.func import vmap

from ..engine import StepInfo
from .episodes import Episode
from .learner import LEARNERS, Params, sgd_steps
from .maml import MAML


@LEARNERS.register("reptile", "Reptile (Nichol et al. 2018): move theta towards task-adapted weights")
class Reptile(MAML):
    """Reptile: first-order inner SGD; the meta-step pulls theta towards the adapted weights."""

    name = "reptile"

    def __init__(self, model: Any, inner_lr: float = 0.1, inner_steps: int = 5, eval_inner_steps: int | None = None, loss: str = "ce", ways: int | None = None):
        super().__init__(model, inner_lr, inner_steps, eval_inner_steps, first_order=True, loss=loss, ways=ways)

    @classmethod
    def from_spec(cls, model: Any, spec: Any) -> Reptile:
        return cls(model, spec.inner_lr, spec.inner_steps, spec.eval_inner_steps, loss=spec.loss, ways=spec.ways)

    def adapt(self, support_x: Tensor, support_y: Tensor, params: Params | None = None, steps: int | None = None) -> Params:
        params = params if params is not None else self.params()
        fast = {k: v.detach() for k, v in params.items()}

        def inner(f: Params) -> Tensor:
            return self.loss(self.forward_with(f, support_x), support_y)

        return sgd_steps(inner, fast, self.inner_lr, self._steps(steps), True)

    def adapted_mean(self, episode: Episode, vectorise: bool | None = None) -> Params:
        """Mean over the tasks of the weights adapted on each task's support + query examples."""
        vectorise = self.vectorise if vectorise is None else vectorise
        x = torch.cat([episode.support_x, episode.query_x], 1)
        y = torch.cat([episode.support_y, episode.query_y], 1)
        params = {k: v.detach() for k, v in self.params().items()}
        if vectorise:
            phi = vmap(lambda a, b: self.adapt(a, b, params), randomness="different")(x, y)
            return {k: v.mean(0) for k, v in phi.items()}
        per_task = [self.adapt(x[i], y[i], params) for i in range(episode.num_tasks)]
        return {k: torch.stack([p[k] for p in per_task]).mean(0) for k in params}

    def meta_loss(self, episode: Episode, vectorise: bool | None = None) -> Tensor:
        """The surrogate ``1/2 ||theta - sg(phi_bar)||^2`` (gradient: theta - phi_bar)."""
        target = self.adapted_mean(episode, vectorise)
        return cast(Tensor, sum(0.5 * ((p - target[k]) ** 2).sum() for k, p in self.params().items()))

    def training_losses(self, batch: Any, info: StepInfo) -> dict[str, Tensor]:
        return {"reptile_surrogate": self.meta_loss(batch)}
