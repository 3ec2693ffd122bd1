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

from ..data import Augment, check_labels
from ..data.streaming import (
    Source,
    StreamingFolder,
    cached_features,
    endless_pairs,
    evaluate_source,
    source_outputs,
    source_stream,
)
from ..engine import RunDir, TrainConfig, metrics_from_logits, predict_logits
from ..engine.distributed import is_main
from ..engine.evaluate import batched_forward
from ..engine.pipeline import BatchStream, Outcome, index_stream
from ..engine.pipeline import train as train_pipeline
from ..errors import TransferkitError
from ..models import Classifier
from ..options import check, option
from .lora import freeze_batchnorm
from .method import FineTune, HeadOnly
from .regularizers import REGULARIZERS, Regularizer
from .strategies import STRATEGIES, apply_strategy, lora_options


@dataclass
class FinetuneSpec:
    """How to fine-tune: strategy, regularizers and their options (each field is also a command-line option).

    ``options`` holds the chosen regularizers' own options (their registered configs' fields,
    e.g. ``{"l2sp_alpha": 0.1}``); ``transferkit methods finetune`` lists them.
    """

    strategy: str = option("full", "What trains.", choices=STRATEGIES)
    freeze: int | None = option(None, "partial: freeze the first K layer groups (default: half).", min=0)
    trainable: str | None = option(None, "partial: train only parameters whose name matches this regex.")
    lora_rank: int = option(8, "lora: rank r of each adapter.", min=1)
    lora_alpha: float = option(16.0, "lora: scale alpha (the update is alpha/r * B A).", min=0, min_open=True)
    lora_dropout: float = option(0.0, "lora: dropout on the adapters' input.", min=0, max=1, max_open=True)
    lora_targets: str | None = option(None, "lora: comma-separated layer names (or regexes) to adapt (default: per backbone family).")
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


def probe_features(model: Classifier, data: Source, batch_size: int = 1024, verbose: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frozen features and labels of every readable example, computed once.

    A tensor source runs the backbone over ``data.x``; a streamed folder reads its features from
    the on-disk cache (:func:`~transferkit.data.streaming.cached_features`: memory-mapped, reused
    across epochs and runs, computed with the evaluation transform).
    """
    if isinstance(data, StreamingFolder):
        z, pos = cached_features(model, data, min(batch_size, 256), verbose)
        y = data.y
        return z, (y[pos].to(z.device) if y is not None else None)
    return frozen_features(model, data.x, batch_size), data.y


def features_by_position(model: Classifier, data: Source) -> torch.Tensor:
    """Frozen features of every example by its position (zeros for an unreadable file of a streamed folder)."""
    if not isinstance(data, StreamingFolder):
        return frozen_features(model, data.x)
    z, pos = source_outputs(model, data, 256, fn=model.features)
    full = torch.zeros(len(data), *z.shape[1:], dtype=z.dtype, device=z.device)
    full[pos.to(z.device)] = z
    return full


def _names(classes: Any) -> str:
    shown = ", ".join(map(str, list(classes)[:4]))
    return shown + (", ..." if len(classes) > 4 else "")


def finetune(
    model: Classifier,
    train: Source,
    val: Source | None = None,
    spec: FinetuneSpec | None = None,
    config: TrainConfig | None = None,
    batch_size: int = 64,
    augment: Augment | None = None,
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    source: Source | None = None,
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    resume: bool = False,
) -> Outcome:
    """Fine-tune ``model`` on labelled ``train``; validate on ``val``; return the trainer and result.

    The best epoch's weights (by validation accuracy, or train loss without ``val``) are in
    ``model`` at the end, with or without a run folder. ``train``, ``val`` and ``source`` are
    tensors or streamed image folders (:mod:`transferkit.data.streaming`); a streamed folder's
    batches come from its workers (random-resized crop and flip for training), and the linear
    probe reads its features from the on-disk feature cache.
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
    check_labels(train, model.num_classes)  # type: ignore[arg-type]  # reads .y and .name of either source
    if val is not None:
        check_labels(val, model.num_classes, "give validation data with the training data's classes")  # type: ignore[arg-type]
    apply_strategy(model, spec.strategy, spec.freeze, spec.trainable,
                   lora_options(spec.lora_rank, spec.lora_alpha, spec.lora_dropout, spec.lora_targets))
    model.to(device)
    train_d = train.to(device)
    train_d.require_labels("fine-tuning")  # checked above
    val_d = val.to(device) if val is not None else None
    augment = augment if augment is not None and augment.active else None
    fit = partial(train_pipeline, config=config, run=run, device=device, verbose=verbose, callbacks=callbacks, resume=resume)

    if spec.strategy == "linear-probe" and spec.cache_features and augment is None:
        z_train, yz_train = probe_features(model, train_d, verbose=verbose)
        z_val, yz_val = probe_features(model, val_d) if val_d is not None else (None, None)
        assert yz_train is not None  # train is labelled (checked above)

        def probe_validate(m: Any) -> dict[str, Any]:
            assert z_val is not None and yz_val is not None  # passed to fit only with labelled val
            return metrics_from_logits(predict_logits(m.model.head, z_val), yz_val, model.num_classes)

        stream = index_stream(len(z_train), batch_size, lambda idx, gen: (z_train[idx], yz_train[idx]), device)
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
        z = features_by_position(model, train_d)  # responses of the source model on the target inputs: recorded once
        for r in regularizers.values():
            recorded.update(r.batch_extras(z))
    source_d = source.to(device) if source is not None else None
    frozen_bn = spec.strategy == "linear-probe"
    src: dict[str, Any] = {}

    inner = source_stream(train_d, batch_size, device)  # (idx, x, y): index slices of a tensor, or a streamed folder

    def ft_batches(epoch: int, gen: torch.Generator) -> Any:
        if frozen_bn:
            model.eval()  # a frozen backbone keeps its batch-norm statistics
        elif spec.strategy == "lora":
            freeze_batchnorm(model.backbone)  # the frozen base keeps its batch-norm statistics (only adapters are saved)
        for idx, x, y in inner.batches(epoch, gen):
            if augment is not None:
                x = augment(x, gen)
            b: dict[str, Any] = {"x": x, "y": y, **{k: v[idx] for k, v in recorded.items()}}
            if source_d is not None:
                if src.get("gen") is not gen:  # a new epoch: a new endless source stream from its generator
                    src.update(gen=gen, it=endless_pairs(source_d, batch_size, gen, device))
                b["source"] = next(src["it"])
            yield b

    return fit(method, BatchStream(ft_batches, inner.steps_per_pass),
               validate=(lambda m: evaluate_source(m.model, val_d, config.eval_batch_size)) if val_d is not None else None)
