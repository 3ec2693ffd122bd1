"""Meta-learning from Python: build a learner, meta-train it through the engine, evaluate, adapt.

>>> from transferkit.meta import MetaSpec, build_learner, meta_train, EpisodeSampler
>>> learner = build_learner(model, MetaSpec(method="protonet", ways=5, shots=1))
>>> trainer, result = meta_train(learner, train_sampler, spec, config, val_sampler=val_sampler)
>>> learner.evaluate(test_sampler, episodes=600)          # {'acc': ..., 'ci95': ..., 'episodes': 600}
>>> adapted = learner.adapt(support_x, support_y)          # one task
>>> logits = learner.predict(adapted, query_x)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ..data.transforms import Augment
from ..engine import RunDir, TrainConfig, Trainer
from ..errors import TransferkitError, unknown_name
from ..models import Classifier
from .episodes import Episode
from .learner import MetaLearner
from .maml import ANIL, MAML
from .protonet import ProtoNet
from .reptile import Reptile

LEARNERS: dict[str, str] = {
    "protonet": "Prototypical Networks (Snell et al. 2017): nearest class mean in embedding space",
    "maml": "MAML (Finn et al. 2017), second order; --first-order for FOMAML",
    "fomaml": "first-order MAML (Finn et al. 2017, Sec. 5.2)",
    "anil": "ANIL (Raghu et al. 2020): MAML adapting only the head",
    "reptile": "Reptile (Nichol et al. 2018): move theta towards task-adapted weights",
}


TASK_MODES: dict[str, str] = {
    "auto": "a Python loop for convolutional networks on CPU, vmap otherwise (the faster of the two, measured)",
    "vmap": "torch.func.vmap over the tasks of a meta-batch: one vectorised computation",
    "loop": "a Python loop over the tasks (same gradients)",
}


def uses_vmap(tasks_as: str, model: torch.nn.Module, device: torch.device) -> bool:
    """Whether a meta-batch is computed with vmap (True) or a loop over tasks, for ``tasks_as``.

    ``auto`` loops for conv nets on CPU: there vmap turns each convolution into a grouped one over
    task-sized intermediates that fall out of cache (conv4, 16 Omniglot tasks, one thread:
    MAML 1.12 s vmap vs 0.92 s loop, first-order 1.04 vs 0.53, ProtoNets 3.7 vs 1.1), while small
    dense networks gain several-fold from vmap (sinusoid MLP: 7x).
    """
    if tasks_as != "auto":
        return tasks_as == "vmap"
    has_conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    return not (device.type == "cpu" and has_conv)


def set_task_mode(learner: MetaLearner, tasks_as: str, device: torch.device) -> None:
    """Compute meta-batches (training and evaluation) with vmap or a loop over tasks (:func:`uses_vmap`).

    A loop on CPU also stores conv weights channels-last: up to 1.35x faster per task there, but
    slower under vmap. Only strides change; checkpoints are saved contiguous.
    """
    learner.vectorise = uses_vmap(tasks_as, learner.model, device)
    if not learner.vectorise and device.type == "cpu":
        learner.model.to(memory_format=torch.channels_last)


@dataclass
class MetaSpec:
    """What to meta-learn and how: the learner, the task shape and the inner loop."""

    method: str = "protonet"
    ways: int = 5
    shots: int = 1
    queries: int = 15
    meta_batch: int = 16
    inner_steps: int = 1
    inner_lr: float = 0.4
    eval_inner_steps: int | None = None
    first_order: bool = False
    episodes_per_epoch: int = 100
    val_episodes: int = 100
    rotations: bool = False
    loss: str = "ce"
    tasks_as: str = "auto"

    def validate(self) -> None:
        if self.method not in LEARNERS:
            raise unknown_name("meta-learning method", self.method, LEARNERS)
        for name in ("ways", "shots", "meta_batch", "inner_steps", "episodes_per_epoch"):
            if getattr(self, name) < 1:
                raise TransferkitError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.queries < 1:
            raise TransferkitError(f"queries must be at least 1, got {self.queries}")
        if not self.inner_lr > 0:
            raise TransferkitError(f"inner-lr must be positive, got {self.inner_lr}")
        if self.tasks_as not in TASK_MODES:
            raise unknown_name("tasks-as mode", self.tasks_as, TASK_MODES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_learner(model: Classifier, spec: MetaSpec) -> MetaLearner:
    """The learner named by ``spec.method`` around ``model``."""
    spec.validate()
    if spec.method == "protonet":
        return ProtoNet(model, ways=spec.ways)
    if spec.method in ("maml", "fomaml", "anil") and model.num_classes != spec.ways and spec.loss == "ce":
        raise TransferkitError(
            f"{spec.method} needs a head with one output per way: the model has {model.num_classes} outputs "
            f"but tasks are {spec.ways}-way; build the model with num_classes={spec.ways}"
        )
    kw = {"inner_lr": spec.inner_lr, "inner_steps": spec.inner_steps, "eval_inner_steps": spec.eval_inner_steps, "loss": spec.loss, "ways": spec.ways}
    if spec.method == "reptile":
        return Reptile(model, **kw)
    cls = ANIL if spec.method == "anil" else MAML
    return cls(model, first_order=spec.first_order or spec.method == "fomaml", **kw)


def meta_train(
    learner: MetaLearner,
    train_sampler: Any,
    spec: MetaSpec,
    config: TrainConfig | None = None,
    val_sampler: Any | None = None,
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    resume: bool = False,
    augment: Augment | None = None,
) -> tuple[Trainer, Any]:
    """Meta-train through the engine: each step is one meta-batch of ``spec.meta_batch`` episodes.

    An epoch is ``spec.episodes_per_epoch`` meta-batches drawn from the epoch's generator (so
    resume is exact). With ``val_sampler``, the best checkpoint maximises the mean accuracy (or
    minus the MSE) over ``spec.val_episodes`` fixed validation episodes; it is loaded back at the end.
    ``spec.tasks_as`` picks vmap or a loop over the tasks of a meta-batch (:func:`uses_vmap`).
    ``augment`` (images only) transforms every support and query image of the training episodes
    independently, from the same generator; validation and test episodes are never augmented.
    """
    config = config or TrainConfig()
    device = torch.device(device) if isinstance(device, str) else device
    set_task_mode(learner, spec.tasks_as, device)

    def batches(epoch: int, gen: torch.Generator) -> Iterator[Episode]:
        for _ in range(spec.episodes_per_epoch):
            ep = train_sampler.sample(spec.meta_batch, gen)
            if augment is not None and augment.active and ep.support_x.dim() == 5:
                ep = replace(ep, support_x=_augment_tasks(augment, ep.support_x, gen), query_x=_augment_tasks(augment, ep.query_x, gen))
            yield ep.to(device)

    def validate(method: Any) -> dict[str, Any]:
        m = method.evaluate(val_sampler, spec.val_episodes, chunk=spec.meta_batch, seed=12345)
        return m

    def score(method: Any, val: dict[str, Any]) -> float:
        return float(val["acc"]) if "acc" in val else -float(val["mse"])

    trainer = Trainer(
        learner, config, batches, spec.episodes_per_epoch,
        validate=validate if val_sampler is not None else None,
        score=score if val_sampler is not None else None,
        select_name="val_acc" if spec.loss == "ce" else "neg_val_mse",
        run=run, device=device, verbose=verbose, callbacks=callbacks,
    )
    if resume:
        trainer.resume()
    result = trainer.fit()
    trainer.load_best()
    return trainer, result


def _augment_tasks(augment: Augment, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``augment`` on (tasks, n, C, H, W) images, each image drawn independently."""
    return augment(x.flatten(0, 1), gen).view_as(x)


def few_shot_predict(learner: MetaLearner, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Class probabilities (n_query, ways) for ``query_x`` after adapting on one labelled support set.

    All queries are predicted together (batch norm uses their joint statistics, as in meta-training).
    """
    ways = int(support_y.max()) + 1
    if isinstance(learner, ProtoNet):
        learner.ways = ways
    elif learner.model.num_classes != ways:
        raise TransferkitError(
            f"the support set has {ways} classes but this {learner.name} model was meta-trained with "
            f"{learner.model.num_classes} outputs (ways); give {learner.model.num_classes} class folders or use a protonet model"
        )
    learner.eval()
    params = {k: v.detach() for k, v in learner.params().items()}
    with torch.no_grad():
        logits = learner.predict(learner.adapt(support_x, support_y, params, steps), query_x)
    return torch.softmax(logits, -1)
