"""SHOT: source-free domain adaptation from a trained model and unlabelled target data only.

Liang, Hu, Feng. "Do We Really Need to Access the Source Data? Source Hypothesis Transfer for
Unsupervised Domain Adaptation." ICML 2020.

The source classifier (the head, the "hypothesis") is frozen; the feature extractor
``g`` (backbone and bottleneck) learns on target inputs only:

.. math::
    \\mathcal{L} = \\underbrace{\\mathbb{E}_x H(p(x)) - H(\\mathbb{E}_x p(x))}_{\\text{information maximisation}}
        + \\beta\\, \\mathrm{CE}(p(x), \\hat y(x))

with ``p(x) = softmax(h(g(x)))``. The pseudo-labels ``ŷ`` are recomputed at the start of every
epoch by self-supervised clustering of the target features: centroids weighted by the
predictions, ``c_k = sum_x p_k(x) g(x) / sum_x p_k(x)``, ``ŷ(x) = argmin_k cos-dist(g(x), c_k)``,
then once more with centroids of the hard labels. The checkpoint is chosen without target
labels (an unsupervised validator on a target sample).

>>> result = adapt_source_free(trained_model, target, ShotConfig(), TrainConfig(epochs=10))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import TensorData
from ..engine import RunDir, StepInfo, TrainConfig, evaluate
from ..engine.evaluate import batched_forward
from ..engine.method import Method
from ..engine.pipeline import Outcome, index_stream, summary, train
from ..engine.registry import Registry
from ..errors import TransferkitError
from ..models import Classifier
from ..options import as_dict, check, option
from .validators import VALIDATOR_DOCS, VALIDATORS, model_outputs

SOURCE_FREE_VALIDATORS = ("im", "entropy", "snd")  # the ones that need no source data


@dataclass
class ShotConfig:
    """SHOT's options (each is also a command-line option of ``adapt --method shot``)."""

    beta: float = option(0.3, "SHOT: weight of the pseudo-label cross-entropy.", min=0)
    im_weight: float = option(1.0, "SHOT: weight of the information-maximisation term.", min=0)
    select_by: str = option("im", "Unsupervised validator choosing the checkpoint (no source data: im, entropy or snd).",
                            choices={k: VALIDATOR_DOCS[k] for k in SOURCE_FREE_VALIDATORS})
    batch_size: int = option(64, "Target batch size.", min=2)
    val_target_size: int = option(2000, "Target inputs scored by the validator each epoch.", min=10)


SOURCE_FREE_METHODS: Registry[type[Method]] = Registry("source-free adaptation method")


def cluster_pseudo_labels(features: Tensor, probs: Tensor, rounds: int = 2) -> Tensor:
    """SHOT's pseudo-labels: nearest centroid by cosine distance, centroids first soft then hard."""
    f = F.normalize(features, dim=1)
    weights = probs
    labels = probs.argmax(1)
    for _ in range(rounds):
        centroids = (weights.t() @ f) / weights.sum(0).clamp_min(1e-8)[:, None]
        labels = (f @ F.normalize(centroids, dim=1).t()).argmax(1)
        weights = F.one_hot(labels, probs.shape[1]).to(f.dtype)
    return labels


@SOURCE_FREE_METHODS.register("shot", "source hypothesis transfer: frozen head, information maximisation and "
                              "clustered pseudo-labels (Liang et al. 2020)", ShotConfig)
class SHOT(Method):
    """Batches are index tensors into ``target_x``; pseudo-labels are refreshed each epoch."""

    def __init__(self, model: Classifier, target_x: Tensor, beta: float = 0.3, im_weight: float = 1.0):
        super().__init__(model)
        self.target_x = target_x
        self.beta, self.im_weight = beta, im_weight
        for p in model.head.parameters():
            p.requires_grad_(False)
        self.pseudo: Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        if self.beta > 0:
            feats, logits = batched_forward(self.model, self.target_x, 1024, self.model.forward_all)
            self.pseudo = cluster_pseudo_labels(feats.float(), F.softmax(logits.float(), 1))
            self.model.train()

    def training_losses(self, batch: Tensor, info: StepInfo) -> dict[str, Tensor]:
        logits = self.model(self.target_x[batch])
        p = F.softmax(logits, 1)
        mean_entropy = -(p * F.log_softmax(logits, 1)).sum(1).mean()
        p_bar = p.mean(0)
        diversity = -(p_bar * torch.log(p_bar + 1e-5)).sum()
        out = {"im": self.im_weight * (mean_entropy - diversity)}
        if self.beta > 0 and self.pseudo is not None:
            out["pseudo"] = self.beta * F.cross_entropy(logits, self.pseudo[batch])
        return out


@dataclass
class SourceFreeResult:
    model: Classifier
    summary: dict[str, Any]
    outcome: Outcome


def adapt_source_free(
    model: Classifier,
    target: TensorData,
    spec: ShotConfig | None = None,
    config: TrainConfig | None = None,
    target_test: TensorData | None = None,
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    resume: bool = False,
) -> SourceFreeResult:
    """Adapt a copy of the trained ``model`` to the unlabelled ``target`` with SHOT; see the module docstring.

    ``target_test`` (labelled) only reports accuracy; it never chooses the checkpoint.
    """
    spec = check(spec or ShotConfig())
    config = config or TrainConfig()
    device = torch.device(device) if isinstance(device, str) else device
    if target.input_shape != tuple(model.spec["input_shape"]):
        raise TransferkitError(f"target {target.name} has inputs of shape {target.input_shape} but the model expects "
                               f"{tuple(model.spec['input_shape'])}")
    if target_test is not None:
        target_test.require_labels("--target-test (it measures accuracy)")
    net = copy.deepcopy(model).to(device)
    target_d = target.unlabeled().to(device)
    g = torch.Generator().manual_seed(config.seed)
    val_x = target_d.x[torch.randperm(len(target_d), generator=g)[: spec.val_target_size].to(device)]
    test_d = target_test.to(device) if target_test is not None else None

    def scores(m: Classifier) -> dict[str, Any]:
        out = model_outputs(m, val_x, None)
        rec: dict[str, Any] = {name: VALIDATORS[name](out) for name in SOURCE_FREE_VALIDATORS}
        if test_d is not None:  # reported only
            rec["target_test_acc"] = evaluate(m, test_d, config.eval_batch_size)["acc"]
        return rec

    before = scores(net)
    method = SHOT(net, target_d.x, spec.beta, spec.im_weight)
    stream = index_stream(len(target_d), spec.batch_size, lambda idx, gen: idx, device, drop_last=True)
    outcome = train(method, stream, config, validate=lambda m: scores(m.model), score=lambda _m, v: float(v[spec.select_by]),
                    select_name=spec.select_by, run=run, device=device, verbose=verbose, callbacks=callbacks,
                    resume=resume)
    net.eval()
    after = scores(net)
    metrics = dict(after)
    extra: dict[str, Any] = {"target": target.name, "spec": as_dict(spec), "train": as_dict(config),
                             "before": before, "source_free": True}
    if test_d is not None:
        extra["target_test"] = evaluate(net, test_d, config.eval_batch_size)
        metrics["target_test_acc"] = extra["target_test"]["acc"]
        metrics["source_model_target_test_acc"] = before["target_test_acc"]
    out = summary("adapt", "shot", outcome, metrics, headline="target_test_acc" if test_d is not None else spec.select_by,
                  **extra)
    out["selection"]["note"] = "no target labels used"
    if run is not None:
        run.write_summary(out)
    return SourceFreeResult(net, out, outcome)
