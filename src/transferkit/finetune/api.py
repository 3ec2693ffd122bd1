"""Fine-tune a model on a labelled target set: the Python entry point.

>>> from transferkit.finetune import FinetuneSpec, finetune
>>> trainer, result = finetune(model, target_train, target_val, FinetuneSpec(strategy="partial"))
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import Augment, TensorData, check_labels, endless, index_batches
from ..engine import RunDir, TrainConfig, Trainer, metrics_from_logits, predict_logits
from ..engine.evaluate import evaluate
from ..errors import TransferkitError, unknown_name
from ..models import Classifier
from .method import FineTune, HeadOnly
from .regularizers import BSS, L2SP, REGULARIZERS, LwF
from .strategies import apply_strategy


@dataclass
class FinetuneSpec:
    """How to fine-tune: strategy, regularizers and their weights."""

    strategy: str = "full"
    freeze: int | None = None
    trainable: str | None = None
    lr_decay: float | None = None
    head_lr_mult: float = 1.0
    new_head: bool = False
    regularizers: list[str] = field(default_factory=list)
    l2sp_alpha: float = 0.01
    l2sp_beta: float = 0.01
    lwf_weight: float = 1.0
    lwf_temperature: float = 2.0
    bss_eta: float = 1e-3
    bss_k: int = 1
    label_smoothing: float = 0.0
    joint_weight: float = 1.0
    cache_features: bool = True

    def validate(self) -> None:
        for r in self.regularizers:
            if r not in REGULARIZERS:
                raise unknown_name("regularizer", r, REGULARIZERS)
        if not 0 <= self.label_smoothing < 1:
            raise TransferkitError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
            raise TransferkitError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.strategy == "linear-probe" and self.regularizers:
            raise TransferkitError("regularizers act on the backbone; they do not apply to --strategy linear-probe")


@torch.no_grad()
def frozen_features(model: Classifier, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Backbone (+bottleneck) features in eval mode, computed once."""
    was = model.training
    model.eval()
    out = torch.cat([model.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


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
) -> tuple[Trainer, Any]:
    """Fine-tune ``model`` on labelled ``train``; validate on ``val``; return the trainer and result.

    The best checkpoint (by validation accuracy, or train loss without ``val``)
    is loaded back into ``model`` at the end.
    """
    spec = spec or FinetuneSpec()
    config = config or TrainConfig()
    spec.validate()
    device = torch.device(device) if isinstance(device, str) else device
    train.require_labels("fine-tuning")
    old_head = copy.deepcopy(model.head)
    if spec.new_head or model.num_classes != train.num_classes:
        model.replace_head(train.num_classes, train.classes)
    check_labels(train, model.num_classes)
    if val is not None:
        check_labels(val, model.num_classes)
    apply_strategy(model, spec.strategy, spec.freeze, spec.trainable)
    model.to(device)
    train_d = train.to(device)
    val_d = val.to(device) if val is not None else None
    augment = augment if augment is not None and augment.active else None

    if spec.strategy == "linear-probe" and spec.cache_features and augment is None:
        method: Any = HeadOnly(model, spec.label_smoothing)
        z_train = frozen_features(model, train_d.x)
        z_val = frozen_features(model, val_d.x) if val_d is not None else None

        def probe_batches(epoch: int, gen: torch.Generator) -> Iterator[Any]:
            for idx in index_batches(len(z_train), batch_size, True, gen, device=device):
                yield z_train[idx], train_d.y[idx]

        def probe_validate(m: Any) -> dict[str, Any]:
            return metrics_from_logits(predict_logits(m.model.head, z_val), val_d.y, model.num_classes)

        trainer = Trainer(
            method, config, probe_batches, -(-len(train) // batch_size),
            validate=probe_validate if val_d is not None else None, run=run, device=device,
            verbose=verbose, callbacks=callbacks,
        )
    else:
        if spec.strategy == "linear-probe" and verbose:
            why = "random augmentation is on" if augment is not None else "cache_features is off"
            print(f"linear probe: backbone runs every step because {why}")
        l2sp = L2SP(model, spec.l2sp_alpha, spec.l2sp_beta) if "l2sp" in spec.regularizers else None
        lwf = LwF(old_head.to(device), spec.lwf_weight, spec.lwf_temperature) if "lwf" in spec.regularizers else None
        bss = BSS(spec.bss_eta, spec.bss_k) if "bss" in spec.regularizers else None
        source_head = None
        if source is not None:
            if source.y is None:
                raise TransferkitError("joint training needs a labelled source set")
            source_head = copy.deepcopy(old_head) if old_head.out_features == source.num_classes else torch.nn.Linear(model.feature_dim, source.num_classes)
            source_head.to(device)
        method = FineTune(model, spec.label_smoothing, l2sp, lwf, bss, source_head, spec.joint_weight, spec.lr_decay, spec.head_lr_mult)
        old_logits = None
        if lwf is not None:
            # responses of the source model on the target inputs: recorded once
            z = frozen_features(model, train_d.x)
            with torch.no_grad():
                old_logits = old_head(z)
        source_d = source.to(device) if source is not None else None
        frozen_bn = spec.strategy == "linear-probe"

        def ft_batches(epoch: int, gen: torch.Generator) -> Iterator[dict[str, Any]]:
            src = endless(source_d, batch_size, gen) if source_d is not None else None
            if frozen_bn:
                model.eval()  # a frozen backbone keeps its batch-norm statistics
            for idx in index_batches(len(train_d), batch_size, True, gen, device=device):
                x = train_d.x[idx]
                if augment is not None:
                    x = augment(x, gen)
                b: dict[str, Any] = {"x": x, "y": train_d.y[idx]}
                if old_logits is not None:
                    b["old_logits"] = old_logits[idx]
                if src is not None:
                    b["source"] = next(src)
                yield b

        trainer = Trainer(
            method, config, ft_batches, -(-len(train) // batch_size),
            validate=(lambda m: evaluate(m.model, val_d, config.eval_batch_size)) if val_d is not None else None,
            run=run, device=device, verbose=verbose, callbacks=callbacks,
        )
    if resume:
        trainer.resume()
    result = trainer.fit()
    trainer.load_best()
    return trainer, result
