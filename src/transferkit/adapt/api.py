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
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import torch

from ..data import Augment, TensorData, check_labels, index_batches, pair_shapes, random_split
from ..data.tensors import endless
from ..engine import Callback, RunDir, TrainConfig, Trainer, evaluate
from ..engine.distributed import open_run_dir
from ..errors import TransferkitError, unknown_name
from ..models import Classifier, create_model
from .methods import ADAPT_METHODS, SourceOnly, create_method
from .schedules import SCHEDULE_KINDS, WeightSchedule
from .validators import VALIDATORS, check_validator, model_outputs

CHEAP_VALIDATORS = ("im", "entropy", "snd", "source-acc")


@dataclass
class AdaptSpec:
    """What to adapt with and how to choose the checkpoint."""

    method: str = "dann"
    select_by: str = "im"
    oracle: bool = False
    weight: float | None = None
    schedule: str | None = None
    source_epochs: int = 5
    source_lr: float | None = None
    source_steps_per_epoch: int | None = None
    batch_size: int = 64
    val_fraction: float = 0.1
    val_target_size: int = 2000
    mmd_estimate: str = "unbiased"
    dan_layers: tuple[str, ...] = ("features", "logits")
    hidden: int = 500
    warm_start: bool = True
    augment_target: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in ADAPT_METHODS:
            raise unknown_name("adaptation method", self.method, ADAPT_METHODS)
        check_validator(self.select_by)
        if self.schedule is not None and self.schedule not in SCHEDULE_KINDS:
            raise unknown_name("weight schedule", self.schedule, SCHEDULE_KINDS)
        if not 0 < self.val_fraction < 1:
            raise TransferkitError(f"the source validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.source_epochs < 1:
            raise TransferkitError(f"source epochs must be at least 1, got {self.source_epochs}")
        if self.val_target_size < 10:
            raise TransferkitError(f"the target validation sample must hold at least 10 inputs, got {self.val_target_size}")

    def weight_schedule(self) -> WeightSchedule | None:
        if self.weight is None and self.schedule is None:
            return None  # the method's default
        default = getattr(ADAPT_METHODS[self.method], "default_schedule", None) or WeightSchedule()
        return WeightSchedule(self.schedule or default.kind, default.weight if self.weight is None else self.weight)


@dataclass
class AdaptResult:
    """The adapted model, the source-only model and what was measured."""

    model: Classifier
    source_model: Classifier
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    source_history: list[dict[str, Any]]


class KeepBest(Callback):
    """Hold the weights of the best-scoring epoch in memory (runs with or without a folder)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if record.get("best"):
            self.state = {k: v.detach().clone() for k, v in trainer.method.model.state_dict().items()}


# ----------------------------------------------------------------- data checks
def prepare_domains(
    source: TensorData,
    target: TensorData,
    target_test: TensorData | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    quiet: bool = False,
) -> tuple[TensorData, TensorData, TensorData | None]:
    """Check labels and class sets, drop target labels (with a warning), pair shapes."""
    source.require_labels(f"adaptation from {source.name} (the source must be labelled)")
    if target.y is not None:
        if target.num_classes and target.num_classes != source.num_classes:
            raise TransferkitError(
                f"source {source.name} has {source.num_classes} classes but target {target.name} has "
                f"{target.num_classes}; both domains must share one label set"
            )
        msg = (f"labels found in target {target.name} are ignored (unsupervised adaptation); "
               "pass labelled target data as --target-test to measure accuracy")
        warnings.warn(msg, UserWarning, stacklevel=2)
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
    source, target = pair_shapes(source, target, image_size, channels)
    if target_test is not None:
        if target_test.is_image:
            c, h, _ = target.input_shape
            from ..data import conform

            target_test = conform(target_test, h, c)
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
    t_start = time.perf_counter()
    device = torch.device(device) if isinstance(device, str) else device
    source, target, target_test = prepare_domains(source, target, target_test, image_size, channels, not verbose)
    train_s, val_s = random_split(source, spec.val_fraction, config.seed)
    g = torch.Generator().manual_seed(config.seed)
    tval_idx = torch.randperm(len(target), generator=g)[: spec.val_target_size]
    train_s, val_s = train_s.to(device), val_s.to(device)
    target_d = target.to(device)
    target_val_x = target_d.x[tval_idx.to(device)]
    test_d = target_test.to(device) if target_test is not None else None
    bs = spec.batch_size
    selected = spec.select_by
    to_compute = sorted(set(CHEAP_VALIDATORS) | {selected})

    def validate(m: Any) -> dict[str, Any]:
        out = model_outputs(m.model, target_val_x, val_s)
        rec: dict[str, Any] = {"acc": float(out.source_correct.float().mean() * 100)}  # source-val accuracy
        for name in to_compute:
            rec[name] = VALIDATORS[name](out)
        if test_d is not None:  # reported, and used for selection only behind oracle
            t_report = time.perf_counter()
            rec["target_test_acc"] = evaluate(m.model, test_d, config.eval_batch_size)["acc"]
            rec["report_s"] = time.perf_counter() - t_report  # not part of the method's cost
        return rec

    def score(_m: Any, val: dict[str, Any]) -> float:
        return float(val["target_test_acc"] if spec.oracle else val[selected])

    if spec.oracle and test_d is None:
        raise TransferkitError("--oracle selects by target-test accuracy; give labelled --target-test data")
    select_name = "oracle:target_test_acc" if spec.oracle else selected

    aug = augment if augment is not None and augment.active else None

    def source_batches(epoch: int, gen: torch.Generator) -> Iterator[Any]:
        for idx in index_batches(len(train_s), bs, True, gen, drop_last=len(train_s) > bs, device=device):
            x = train_s.x[idx]
            yield (aug(x, gen) if aug else x), train_s.y[idx]

    def two_stream(epoch: int, gen: torch.Generator) -> Iterator[Any]:
        tgt = endless(target_d, bs, gen)
        for xs, ys in _forever(source_batches, epoch, gen):
            xt = next(tgt)[0]
            yield (xs, ys), (aug(xt, gen) if aug and spec.augment_target else xt)

    steps = max(1, len(train_s) // bs)

    # ---------------------------------------------------------- stage 1
    source_history: list[dict[str, Any]] = []
    source_path = run.path / "source_model.safetensors" if run is not None else None
    if source_model is None and source_path is not None and resume and source_path.is_file():
        from ..models import load_model

        source_model = load_model(source_path)
    if source_model is None:
        if isinstance(model, str):
            arch = model
            model = create_model(arch, source.num_classes, source.input_shape, bottleneck_dim, classes=source.classes)
        model.to(device)
        if model.num_classes != source.num_classes:
            raise TransferkitError(f"the model has {model.num_classes} classes but source {source.name} has {source.num_classes}")
        cfg1 = replace(config, epochs=spec.source_epochs, lr=spec.source_lr or config.lr,
                       steps_per_epoch=spec.source_steps_per_epoch)
        run1 = None
        if run is not None:
            sub = run.path / "source"
            run1 = open_run_dir(sub, resume=resume and (sub / "checkpoints").is_dir(), overwrite=sub.exists() and not resume)
        keep1 = KeepBest()
        # an epoch longer than one pass over the source (source_steps_per_epoch) keeps drawing batches
        stage1 = source_batches if cfg1.steps_per_epoch is None else partial(_forever, source_batches)
        t1 = Trainer(SourceOnly(model), cfg1, stage1, steps, validate=validate, score=score,
                     select_name=select_name, run=run1, device=device,
                     callbacks=[*(callbacks if callbacks is not None else []), keep1], verbose=verbose)
        if run1 is not None and resume and (run1.checkpoints).is_dir():
            t1.resume()
        r1 = t1.fit()
        if keep1.state is not None:
            model.load_state_dict(keep1.state)
        source_history = r1.history
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
    if spec.method == "source-only":
        final = source_model
        sel_epoch = _best_epoch(source_history, select_name if not spec.oracle else "target_test_acc")
    else:
        if spec.warm_start or spec.method == "adda":
            net = copy.deepcopy(source_model)
        else:
            net = create_model(source_model.spec["arch"], source.num_classes, source.input_shape,
                               source_model.spec.get("bottleneck_dim"), classes=source.classes,
                               **source_model.spec.get("kwargs", {}))
        kw: dict[str, Any] = dict(spec.extra)
        if spec.method == "dan":
            kw.setdefault("layers", spec.dan_layers)
            kw.setdefault("estimate", spec.mmd_estimate)
        if spec.method in ("dann", "cdan", "adda"):
            kw.setdefault("hidden", spec.hidden)
        method = create_method(spec.method, net, spec.weight_schedule(), **kw)
        keep = KeepBest()
        trainer = Trainer(method, config, two_stream, steps, validate=validate, score=score, select_name=select_name,
                          run=run, device=device, callbacks=[*(callbacks if callbacks is not None else []), keep],
                          verbose=verbose)
        if resume and run is not None and run.checkpoints.is_dir():
            trainer.resume()
        result = trainer.fit()
        if keep.state is not None:
            net.load_state_dict(keep.state)
        elif run is not None:
            trainer.load_best()
        history = result.history
        final = net
        sel_epoch = result.best_epoch
    final.eval()
    summary: dict[str, Any] = {
        "family": "adapt",
        "method": spec.method,
        "source": source.name,
        "target": target.name,
        "selection": {"by": select_name, "oracle": spec.oracle, "epoch": sel_epoch,
                      "note": "upper bound: chosen with target labels" if spec.oracle else "no target labels used"},
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()},
        "train": {k: v for k, v in asdict(config).items()},
        "input_shape": list(source.input_shape),
        "source_only": {k: v for k, v in source_metrics.items() if k != "acc"} | {"source_val_acc": source_metrics["acc"]},
        "wall_s": time.perf_counter() - t_start,
    }
    fin = validate(_Wrap(final))
    summary["validators"] = {k: v for k, v in fin.items() if k not in ("acc", "target_test_acc")}
    summary["source_val_acc"] = fin["acc"]
    if test_d is not None:
        summary["target_test"] = evaluate(final, test_d, config.eval_batch_size)
        summary["source_only"]["target_test_acc"] = source_metrics["target_test_acc"]
        if not spec.oracle and history:
            best_oracle = max(history, key=lambda r: r["val"]["target_test_acc"])
            summary["oracle_upper_bound"] = {"epoch": best_oracle["epoch"], "acc": best_oracle["val"]["target_test_acc"],
                                             "note": "best epoch by target-test labels: an upper bound, not a result"}
    if run is not None:
        run.write_summary(summary)
    return AdaptResult(final, source_model, summary, history, source_history)


def _forever(batches: Any, epoch: int, gen: torch.Generator) -> Iterator[Any]:
    while True:
        yield from batches(epoch, gen)


class _Wrap:
    """Give a bare model the ``.model`` attribute validate() expects of a method."""

    def __init__(self, model: Classifier):
        self.model = model


def _best_epoch(history: list[dict[str, Any]], key: str) -> int | None:
    rows = [r for r in history if "val" in r and key in r["val"]]
    if not rows:
        return None
    return int(max(rows, key=lambda r: r["val"][key])["epoch"])

