"""Unsupervised domain adaptation: the Python entry point.

>>> from transferkit.adapt import AdaptSpec, adapt
>>> result = adapt(source, target, AdaptSpec(method="dann", select_by="im"), target_test=usps_test)
>>> result.model, result.summary["target_test"]["acc"]

Two stages, both through :class:`~transferkit.engine.Trainer`:

1. a source-only model is trained on the labelled source (or given as
   ``source_model``); it is saved as ``<run>/source_model.safetensors``;
2. the chosen method adapts a copy of it with two-stream batches
   ``((xs, ys), xt)`` (ADDA: the adversarial target-encoder stage).

Checkpoints are chosen by an unsupervised validator; target labels are used
only to *report* accuracy (``target_test``), and for selection only behind
``oracle=True``, which is recorded as an upper bound.

Semi-supervised adaptation: ``AdaptSpec(target_labels_per_class=K)`` keeps K
labelled examples of each class of the (labelled) ``target``, drawn with the
run's seed; they join the supervised loss of stage 2 and never choose the
checkpoint (see :mod:`transferkit.adapt.semi`). ``mme`` and ``fixmatch`` need them.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..data import Augment, TensorData, check_labels, random_split
from ..data.streaming import (
    as_tensor_data,
    conform_source,
    endless_pairs,
    evaluate_source,
    pair_sources,
    source_stream,
    take_inputs,
)
from ..data.tensors import endless
from ..engine import RunDir, TrainConfig
from ..engine.distributed import open_run_dir
from ..engine.pipeline import BatchStream, Outcome, summary, train
from ..errors import TransferkitError
from ..models import Classifier, create_model
from ..options import as_dict, check, option
from .methods import ADAPT_METHODS, SourceOnly, create_method
from .schedules import SCHEDULE_KINDS, WeightSchedule
from .semi import (
    WithTargetLabels,
    check_target_labels_given,
    needs_target_labels,
    split_target_labels,
)
from .validators import VALIDATOR_DOCS, VALIDATORS, check_validator, model_outputs

_LABELS_IGNORED_SAID: set[str] = set()


def _says_labels_ignored(name: str) -> bool:
    """Warn once per process and target, and not for a named benchmark dataset (``--target digits``):
    its labels are known to be there and ignoring them is the protocol, not a mistake."""
    from ..data import DATASETS

    named = ":" in name and name.split(":", 1)[0] in DATASETS  # a dataset's name has its split; a file's has none
    if named or name in _LABELS_IGNORED_SAID:
        return False
    _LABELS_IGNORED_SAID.add(name)
    return True


CHEAP_VALIDATORS = ("im", "entropy", "snd", "source-acc")


@dataclass
class AdaptSpec:
    """What to adapt with and how to choose the checkpoint (each field is also a command-line option).

    ``options`` holds the chosen method's own options (its registered config's fields, e.g.
    ``{"relative_threshold": 0.8}`` for ``adamatch``); ``transferkit methods adapt NAME`` lists them.
    """

    method: str = option("dann", "Adaptation method (see `transferkit methods adapt`).")
    select_by: str = option("im", "Unsupervised validator choosing the checkpoint.", choices=VALIDATOR_DOCS)
    oracle: bool = option(False, "Select by target-test accuracy instead (an upper bound, labelled as such).")
    weight: float | None = option(None, "Weight of the transfer term (default: the method's).", min=0)
    weight_schedule: str | None = option(None, "Ramp of the transfer weight (default: dann for DANN/CDAN, else constant).",
                                         choices=SCHEDULE_KINDS)
    source_epochs: int = option(5, "Epochs of source-only training (stage 1).", min=1)
    source_steps: int | None = option(None, "Optimizer steps of source-only training in all (overrides one pass per epoch).", min=1)
    source_lr: float | None = option(None, "Learning rate of stage 1 (default: --lr).", min=0, min_open=True)
    source_steps_per_epoch: int | None = option(None, "Steps per stage-1 epoch (default: one pass).", min=1, hidden=True)
    batch_size: int = option(64, "Batch size of each domain.", min=1)
    val_fraction: float = option(0.1, "Fraction of the source held out for validators.", min=0.01, max=0.5, cli="--source-val")
    val_target_size: int = option(2000, "Target inputs scored by the validator each epoch.", min=10)
    warm_start: bool = option(True, "Adapt from the source model's weights; --cold-start starts from random weights.", flag="--cold-start")
    augment_target: bool = option(False, "Apply the --augment-* transforms to target batches too (default: source only).")
    target_labels_per_class: int | None = option(
        None, "Semi-supervised: keep K labelled examples of each class of --target (seeded) for training; "
        "the rest stays unlabelled. Never used to choose the checkpoint.", min=1)
    options: dict[str, Any] = option({}, "The method's own options.", hidden=True)

    def validate(self) -> None:
        ADAPT_METHODS.entry(self.method).make_config(self.options)
        check_validator(self.select_by)
        check(self)

    def transfer_schedule(self) -> WeightSchedule | None:
        """The transfer term's weight over training; ``None`` keeps the method's default."""
        if self.weight is None and self.weight_schedule is None:
            return None  # the method's default
        default = getattr(ADAPT_METHODS[self.method], "default_schedule", None) or WeightSchedule()
        return WeightSchedule(self.weight_schedule or default.kind, default.weight if self.weight is None else self.weight)


@dataclass
class AdaptResult:
    """The adapted model, the source-only model and what was measured."""

    model: Classifier
    source_model: Classifier
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    source_history: list[dict[str, Any]]


# ----------------------------------------------------------------- data checks
def prepare_domains(
    source: TensorData,
    target: TensorData,
    target_test: TensorData | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    quiet: bool = False,
    keep_target_labels: bool = False,
) -> tuple[TensorData, TensorData, TensorData | None]:
    """Check labels and class sets, drop target labels (with a warning) unless ``keep_target_labels``
    (semi-supervised: :func:`adapt` draws the K per class from them), pair shapes."""
    source.require_labels(f"adaptation from {source.name} (the source must be labelled)")
    if target.y is not None:
        if target.num_classes and target.num_classes != source.num_classes:
            raise TransferkitError(
                f"source {source.name} has {source.num_classes} classes but target {target.name} has "
                f"{target.num_classes}; both domains must share one label set"
            )
        if not keep_target_labels and _says_labels_ignored(target.name):
            msg = (f"labels found in target {target.name} are ignored (unsupervised adaptation); "
                   "pass labelled target data as --target-test to measure accuracy")
            warnings.warn(msg, UserWarning, stacklevel=2)
        if not keep_target_labels:
            target = target.unlabeled()
    if target_test is not None:
        target_test.require_labels("--target-test (it measures accuracy)")
        if target_test.num_classes != source.num_classes:
            raise TransferkitError(
                f"source {source.name} has {source.num_classes} classes but target test {target_test.name} has "
                f"{target_test.num_classes}; both domains must share one label set"
            )
        check_labels(target_test, source.num_classes)
    if not (source.is_image and target.is_image) and source.input_shape != target.input_shape:
        raise TransferkitError(
            f"{source.name} has inputs of shape {source.input_shape} and {target.name} of shape {target.input_shape}; "
            "feature tables must have the same columns (images can be paired with --image-size and --channels)"
        )
    source, target = pair_sources(source, target, image_size, channels)  # type: ignore[assignment]  # either may be a streamed folder
    if target_test is not None:
        if target_test.is_image:
            c, h, _ = target.input_shape
            target_test = conform_source(target_test, h, c)  # type: ignore[assignment]
        if target_test.input_shape != target.input_shape:
            raise TransferkitError(
                f"target test {target_test.name} has inputs of shape {target_test.input_shape} but the target has "
                f"{target.input_shape}"
            )
    return source, target, target_test


# --------------------------------------------------------------------- adapt
def adapt(
    source: TensorData,
    target: TensorData,
    spec: AdaptSpec | None = None,
    config: TrainConfig | None = None,
    model: Classifier | str = "lenet",
    target_test: TensorData | None = None,
    source_model: Classifier | None = None,
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    channels: int | None = None,
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    resume: bool = False,
    bottleneck_dim: int | None = None,
    augment: Augment | None = None,
) -> AdaptResult:
    """Adapt from labelled ``source`` to unlabelled ``target``; see the module docstring.

    ``model`` is an architecture name (``lenet``, ``mlp``, ...) or a ready
    :class:`Classifier`; ``source_model`` skips stage 1. ``config`` drives stage
    2 (and stage 1 except for ``spec.source_epochs`` / ``spec.source_lr``).
    ``augment`` (random shift / scale of whole batches) applies to source
    batches in both stages, and to target batches too when
    ``spec.augment_target`` is set.
    """
    spec = spec or AdaptSpec()
    config = config or TrainConfig()
    spec.validate()
    config.validate()
    check_target_labels_given(spec.method, ADAPT_METHODS[spec.method], spec.target_labels_per_class)
    t_start = time.perf_counter()
    device = torch.device(device) if isinstance(device, str) else device
    labelled: TensorData | None = None
    if spec.target_labels_per_class is not None:
        source.require_labels(f"adaptation from {source.name} (the source must be labelled)")
        labelled, target = split_target_labels(target, spec.target_labels_per_class, source.num_classes, config.seed)
    source, target, target_test = prepare_domains(source, target, target_test, image_size, channels, not verbose)
    if labelled is not None:
        labelled = as_tensor_data(labelled)  # K per class: small enough to hold even from a streamed folder
        if labelled.is_image:
            from ..data import conform

            labelled = conform(labelled, target.input_shape[1], target.input_shape[0])
    train_s, val_s = random_split(source, spec.val_fraction, config.seed)
    g = torch.Generator().manual_seed(config.seed)
    tval_idx = torch.randperm(len(target), generator=g)[: spec.val_target_size]
    train_s, val_s = train_s.to(device), as_tensor_data(val_s).to(device)  # a streamed source's validation split is decoded once
    target_d = target.to(device)
    target_val_x = take_inputs(target_d, tval_idx)
    test_d = target_test.to(device) if target_test is not None else None
    bs = spec.batch_size
    selected = spec.select_by
    to_compute = sorted(set(CHEAP_VALIDATORS) | {selected})

    def validate(m: Any) -> dict[str, Any]:
        out = model_outputs(m.model, target_val_x, val_s)
        assert out.source_correct is not None  # val_s: a non-empty split of the labelled source
        rec: dict[str, Any] = {"acc": float(out.source_correct.float().mean() * 100)}  # source-val accuracy
        for name in to_compute:
            rec[name] = VALIDATORS[name](out)
        if test_d is not None:  # reported, and used for selection only behind oracle
            t_report = time.perf_counter()
            rec["target_test_acc"] = evaluate_source(m.model, test_d, config.eval_batch_size)["acc"]
            rec["report_s"] = time.perf_counter() - t_report  # not part of the method's cost
        return rec

    def score(_m: Any, val: dict[str, Any]) -> float:
        return float(val["target_test_acc"] if spec.oracle else val[selected])

    if spec.oracle and test_d is None:
        raise TransferkitError("--oracle selects by target-test accuracy; give labelled --target-test data")
    select_name = "oracle:target_test_acc" if spec.oracle else selected

    aug = augment if augment is not None and augment.active else None

    source_base = source_stream(train_s, bs, device, drop_last=True)  # (idx, x, y) from a tensor or a streamed folder

    def source_batches(epoch: int, gen: torch.Generator) -> Iterator[Any]:
        for _, x, y in source_base.batches(epoch, gen):
            yield (aug(x, gen) if aug else x), y

    src_stream = BatchStream(source_batches, source_base.steps_per_pass)

    labelled_d = labelled.to(device) if labelled is not None else None

    def two_stream(epoch: int, gen: torch.Generator) -> Iterator[Any]:
        tgt = endless_pairs(target_d, bs, gen, device, train=spec.augment_target)
        few = endless(labelled_d, bs, gen) if labelled_d is not None else None
        for xs, ys in src_stream.forever().batches(epoch, gen):
            xt = next(tgt)[0]
            batch = (xs, ys), (aug(xt, gen) if aug and spec.augment_target else xt)
            if few is None:
                yield batch
            else:  # semi-supervised: a third part, the labelled target (augmented like the source)
                xl, yl = next(few)
                yield (*batch, ((aug(xl, gen) if aug else xl), yl))

    def fit(method: Any, stream: BatchStream, cfg: TrainConfig, folder: RunDir | None, again: bool) -> Outcome:
        return train(method, stream, cfg, validate=validate, score=score, select_name=select_name, run=folder,
                     device=device, verbose=verbose, callbacks=callbacks, resume=again, val_label="source-val acc")

    # ---------------------------------------------------------- stage 1: a chained run of the same pipeline
    source_history: list[dict[str, Any]] = []
    source_path = run.path / "source_model.safetensors" if run is not None else None
    if source_model is None and source_path is not None and resume and source_path.is_file():
        from ..models import load_model

        source_model = load_model(source_path)
    if run is not None:
        run.start()  # the adaptation run starts here (stage 1 writes into it)
    if source_model is None:
        if isinstance(model, str):
            torch.manual_seed(config.seed)  # the initial weights follow the run's seed, from Python as from the CLI
            model = create_model(model, source.num_classes, source.input_shape, bottleneck_dim, classes=source.classes)
        model.to(device)
        if model.num_classes != source.num_classes:
            raise TransferkitError(f"the model has {model.num_classes} classes but source {source.name} has {source.num_classes}")
        cfg1 = replace(config, epochs=spec.source_epochs, lr=spec.source_lr or config.lr, steps=spec.source_steps,
                       steps_per_epoch=spec.source_steps_per_epoch)
        run1 = None
        if run is not None:
            sub = run.path / "source"
            run1 = open_run_dir(sub, resume=resume and (sub / "checkpoints").is_dir(), overwrite=sub.exists() and not resume)
        source_history = fit(SourceOnly(model), src_stream, cfg1, run1, resume).result.history
        source_model = model
    else:
        source_model = source_model.to(device)
        if source_model.num_classes != source.num_classes:
            raise TransferkitError(
                f"the source model has {source_model.num_classes} classes but source {source.name} has {source.num_classes}"
            )
    if source_path is not None and run is not None and run.is_main:
        source_model.save(source_path, {"stage": "source-only", "source": source.name})
    source_metrics = validate(_Wrap(source_model))

    # ---------------------------------------------------------- stage 2
    history: list[dict[str, Any]] = []
    outcome: Outcome | None = None
    if spec.method == "source-only" and labelled is None:
        final = source_model
        sel_epoch = _best_epoch(source_history, select_name if not spec.oracle else "target_test_acc")
        if run is not None and run.is_main:
            final.save(run.path / "model.safetensors", {"stage": "source-only", "best_epoch": sel_epoch})
    else:
        if spec.warm_start or spec.method == "adda":
            net = copy.deepcopy(source_model)
        else:
            net = create_model(source_model.spec["arch"], source.num_classes, source.input_shape,
                               source_model.spec.get("bottleneck_dim"), classes=source.classes,
                               **source_model.spec.get("kwargs", {}))
        method = create_method(spec.method, net, spec.transfer_schedule(), **spec.options)
        if labelled is not None and not needs_target_labels(ADAPT_METHODS[spec.method]):
            method = WithTargetLabels(method)  # its own loss + CE of the labelled target
        outcome = fit(method, BatchStream(two_stream, src_stream.steps_per_pass), config, run, resume)
        history = outcome.result.history
        final = net
        sel_epoch = outcome.result.best_epoch
    final.eval()
    fin = validate(_Wrap(final))
    metrics: dict[str, Any] = {"source_val_acc": fin["acc"]}
    extra: dict[str, Any] = {
        "source": source.name,
        "target": target.name,
        "spec": as_dict(spec),
        "train": as_dict(config),
        "input_shape": list(source.input_shape),
        "source_only": {k: v for k, v in source_metrics.items() if k != "acc"} | {"source_val_acc": source_metrics["acc"]},
        "validators": {k: v for k, v in fin.items() if k not in ("acc", "target_test_acc", "report_s")},
    }
    if labelled is not None:
        extra["target_labels"] = {"per_class": spec.target_labels_per_class, "count": len(labelled), "seed": config.seed,
                                  "use": "training only (supervised loss of stage 2); never checkpoint selection"}
    if test_d is not None:
        extra["target_test"] = evaluate_source(final, test_d, config.eval_batch_size)
        metrics["target_test_acc"] = extra["target_test"]["acc"]
        extra["source_only"]["target_test_acc"] = source_metrics["target_test_acc"]
        if not spec.oracle and history:
            best_oracle = max(history, key=lambda r: r["val"]["target_test_acc"])
            extra["oracle_upper_bound"] = {"epoch": best_oracle["epoch"], "acc": best_oracle["val"]["target_test_acc"],
                                           "note": "best epoch by target-test labels: an upper bound, not a result"}
    out = summary("adapt", spec.method, outcome, metrics, headline="target_test_acc" if test_d is not None else "source_val_acc",
                  **extra)
    out["selection"] = {"by": select_name, "oracle": spec.oracle, "epoch": sel_epoch,
                        "note": "upper bound: chosen with target labels" if spec.oracle else
                        ("no target labels used" if labelled is None else
                         f"no target labels used for selection ({len(labelled)} labelled target examples trained)")}
    out["wall_s"] = time.perf_counter() - t_start
    if run is not None:
        run.write_summary(out)
    return AdaptResult(final, source_model, out, history, source_history)


class _Wrap:
    """Give a bare model the ``.model`` attribute validate() expects of a method."""

    def __init__(self, model: Classifier):
        self.model = model


def _best_epoch(history: list[dict[str, Any]], key: str) -> int | None:
    rows = [r for r in history if "val" in r and key in r["val"]]
    if not rows:
        return None
    return int(max(rows, key=lambda r: r["val"][key])["epoch"])

