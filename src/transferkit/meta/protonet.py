"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Each class k of a task is represented by the mean embedding of its support
examples, ``c_k = 1/|S_k| sum_{x in S_k} f_theta(x)``; a query is classified by
a softmax over negative squared Euclidean distances::

    p(y = k | x) = exp(-||f(x) - c_k||^2) / sum_k' exp(-||f(x) - c_k'||^2)

and the meta-loss is the query cross-entropy. There is no inner loop: ``adapt``
computes the prototypes, so ProtoNets work with any number of ways at test
time (the model's head is unused).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.nn import functional as F

from ..models import Classifier
from ..ops import sq_distances
from .learner import LEARNERS, MetaLearner, Params


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """(ways, D) class means of ``embeddings`` (n, D) with ``labels`` in 0..ways-1."""
    onehot = F.one_hot(labels, ways).to(embeddings.dtype)  # (n, ways)
    return (onehot.T @ embeddings) / onehot.sum(0).clamp(min=1).unsqueeze(1)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(n, m) squared Euclidean distances between rows of ``a`` (n, D) and ``b`` (m, D)."""
    return sq_distances(a, b)


@LEARNERS.register("protonet", "Prototypical Networks (Snell et al. 2017): nearest class mean in embedding space")
class ProtoNet(MetaLearner):
    """Prototypical Networks: logits are negative squared distances to class prototypes."""

    name = "protonet"
    losses = ("ce",)  # prototypes are class means: no regression

    def __init__(self, model: Classifier, ways: int | None = None):
        super().__init__(model, "ce", ways)

    @classmethod
    def from_spec(cls, model: Classifier, spec: Any) -> ProtoNet:
        return cls(model, ways=spec.ways)

    @property
    def double_backward(self) -> bool:
        return False  # no inner loop: the fused batch-norm kernel is exact

    def adapt(self, support_x: Tensor, support_y: Tensor, params: Params | None = None, steps: int | None = None) -> Params:
        params = params if params is not None else self.params()
        protos = prototypes(self.features_with(params, support_x), support_y, self.ways)
        return {**params, "prototypes": protos}

    def evaluate(self, sampler: Any, episodes: int = 600, chunk: int = 32, seed: int = 0, steps: int | None = None) -> dict[str, float]:
        """As :meth:`MetaLearner.evaluate`, with as many prototypes as the sampler's ways."""
        saved, self.ways = self.ways, getattr(sampler, "ways", self.ways)
        try:
            return super().evaluate(sampler, episodes, chunk, seed, steps)
        finally:
            self.ways = saved

    def predict(self, adapted: Params, query_x: Tensor) -> Tensor:
        params = {k: v for k, v in adapted.items() if k != "prototypes"}
        return -squared_distances(self.features_with(params, query_x), adapted["prototypes"])
