"""Meta-learning from Python: build a learner, meta-train it through the engine, evaluate, adapt.

>>> from transferkit.meta import MetaSpec, build_learner, meta_train, EpisodeSampler
>>> learner = build_learner(model, MetaSpec(method="protonet", ways=5, shots=1))
>>> trainer, result = meta_train(learner, train_sampler, spec, config, val_sampler=val_sampler)
>>> learner.evaluate(test_sampler, episodes=600)          # {'acc': ..., 'ci95': ..., 'episodes': 600}
>>> adapted = learner.adapt(support_x, support_y)          # one task
>>> logits = learner.predict(adapted, query_x)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..data.transforms import Augment
from ..engine import RunDir, TrainConfig
from ..engine.pipeline import BatchStream, Outcome, train
from ..errors import TransferkitError
from ..models import Classifier
from ..options import as_dict, check, option
from .episodes import Episode
from .learner import LEARNERS, MetaLearner
from .maml import MAML, first_order_agreement
from .protonet import ProtoNet

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
    """What to meta-learn and how: the learner, the task shape and the inner loop (each field is also an option)."""

    method: str = option("protonet", "Meta-learner (see `transferkit methods meta`).")
    ways: int = option(5, "N: classes per episode.", min=1)
    shots: int = option(1, "K: labelled support examples per class.", min=1)
    queries: int = option(15, "Q: query examples per class.", min=1)
    meta_batch: int = option(16, "Tasks per meta-step (vmapped together).", min=1)
    inner_steps: int = option(1, "Inner-loop gradient steps while meta-training (MAML, ANIL, Reptile).", min=1)
    inner_lr: float = option(0.4, "Inner-loop step size alpha.", min=0, min_open=True)
    eval_inner_steps: int | None = option(None, "Inner steps at evaluation (default: --inner-steps).", min=1)
    first_order: bool = option(False, "MAML/ANIL: drop second derivatives (FOMAML).")
    zero_head: bool = option(False, "MAML/ANIL: start every task's inner loop from a zero head (the zeroing trick of Kao et al. 2022): "
                                    "the first inner step is a prototype classifier.")
    episodes_per_epoch: int = option(100, "Meta-batches per epoch.", min=1)
    val_episodes: int = option(100, "Validation episodes per epoch.", min=1)
    rotations: bool = option(False, "Add 90/180/270-degree rotations of each class as new classes (Omniglot convention).")
    loss: str = option("ce", "ce for few-shot classification, mse for regression (set from the data).", choices=("ce", "mse"), hidden=True)
    tasks_as: str = option("auto", "How a meta-batch's tasks are computed.", choices=TASK_MODES)

    def validate(self) -> None:
        LEARNERS.entry(self.method)
        check(self)
        if self.loss not in LEARNERS[self.method].losses:
            able = [n for n in LEARNERS.names() if self.loss in LEARNERS[n].losses]
            task = "regression (mean squared error, e.g. --data sinusoid)" if self.loss == "mse" else "classification"
            methods = f"{', '.join(able[:-1])} or {able[-1]}" if len(able) > 1 else "".join(able)
            raise TransferkitError(f"--method {self.method} does not handle {task}; use --method {methods}")

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


def build_learner(model: Classifier, spec: MetaSpec) -> MetaLearner:
    """The learner registered as ``spec.method``, around ``model``."""
    spec.validate()
    return LEARNERS[spec.method].from_spec(model, spec)


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
) -> Outcome:
    """Meta-train through the engine: each step is one meta-batch of ``spec.meta_batch`` episodes.

    An epoch is ``spec.episodes_per_epoch`` meta-batches drawn from the epoch's generator (so
    resume is exact). With ``val_sampler``, the best checkpoint maximises the mean accuracy (or
    minus the MSE) over ``spec.val_episodes`` fixed validation episodes; its weights are in the
    learner's model at the end, with or without a run folder.
    ``spec.tasks_as`` picks vmap or a loop over the tasks of a meta-batch (:func:`uses_vmap`).
    ``augment`` (images only) transforms every support and query image of the training episodes
    independently, from the same generator; validation and test episodes are never augmented.
    """
    config = config or TrainConfig()
    device = torch.device(device) if isinstance(device, str) else device
    set_task_mode(learner, spec.tasks_as, device)
    if isinstance(learner, MAML) and not resume:
        warn_if_inner_step_overshoots(learner, train_sampler.sample(spec.meta_batch, torch.Generator().manual_seed(config.seed)).to(device))

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

    return train(
        learner, BatchStream(batches, spec.episodes_per_epoch), config,
        validate=validate if val_sampler is not None else None,
        score=score if val_sampler is not None else None,
        select_name="val_acc" if spec.loss == "ce" else "neg_val_mse",
        run=run, device=device, verbose=verbose, callbacks=callbacks, resume=resume,
    )


BARELY_ADAPTS = 0.1
"""First-order MAML is warned when its inner loop lowers the support loss by less than this fraction at initialisation."""


def warn_if_inner_step_overshoots(learner: MAML, episode: Episode) -> bool:
    """Warn (and return True) when the inner loop raises the mean support loss of ``episode`` (the initial weights),
    or, for first-order MAML, when it barely lowers it (classification without a zero head: by less than
    ``BARELY_ADAPTS``) or its meta-gradient points uphill on the MAML objective (:func:`first_order_agreement`).

    A barely adapting inner loop is harmless to second order (its meta-gradient carries the curvature
    term) but leaves first order without a task signal: the adapted weights are nearly the
    meta-parameters, so the first-order meta-gradient is that of one network fitting tasks whose
    labels are permuted from task to task, which only inflates the head's logits. On 20-way Omniglot
    one step of 0.03 (support loss 3.00 -> 2.89) gave first order 7.7% against second order's 52.7%.

    The MAML paper's ``inner_lr = 0.4`` was set for its own TensorFlow network; on transferkit's
    conv4 (PyTorch initialisation, batch norm with a learnt scale, 2x2x64 features) the same step
    multiplies the Omniglot support loss by ~5 at initialisation. Second order learns around it
    partly; first order cannot (43% against 85% at 5-way 1-shot before issue 16).
    """
    before, after = learner.support_loss_change(episode)
    if after > before:
        warnings.warn(
            f"the {learner.name} inner loop raises the support loss of a first meta-batch ({before:.3f} -> {after:.3f}): "
            f"--inner-lr {learner.inner_lr:g} overshoots for this model; lower it until one inner step lowers the loss "
            "(first-order MAML cannot learn around an overshooting step)", UserWarning, stacklevel=3)
        return True
    shuffled_labels = learner.loss_kind == "ce" and not learner.zero_head  # a zero head adapts to a prototype classifier
    if learner.first_order and shuffled_labels and before - after < BARELY_ADAPTS * before:
        warnings.warn(
            f"the first-order {learner.name} inner loop barely adapts: it lowers the support loss of a first meta-batch only "
            f"{before:.3f} -> {after:.3f} ({100 * (before - after) / before:.1f}%). First order then follows the query gradient "
            "at weights that are almost the meta-parameters, whose labels are shuffled from task to task: no task signal, "
            "and it stays near chance (20-way Omniglot at 1 step of 0.03: 7.7%); take more --inner-steps, a larger "
            "--inner-lr (the MAML paper: 5 steps of 0.1 at 20-way) or --zero-head", UserWarning, stacklevel=3)
        return True
    if learner.first_order:
        cos = first_order_agreement(learner, episode)
        if cos < 0:
            warnings.warn(
                f"at --inner-lr {learner.inner_lr:g} the first-order meta-gradient of a first meta-batch points uphill on the "
                f"MAML objective (cosine {cos:+.2f} with the exact one): the first-order approximation is poor at this step on "
                "this model although the step lowers the support loss, so expect first order to trail second order; train "
                "second order, or try a smaller --inner-lr (transferkit.meta.first_order_agreement measures it)",
                UserWarning, stacklevel=3)
            return True
    return False


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
