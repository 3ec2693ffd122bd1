"""The functional core shared by every meta-learner.

A learner holds one :class:`~transferkit.models.Classifier` (the meta-parameters
theta) and speaks a small vocabulary:

- ``adapt(support_x, support_y) -> adapted``: task-specific state (fast weights,
  or prototypes) for *one* task, as a dict of tensors;
- ``predict(adapted, query_x) -> logits``;
- ``task_loss(params, sx, sy, qx, qy)``: the query loss after adapting on the support set;
- ``meta_loss(episode)``: the mean task loss over a meta-batch, computed with
  ``torch.func.vmap`` over the tasks (one vectorised computation), or with a
  Python loop over tasks (``vectorise=False``, the reference the speed benchmark beats).

Everything runs through ``torch.func.functional_call`` on a parameter dict, so
inner-loop updates are ordinary tensor expressions that autograd (second order)
or ``detach`` (first order) handle.

Batch norm under vmap: running statistics are in-place buffer updates, which
cannot happen per task inside ``vmap``. Learners therefore switch every batch
norm layer to *batch statistics* (``track_running_stats = False`` and always in
training mode), the transductive convention of MAML and learn2learn: each
support or query batch is normalised with its own statistics. The buffers stay
registered (unchanged), so checkpoints keep the architecture's state dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..engine import Method, StepInfo
from ..engine.registry import Registry
from ..errors import TransferkitError
from ..models import Classifier
from .episodes import Episode

Params = dict[str, Tensor]
LOSSES = ("ce", "mse")


def batch_stat_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, fused: bool = False) -> Tensor:
    """Batch norm with the statistics of ``x`` itself, written in plain tensor ops.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with mean and (biased)
    variance over every dimension except channels (dim 1). Plain ops keep
    ``vmap`` of double backward exact; the fused ``aten.native_batch_norm``
    gives wrong second-order meta-gradients under vmap (measured: 15% relative
    error against the per-task loop in float64, torch 2.x).

    For speed the full-size tensor is touched as few times as possible: the
    statistics come from ``x`` and ``x * x`` (``var = E[x^2] - mean^2``), and the
    normalisation is folded into one per-channel ``scale`` and ``shift``, so the
    output is ``x * scale + shift``. This needs about half the full-size
    elementwise passes of ``(x - mean) * rsqrt(var + eps) * weight + bias`` in the
    forward, backward and double backward (conv4 MAML meta-gradient of 16 tasks,
    one thread: 1.94 s -> 1.37 s under vmap, 1.32 s -> 1.06 s in the task loop).
    ``E[x^2] - mean^2`` loses float32 precision only when ``|mean| >> std``, which
    conv outputs do not show (clamped at 0 for safety). Without autograd
    (evaluation, ``torch.no_grad``), or with ``fused=True`` for learners that never
    differentiate a gradient, the fused kernel is used.
    """
    n = x.numel() // x.shape[1]
    # without a double backward (``fused=True``, or evaluation under no_grad) the fused kernel is exact;
    # it refuses a single value per channel, which the plain ops handle
    if (fused or not torch.is_grad_enabled()) and n > 1:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    # sums divided afterwards: the backward of a sum is a broadcast view, of a mean a full-size division
    mean = x.sum(dims, keepdim=True) / n
    var = ((x * x).sum(dims, keepdim=True) / n - mean * mean).clamp(min=0)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.view(shape)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.view(shape)
    return x * scale + shift


def use_batch_statistics(model: nn.Module, plain_ops: Callable[[], bool] = lambda: True) -> list[nn.Module]:
    """Make every batch-norm layer normalise with the statistics of the batch it sees; return them.

    The layer keeps its parameters and (now unused) running buffers, so the
    state dict is unchanged; only its ``forward`` is replaced on the instance.
    While ``plain_ops()`` is true the layer uses :func:`batch_stat_norm` (exact
    double backward under vmap); otherwise the fused kernel, about twice as fast
    on CPU, for learners that never differentiate a gradient (ProtoNets, first order).
    """
    bns: list[nn.Module] = []
    for m in model.modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        bns.append(m)
        m.track_running_stats = False

        def forward(x: Tensor, m: nn.modules.batchnorm._BatchNorm = m) -> Tensor:
            return batch_stat_norm(x, m.weight, m.bias, m.eps, fused=not plain_ops())

        m.forward = forward  # type: ignore[method-assign, assignment]  # instance-level override, on purpose
    return bns


def sub_params(params: Params, prefix: str) -> Params:
    """The entries of ``params`` under ``prefix.``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in params.items() if k.startswith(p)}


