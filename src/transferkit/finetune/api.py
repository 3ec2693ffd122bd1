"""Fine-tune a model on a labelled target set: the Python entry point.

>>> from transferkit.finetune import FinetuneSpec, finetune
>>> trainer, result = finetune(model, target_train, target_val, FinetuneSpec(strategy="partial"))  # best weights in model
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from ..data import Augment, TensorData, check_labels, endless
from ..engine import RunDir, TrainConfig, metrics_from_logits, predict_logits
from ..engine.distributed import is_main
from ..engine.evaluate import batched_forward, evaluate
from ..engine.pipeline import BatchStream, Outcome, index_stream
from ..engine.pipeline import train as train_pipeline
from ..errors import TransferkitError
from ..models import Classifier
from ..options import check, option
from .method import FineTune, HeadOnly
from .regularizers import REGULARIZERS, Regularizer
from .strategies import STRATEGIES, apply_strategy


@dataclass
class FinetuneSpec:
    """How to fine-tune: strategy, regularizers and their options (each field is also a command-line option).

    ``options`` holds the chosen regularizers' own options (their registered configs' fields,
    e.g. ``{"l2sp_alpha": 0.1}``); ``transferkit methods finetune`` lists them.
    """

    strategy: str = option("full", "What trains.", choices=STRATEGIES)
    freeze: int | None = option(None, "partial: freeze the first K layer groups (default: half).", min=0)
    trainable: str | None = option(None, "partial: train only parameters whose name matches this regex.")
    lr_decay: float | None = option(None, "Layer-wise learning-rate decay per group from the head down.", min=0, max=1, min_open=True)
    head_lr_mult: float = option(1.0, "Learning-rate multiplier of the head.", min=0, min_open=True)
    new_head: bool = option(False, "Replace the head even when the class count is unchanged.")
    regularizers: list[str] = option([], "Regularizers (repeatable; see `transferkit methods finetune`).", cli="--regularizer", multiple=True)
    label_smoothing: float = option(0.0, "Label smoothing of the target cross-entropy.", min=0, max=1, max_open=True)
    joint_weight: float = option(1.0, "lambda of joint training with --source-data.", min=0)
    cache_features: bool = option(True, "linear-probe: compute backbone features once (off: run the backbone every step).", hidden=True)
    options: dict[str, Any] = option({}, "The regularizers' own options.", hidden=True)

    def validate(self) -> None:
        check(self)
        for r in self.regularizers:
            REGULARIZERS.entry(r)
        known = {n for r in self.regularizers for n in REGULARIZERS.entry(r).options()}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise TransferkitError(
                f"{', '.join(unknown)} is not an option of the chosen regularizers ({', '.join(self.regularizers) or 'none'})"
            )
        if self.strategy == "linear-probe" and self.regularizers:
            raise TransferkitError("regularizers act on the backbone; they do not apply to --strategy linear-probe")

    def build_regularizers(self, model: Classifier, old_head: torch.nn.Linear) -> dict[str, Regularizer]:
        """The chosen regularizers, each with its checked options (defaults for those not given)."""
        out: dict[str, Regularizer] = {}
        for name in self.regularizers:
            entry = REGULARIZERS.entry(name)
            cfg = entry.make_config(self.options, strict=False)
            out[name] = entry.obj.build(model, old_head, **(vars(cfg) if cfg is not None else {}))
        return out


@torch.no_grad()
def frozen_features(model: Classifier, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Backbone (+bottleneck) features in eval mode, computed once."""
    return batched_forward(model, x, batch_size, fn=model.features)


def _names(classes: Any) -> str:
    shown = ", ".join(map(str, list(classes)[:4]))
    return shown + (", ..." if len(classes) > 4 else "")


