"""Test-time adaptation: a trained model adapts to the data it is predicting, without source data or labels.

Two methods, registered in :data:`TTA_METHODS` with their options:

* ``adabn`` (Li et al., "Adaptive Batch Normalization for practical domain adaptation", Pattern
  Recognition 2018 / ICLR-W 2017): every batch-norm layer's running mean and variance are
  re-estimated on the test inputs; weights are untouched. With ``episodic`` each test batch is
  normalised by its own statistics instead.
* ``tent`` (Wang, Shelhamer, Liu, Olshausen, Darrell, "Tent: Fully Test-Time Adaptation by Entropy
  Minimization", ICLR 2021): normalisation layers use the test batch's statistics, and only their
  affine parameters (gamma, beta) move, by ``steps`` gradient steps per batch on the mean entropy
  of the predictions

  .. math:: \\mathcal{L}(x) = -\\frac{1}{B} \\sum_{i=1}^{B} \\sum_c p_{ic} \\log p_{ic},
            \\quad p_i = \\mathrm{softmax}(f_\\theta(x_i))

  online over the stream of test batches (``continual``), or reset to the trained weights before
  every batch (``episodic``). The prediction for a batch is the one made by the forward pass of
  its last step (the paper's choice: predict, then update). Batch-norm running statistics
  become the average over the test stream, so the adapted model can be saved and used alone.

>>> adapter = create_tta("tent", model, tta_lr=1e-3)
>>> logits = torch.cat([adapter.predict(x[i:i + 64]) for i in range(0, len(x), 64)])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..engine.registry import Registry
from ..errors import TransferkitError
from ..options import option

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """The normalisation layers of ``model`` (batch, layer and group norm)."""
    return [m for m in model.modules() if isinstance(m, NORM_LAYERS)]


def prediction_entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy of the softmax predictions, ``-mean_i sum_c p_ic log p_ic``."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


class TestTimeAdapter:
    """Base: wraps a trained model; ``predict(x)`` adapts on the batch and returns its logits."""

    __test__ = False  # not a pytest test class

    def __init__(self, model: nn.Module, episodic: bool = False):
        self.model = model
        self.episodic = episodic
        self.trained_state = copy.deepcopy(model.state_dict())

    def reset(self) -> None:
        """Back to the trained weights and statistics."""
        self.model.load_state_dict(self.trained_state)

    def predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def check_batch(self, x: Tensor) -> None:
        """Refuse a batch whose statistics do not exist: one input through a batch norm over features."""
        if len(x) < 2 and any(isinstance(m, nn.BatchNorm1d) for m in self.model.modules()):
            raise TransferkitError(f"test-time adaptation normalises each test batch by its own statistics, which need at least "
                                   f"2 inputs for this model's feature batch norm; got a batch of {len(x)}: predict more inputs at once")


EPISODIC_HELP = ("Treat each test batch on its own (adabn: its own statistics; tent: reset to the trained weights first) instead of adapting continually over the stream.")

TTA_METHODS: Registry[type[TestTimeAdapter]] = Registry("test-time adaptation method")
"""Test-time adaptation methods by name (``transferkit predict --adapt NAME``)."""


@dataclass
class AdaBNConfig:
    episodic: bool = option(False, EPISODIC_HELP)


@TTA_METHODS.register("adabn", "re-estimate batch-norm statistics on the test data (Li et al. 2017)", AdaBNConfig)
class AdaBN(TestTimeAdapter):
    """Batch-norm statistics from the test data; the weights stay as trained.

    Continual (default): the running mean and variance restart from zero and become the
    cumulative average over every test batch seen so far (``momentum=None``); each batch is
    predicted with the statistics of all batches up to and including it.
    """

    def __init__(self, model: nn.Module, episodic: bool = False):
        super().__init__(model, episodic)
        self.bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.bns:
            raise TransferkitError("adabn re-estimates batch-norm statistics, but this model has no batch-norm layer; "
                                   "use --adapt tent (layer or group norm) or predict without --adapt")
        for bn in self.bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the test stream

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        self.check_batch(x)
        self.model.eval()
        if self.episodic:
            for bn in self.bns:
                bn.train()
            return self.model(x)
        for bn in self.bns:
            bn.train()
        self.model(x)  # updates the running statistics with this batch
        self.model.eval()
        return self.model(x)


@dataclass
class TENTConfig:
    tta_lr: float = option(1e-3, "TENT: Adam learning rate of the normalisation layers' affine parameters.", min=0, min_open=True)
    tta_steps: int = option(1, "TENT: gradient steps per test batch.", min=1)
    episodic: bool = option(False, EPISODIC_HELP)


@TTA_METHODS.register("tent", "entropy minimisation on the normalisation layers' affine parameters (Wang et al. 2021)", TENTConfig)
class TENT(TestTimeAdapter):
    """TENT: see the module docstring for the loss. Only gamma and beta of the norm layers train."""

    def __init__(self, model: nn.Module, tta_lr: float = 1e-3, tta_steps: int = 1, episodic: bool = False):
        super().__init__(model, episodic)
        norms = norm_layers(model)
        params = [p for m in norms for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if isinstance(p, nn.Parameter)]
        if not params:
            raise TransferkitError("tent adapts the affine parameters of normalisation layers, but this model has none "
                                   "(no batch, layer or group norm with weights); predict without --adapt")
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        for m in norms:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                # forwards use the test batch's statistics (as in the paper); the running statistics
                # become the average over the test stream, so a saved adapted model predicts alone
                m.reset_running_stats()
                m.momentum = None
        self.params = params
        self.steps = tta_steps
        self.lr = tta_lr
        self.optimizer = torch.optim.Adam(params, lr=tta_lr)
        self.trained_state = copy.deepcopy(model.state_dict())
        self.trained_optimizer = copy.deepcopy(self.optimizer.state_dict())

    def reset(self) -> None:
        super().reset()
        self.optimizer.load_state_dict(self.trained_optimizer)

    def predict(self, x: Tensor) -> Tensor:
        self.check_batch(x)
        if self.episodic:
            self.reset()
        self.model.train()  # batch statistics; dropout is off below
        for m in self.model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        logits = x
        for _ in range(self.steps):
            logits = self.model(x)
            loss = prediction_entropy(logits)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return logits.detach()


def create_tta(name: str, model: nn.Module, **options: Any) -> TestTimeAdapter:
    """A test-time adapter ``name`` around ``model`` (which it changes in place) with its checked options."""
    entry = TTA_METHODS.entry(name)
    cfg = entry.make_config(options, strict=True)
    return entry.obj(model, **(vars(cfg) if cfg is not None else {}))


def adapt_and_predict(adapter: TestTimeAdapter, x: Tensor, batch_size: int = 64) -> Tensor:
    """Logits for ``x`` in order, adapting on each batch of ``batch_size`` as it is predicted.

    A last batch of a single input joins the batch before it (``batch_size + 1`` inputs): one
    input has no batch statistics over features.
    """
    if len(x) == 0:
        return torch.zeros(0)
    starts = list(range(0, len(x), batch_size))
    if len(starts) > 1 and len(x) - starts[-1] == 1:
        starts.pop()
    ends = [*starts[1:], len(x)]
    return torch.cat([adapter.predict(x[a:b]) for a, b in zip(starts, ends, strict=True)])