def task_loss_fn(kind: str, logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy for classification (integer targets), mean squared error for regression."""
    if kind == "ce":
        return F.cross_entropy(logits, target)
    return F.mse_loss(logits, target)


class MetaLearner(Method):
    """Base class: a model plus the functional adapt / predict vocabulary.

    Args:
        model: the meta-learned network; its head has one output per way (or one output for regression).
        loss: ``"ce"`` (few-shot classification) or ``"mse"`` (regression, e.g. sinusoids).
        ways: classes per task (ProtoNets needs it to form prototypes; default: the head width).

    ``chunk_size`` (attribute, default None) vmaps over the tasks in chunks of that many:
    smaller intermediate tensors, which can help CPU caches; None is one vectorised call.
    ``vectorise`` (attribute, default True) is the default of :meth:`meta_loss`: vmap over the
    tasks, or a Python loop (faster for conv nets on CPU; :func:`~transferkit.meta.meta_train` sets it).
    """

    chunk_size: int | None = None
    vectorise: bool = True
    losses: tuple[str, ...] = LOSSES  # the task losses this learner handles (ProtoNets: classification only)

    name = "base"

    def __init__(self, model: Classifier, loss: str = "ce", ways: int | None = None):
        super().__init__(model)
        if loss not in LOSSES:
            raise TransferkitError(f"unknown meta loss '{loss}'; known: {', '.join(LOSSES)}")
        self.loss_kind = loss
        self.ways = ways or model.num_classes
        self._bns = use_batch_statistics(model, lambda: self.double_backward)

    @classmethod
    def from_spec(cls, model: Classifier, spec: Any) -> MetaLearner:
        """The learner around ``model`` with the task shape and inner loop of a :class:`~transferkit.meta.MetaSpec`."""
        raise NotImplementedError

    @property
    def double_backward(self) -> bool:
        """Whether the meta-gradient differentiates through an inner gradient (second-order MAML)."""
        return True

    # ------------------------------------------------------------ functional
    def params(self) -> Params:
        """The meta-parameters theta, by name (live tensors: gradients flow into the model)."""
        return dict(self.model.named_parameters())

    def _call(self, module: nn.Module, prefix: str | None, params: Params, x: Tensor) -> Tensor:
        p = params if prefix is None else sub_params(params, prefix)
        buffers = dict(module.named_buffers())
        return functional_call(module, (p, buffers), (x,), strict=False)

    def forward_with(self, params: Params, x: Tensor) -> Tensor:
        """``model(x)`` with the given parameters."""
        return self._call(self.model, None, params, x)

    def features_with(self, params: Params, x: Tensor) -> Tensor:
        """``model.features(x)`` (backbone, then bottleneck) with the given parameters."""
        h = self._call(self.model.backbone, "backbone", params, x)
        return self._call(self.model.bottleneck, "bottleneck", params, h)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return task_loss_fn(self.loss_kind, logits, target)

    # ------------------------------------------------------------ vocabulary
    def adapt(self, support_x: Tensor, support_y: Tensor, params: Params | None = None, steps: int | None = None) -> Params:
        """Task-specific state after seeing one task's support set."""
        raise NotImplementedError

    def predict(self, adapted: Params, query_x: Tensor) -> Tensor:
        """Outputs (logits) of the adapted learner on one task's queries."""
        return self.forward_with(adapted, query_x)

    def task_loss(self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        """Query loss of one task after adapting on its support set."""
        return self.loss(self.predict(self.adapt(sx, sy, params), qx), qy)

    def meta_loss(self, episode: Episode, vectorise: bool | None = None) -> Tensor:
        """Mean task loss over the meta-batch (vmap over tasks, or a Python loop; default ``self.vectorise``)."""
        params = self.params()
        e = episode
        vectorise = self.vectorise if vectorise is None else vectorise
        if vectorise and e.num_tasks > 1:  # one task: nothing to vectorise, skip vmap's overhead
            losses = vmap(self.task_loss, in_dims=(None, 0, 0, 0, 0), randomness="different", chunk_size=self.chunk_size)(
                params, e.support_x, e.support_y, e.query_x, e.query_y
            )
        else:
            losses = torch.stack([
                self.task_loss(params, e.support_x[i], e.support_y[i], e.query_x[i], e.query_y[i])
                for i in range(e.num_tasks)
            ])
        return losses.mean()

    def training_losses(self, batch: Any, info: StepInfo) -> dict[str, Tensor]:
        return {"meta_loss": self.meta_loss(batch)}

    # ------------------------------------------------------------ evaluation
    def episode_outputs(self, episode: Episode, steps: int | None = None) -> Tensor:
        """Query outputs (B, N*Q, out) of every task, adapted on its own support set (vmap over tasks or a loop)."""
        params = {k: v.detach() for k, v in self.params().items()}

        def one(sx: Tensor, sy: Tensor, qx: Tensor) -> Tensor:
            return self.predict(self.adapt(sx, sy, params, steps), qx)

        if episode.num_tasks == 1 or not self.vectorise:
            return torch.stack([one(episode.support_x[i], episode.support_y[i], episode.query_x[i]) for i in range(episode.num_tasks)])
        return vmap(one, randomness="different")(episode.support_x, episode.support_y, episode.query_x)

    def evaluate(self, sampler: Any, episodes: int = 600, chunk: int = 32, seed: int = 0, steps: int | None = None) -> dict[str, float]:
        """Accuracy (%, classification) or MSE (regression) over ``episodes`` seeded episodes, with a 95% interval.

        The interval is ``1.96 * std / sqrt(episodes)`` over per-episode scores.
        """
        gen = torch.Generator().manual_seed(seed)
        scores = []
        was = self.training
        self.eval()  # evaluation-time inner steps
        try:
            for start in range(0, episodes, chunk):
                ep = sampler.sample(min(chunk, episodes - start), gen)
                with torch.no_grad():
                    out = self.episode_outputs(ep, steps)
                if self.loss_kind == "ce":
                    scores.append((out.argmax(-1) == ep.query_y).float().mean(1) * 100)
                else:
                    scores.append(((out - ep.query_y) ** 2).flatten(1).mean(1))
        finally:
            self.train(was)
        s = torch.cat(scores).double()
        std = float(s.std()) if len(s) > 1 else 0.0
        key = "acc" if self.loss_kind == "ce" else "mse"
        return {key: float(s.mean()), "ci95": 1.96 * std / math.sqrt(len(s)), "episodes": len(s)}


def sgd_steps(loss_of: Any, fast: Params, lr: float, steps: int, first_order: bool) -> Params:
    """``steps`` plain gradient steps ``fast <- fast - lr * grad loss_of(fast)`` with ``torch.func.grad``.

    Second order keeps the graph through the gradient (so the outer gradient
    includes the Hessian-vector terms); first order detaches it.
    """
    for _ in range(steps):
        g = torch.func.grad(loss_of)(fast)
        fast = {k: fast[k] - lr * (g[k].detach() if first_order else g[k]) for k in fast}
    return fast


LEARNERS: Registry[type[MetaLearner]] = Registry("meta-learning method")
"""Meta-learners by name; each registers itself in its own file and builds itself with ``from_spec``."""