def finetune(
    model: Classifier,
    train: TensorData,
    val: TensorData | None = None,
    spec: FinetuneSpec | None = None,
    config: TrainConfig | None = None,
    batch_size: int = 64,
    augment: Augment | None = None,
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    source: TensorData | None = None,
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    resume: bool = False,
) -> Outcome:
    """Fine-tune ``model`` on labelled ``train``; validate on ``val``; return the trainer and result.

    The best epoch's weights (by validation accuracy, or train loss without ``val``) are in
    ``model`` at the end, with or without a run folder.
    """
    spec = spec or FinetuneSpec()
    config = config or TrainConfig()
    spec.validate()
    device = torch.device(device) if isinstance(device, str) else device
    train.require_labels("fine-tuning")
    old_head = copy.deepcopy(model.head)
    same_names = list(model.classes) == list(train.classes)
    if spec.new_head or model.num_classes != train.num_classes or not same_names:
        if not spec.new_head and model.num_classes == train.num_classes and is_main():  # said even with --quiet
            print(f"note: new head: the target's classes ({_names(train.classes)}) are not the source model's "
                  f"({_names(model.classes)}); pass target data with the source's class names to keep its head",
                  file=sys.stderr)
        model.replace_head(train.num_classes, train.classes)
    check_labels(train, model.num_classes)
    if val is not None:
        check_labels(val, model.num_classes, "give validation data with the training data's classes")
    apply_strategy(model, spec.strategy, spec.freeze, spec.trainable)
    model.to(device)
    train_d = train.to(device)
    y_train = train_d.require_labels("fine-tuning")  # checked above; narrows the type
    val_d = val.to(device) if val is not None else None
    augment = augment if augment is not None and augment.active else None
    fit = partial(train_pipeline, config=config, run=run, device=device, verbose=verbose, callbacks=callbacks, resume=resume)

    if spec.strategy == "linear-probe" and spec.cache_features and augment is None:
        z_train = frozen_features(model, train_d.x)
        z_val = frozen_features(model, val_d.x) if val_d is not None else None

        def probe_validate(m: Any) -> dict[str, Any]:
            assert val_d is not None and z_val is not None  # passed to fit only with val
            return metrics_from_logits(predict_logits(m.model.head, z_val), val_d.require_labels("validation"), model.num_classes)

        stream = index_stream(len(z_train), batch_size, lambda idx, gen: (z_train[idx], y_train[idx]), device)
        return fit(HeadOnly(model, spec.label_smoothing), stream, validate=probe_validate if val_d is not None else None)

    if spec.strategy == "linear-probe" and verbose:
        why = "random augmentation is on" if augment is not None else "cache_features is off"
        print(f"linear probe: backbone runs every step because {why}")
    old_head = old_head.to(device)
    regularizers = spec.build_regularizers(model, old_head)
    source_head = None
    if source is not None:
        if source.y is None:
            raise TransferkitError("joint training needs a labelled source set")
        source_head = copy.deepcopy(old_head) if old_head.out_features == source.num_classes else torch.nn.Linear(model.feature_dim, source.num_classes)
        source_head.to(device)
    method = FineTune(model, spec.label_smoothing, regularizers, source_head, spec.joint_weight, spec.lr_decay, spec.head_lr_mult)
    recorded: dict[str, torch.Tensor] = {}
    if any(type(r).batch_extras is not Regularizer.batch_extras for r in regularizers.values()):
        z = frozen_features(model, train_d.x)  # responses of the source model on the target inputs: recorded once
        for r in regularizers.values():
            recorded.update(r.batch_extras(z))
    source_d = source.to(device) if source is not None else None
    frozen_bn = spec.strategy == "linear-probe"
    src: dict[str, Any] = {}

    def ft_batch(idx: torch.Tensor, gen: torch.Generator) -> dict[str, Any]:
        x = train_d.x[idx]
        if augment is not None:
            x = augment(x, gen)
        b: dict[str, Any] = {"x": x, "y": y_train[idx], **{k: v[idx] for k, v in recorded.items()}}
        if source_d is not None:
            if src.get("gen") is not gen:  # a new epoch: a new endless source stream from its generator
                src.update(gen=gen, it=endless(source_d, batch_size, gen))
            b["source"] = next(src["it"])
        return b

    inner = index_stream(len(train_d), batch_size, ft_batch, device)

    def ft_batches(epoch: int, gen: torch.Generator) -> Any:
        if frozen_bn:
            model.eval()  # a frozen backbone keeps its batch-norm statistics
        yield from inner.batches(epoch, gen)

    return fit(method, BatchStream(ft_batches, inner.steps_per_pass),
               validate=(lambda m: evaluate(m.model, val_d, config.eval_batch_size)) if val_d is not None else None)
