"""``train``, ``finetune``, ``eval``, ``predict``, ``datasets`` and ``models``."""

from __future__ import annotations

import sys
from typing import Any

import click
import torch

from ..adapt.tta import TTA_METHODS, adapt_and_predict, create_tta
from ..data import DATASETS, TensorData, check_classes, check_labels, few_labels, random_split
from ..data.streaming import StreamingFolder, evaluate_source, source_logits
from ..engine import RunDir, predict_logits, resolve_device
from ..engine.pipeline import Outcome
from ..engine.pipeline import summary as run_summary
from ..errors import TransferkitError
from ..finetune import FinetuneSpec, finetune
from ..finetune.regularizers import REGULARIZERS
from ..io import write_json, write_predictions
from ..models import BACKBONE_DOCS, create_model, load_init, load_model, parameter_count
from ..options import from_mapping
from .common import (
    architecture_options,
    augment_from,
    build_model,
    callbacks,
    check_corruption_options,
    compose,
    config_option,
    corrupted,
    corruption_options,
    data_options,
    echo_table,
    fit_to_model,
    guard_output,
    load,
    open_run,
    pass_params,
    run_options,
    start,
    train_config,
    train_options,
)
from .typed import chosen_options, config_options, method_options

split_options = compose(
    click.option("--val-data", default=None, help="Validation data spec (default: hold out --val-split of --data)."),
    click.option("--val-split", type=click.FloatRange(0, 0.9), default=0.1, show_default=True, help="Fraction of --data held out for validation (0: none)."),
    click.option("--test-data", default=None, help="Labelled test data, evaluated once with the best checkpoint."),
    click.option("--labels-per-class", type=click.IntRange(1), default=None, help="Keep only N labelled examples per class of --data (seeded)."),
)


def _splits(p: dict[str, Any], quiet: bool, size_hint: int | None = None) -> tuple[Any, Any, Any]:
    """Training, validation and test data (tensors, or streamed folders: see :mod:`transferkit.data.streaming`)."""
    data = load(p["data"], p, size_hint=size_hint, streamable=True)
    data.require_labels(f"training on {p['data']}")
    check_classes(data, f"training a classifier on {p['data']}")
    val = load(p["val_data"], p, size_hint=size_hint, streamable=True) if p.get("val_data") else None
    if p.get("labels_per_class"):
        # the unused examples are no validation set: their labels are ones we pretend not to have
        data, _ = few_labels(data, p["labels_per_class"], p["seed"])
        if val is None and p["val_split"] > 0 and _given(p, "val_split"):
            data, val = _split_per_class(data, p["val_split"], p["seed"], p["labels_per_class"])
            if not quiet:
                print(f"note: --val-split {p['val_split']:g} holds out {_held(p)} of the {p['labels_per_class']} labelled "
                      "examples per class for validation (the other examples of --data stay unlabelled)", file=sys.stderr)
        elif val is None and not quiet:
            print(f"note: --labels-per-class {p['labels_per_class']} has no validation set (the other examples' labels are "
                  "ones we pretend not to have, so --val-split does not use them): the checkpoint is chosen by training "
                  "loss; pass --val-data, or --val-split explicitly to hold out part of the labelled examples", file=sys.stderr)
    elif val is None and p["val_split"] > 0:
        data, val = random_split(data, p["val_split"], p["seed"])
    test = load(p["test_data"], p, split="test", size_hint=size_hint, streamable=True) if p.get("test_data") else None
    return data, val, test


def _given(p: dict[str, Any], name: str) -> bool:
    """Whether an option was set by the user (command line or --config), not left at its default."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or name not in ctx.params:
        return False
    return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)


def _held(p: dict[str, Any]) -> int:
    return min(p["labels_per_class"] - 1, max(1, round(p["labels_per_class"] * p["val_split"])))


def _split_per_class(data: TensorData, fraction: float, seed: int, per_class: int) -> tuple[TensorData, TensorData]:
    """Hold out ``fraction`` of each class's labelled examples (at least one, never all)."""
    if per_class < 2:
        raise TransferkitError("--val-split with --labels-per-class 1 leaves no example to train on; "
                               "pass --val-data, or drop --val-split (the checkpoint is then chosen by training loss)")
    n_val = min(per_class - 1, max(1, round(per_class * fraction)))
    y = data.require_labels("a validation split")
    g = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for c in range(data.num_classes):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return data.subset(torch.cat(train_idx).sort().values), data.subset(torch.cat(val_idx).sort().values)


def _check_test(test: TensorData | None, model: Any, num_classes: int, quiet: bool) -> TensorData | None:
    """Fit --test-data to the model and check its labels before training (not after)."""
    if test is None:
        return None
    test = fit_to_model(test, model.spec["input_shape"], quiet, model.spec.get("preprocess"))
    test.require_labels(f"--test-data {test.name}")
    y = test.y
    if y is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise TransferkitError(
            f"--test-data {test.name} has labels up to {int(y.max())} but the model predicts {num_classes} classes "
            f"(labels 0..{num_classes - 1}); pass test data with the training data's classes"
        )
    return test


def _finish(p: dict[str, Any], run: RunDir, outcome: Outcome, model: Any, test: TensorData | None, spec: FinetuneSpec) -> dict[str, Any]:
    method = spec.strategy + "".join(f"+{r}" for r in spec.regularizers)
    summary = run_summary(p["command"], method, outcome, command=p["command"], parameters=parameter_count(model))
    if model.spec.get("lora"):
        from ..finetune.lora import adapter_size

        summary["lora"] = {**model.spec["lora"], **adapter_size(model)}
        print(f"LoRA: the run saves {summary['lora']['saved_parameters']:,} parameters ({summary['lora']['saved_bytes']:,} bytes: "
              f"adapters {summary['lora']['adapter_parameters']:,} + head) of {parameter_count(model):,}")
    if "val" in summary:
        summary["metrics"]["val_acc"] = summary["val"].get("acc")
    if test is not None:
        test = fit_to_model(test, model.spec["input_shape"], True, model.spec.get("preprocess"))
        summary["test"] = evaluate_source(model, test.to(outcome.trainer.device))
        summary["metrics"]["test_acc"] = summary["test"]["acc"]
        assert outcome.result.best_epoch is not None  # set by the first epoch (epochs >= 1)
        print(f"test accuracy {summary['test']['acc']:.2f}% on {test.name} (best epoch {outcome.result.best_epoch + 1})")
    summary["headline"] = "test_acc" if test is not None else "val_acc" if "val" in summary else None
    run.write_summary(summary)
    print(f"run folder: {run.path}")
    return summary


def _spec(p: dict[str, Any]) -> FinetuneSpec:
    """The fine-tuning spec from the command's options, checked before any run folder exists."""
    chosen = list(p.get("regularizers") or [])
    for name in chosen:
        REGULARIZERS.entry(name)
    spec = from_mapping(FinetuneSpec, p, options=chosen_options(REGULARIZERS, chosen, p, "regularizers"))
    spec.validate()
    return spec


model_options = compose(
    click.option("--bottleneck-dim", type=click.IntRange(1), default=None, help="Add a bottleneck layer of this width before the head."),
    config_options(FinetuneSpec, only=("label_smoothing",)),
)


@click.command("train")
@config_option
@click.option("--data", required=True, help="Labelled training data: a dataset name (mnist, usps:train, digits, ...), a folder, .npz or .csv.")
@click.option("--model", "arch", default="lenet", show_default=True, help="Architecture (see `transferkit models`).")
@architecture_options
@model_options
@split_options
@data_options
@train_options
@run_options
@pass_params
def train_cmd(p: dict[str, Any]) -> None:
    """Train a model from scratch (e.g. the source model for later transfer).

    \b
    Example:
      transferkit train --data mnist5k --model lenet --epochs 5 --run-dir runs/source
    """
    p["command"] = "train"
    spec = _spec(p)
    start(p)
    data, val, test = _splits(p, p["quiet"])
    device = resolve_device(p["device"])
    model = build_model(p, p["arch"], data.num_classes, data.input_shape, data.classes, data.preprocess)
    test = _check_test(test, model, data.num_classes, p["quiet"])
    run = open_run(p, "train", model)
    outcome = finetune(
        model, data, val, spec, train_config(p), p["batch_size"], augment_from(p), run, device,
        verbose=not p["quiet"], callbacks=callbacks(p), resume=p["resume"],
    )
    _finish(p, run, outcome, model, test, spec)


@click.command("finetune")
@config_option
@click.option("--init", "init", default=None, help="Source model: a run folder or checkpoint (.safetensors, or a weights-only .pt state dict with --model).")
@click.option("--data", required=True, help="Labelled target data (see `transferkit datasets`).")
@click.option("--model", "arch", default=None, help="Architecture when --init is a plain state dict; without --init, a pretrained backbone (efficientnet-lite0, timm:NAME, torchvision:NAME).")
@click.option("--pretrained", "pretrained_path", default=None, help="Without --init: the --model backbone's weights file (.safetensors or a weights-only .pt; default: the backbone's own weights).")
@config_options(FinetuneSpec, exclude=("label_smoothing", "joint_weight", "options"))
@method_options(REGULARIZERS)
@click.option("--source-data", default=None, help="joint: keep training on this labelled source set (loss = L_target + lambda L_source).")
@config_options(FinetuneSpec, only=("joint_weight",))
@model_options
@split_options
@data_options
@train_options
@run_options
@pass_params
def finetune_cmd(p: dict[str, Any]) -> None:
    """Transfer a trained model to a labelled target set.

    \b
    Example:
      transferkit finetune --init runs/source --data digits --labels-per-class 10 \\
          --strategy partial --regularizer l2sp --run-dir runs/ft
      transferkit finetune --model efficientnet-lite0 --data photos/ --image-size 96 --strategy lora
    """
    p["command"] = "finetune"
    spec = _spec(p)
    start(p)
    device = resolve_device(p["device"])
    model = _load_source(p) if p["init"] else None
    data, val, test = _splits(p, p["quiet"], _input_size(model))
    if model is None:
        model = _pretrained_source(p, data)
    data = fit_to_model(data, model.spec["input_shape"], p["quiet"], model.spec.get("preprocess"))
    val = fit_to_model(val, model.spec["input_shape"], True, model.spec.get("preprocess")) if val is not None else None
    source = None
    if p["source_data"]:
        source = fit_to_model(load(p["source_data"], p), model.spec["input_shape"], p["quiet"], model.spec.get("preprocess"))
    test = _check_test(test, model, data.num_classes, True)
    run = open_run(p, "finetune", model, data.num_classes)
    outcome = finetune(
        model, data, val, spec, train_config(p), p["batch_size"], augment_from(p), run, device,
        source=source, verbose=not p["quiet"], callbacks=callbacks(p), resume=p["resume"],
    )
    _finish(p, run, outcome, model, test, spec)


def _pretrained_source(p: dict[str, Any], data: Any) -> Any:
    """``--model NAME`` without ``--init``: a pretrained backbone (its own weights, or ``--pretrained FILE``) and a new head."""
    from ..models import PRETRAINED

    arch = p.get("arch")
    if not arch or not (arch in PRETRAINED or arch.startswith(("timm:", "torchvision:", "hf:"))):
        raise TransferkitError(
            "finetune starts from a model: pass --init RUN_OR_CHECKPOINT, or --model with a pretrained backbone "
            f"({', '.join(sorted(PRETRAINED))}, timm:NAME or torchvision:NAME with --pretrained FILE)"
        )
    model = create_model(arch, data.num_classes, data.input_shape, p.get("bottleneck_dim"),
                         pretrained=p.get("pretrained_path") or True, classes=data.classes)
    if not p["quiet"]:
        if model.spec.get("mean") is not None:
            inputs = f"normalised inside the model (mean {model.spec['mean']}, std {model.spec.get('std')})"
        else:
            inputs = "token ids from the model's tokenizer"
        print(f"pretrained {arch}: weights from {model.spec.get('weights')}; input {tuple(model.spec['input_shape'])}, "
              f"{inputs}", file=sys.stderr)
    return model


def _input_size(model: Any) -> int | None:
    """The model's square input size (``spec["input_size"]``, else its input shape), or None."""
    if model is None:
        return None
    size = model.spec.get("input_size")
    shape = list(model.spec.get("input_shape") or [])
    return int(size) if size else (int(shape[-1]) if len(shape) == 3 else None)


def _load_source(p: dict[str, Any]) -> Any:
    from pathlib import Path

    from ..models import read_checkpoint

    _, info = read_checkpoint(p["init"]) if Path(p["init"]).exists() else (None, None)
    if info is None:
        raise TransferkitError(f"--init {p['init']}: no such run folder or checkpoint file")
    if p.get("pretrained_path"):
        raise TransferkitError("--pretrained gives a --model backbone's weights when there is no --init; drop one of them")
    if info.get("spec"):
        return load_model(p["init"])
    if not p.get("arch"):
        raise TransferkitError(f"--init {p['init']} is a plain state dict; say which architecture it is with --model")
    data = load(p["data"], p, streamable=True)
    model = create_model(p["arch"], data.num_classes, data.input_shape, p.get("bottleneck_dim"))
    load_init(model, p["init"], skip_head=False)
    return model


trained_model_options = compose(
    click.option("--model-from", required=True, help="A run folder or checkpoint."),
    click.option("--overwrite", is_flag=True, default=False, help="Replace --output if it exists."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True),
    data_options,
    corruption_options,
)


def _trained_model_and_data(p: dict[str, Any], labelled: bool = True) -> tuple[Any, Any]:
    """The model and the data fitted to it; a folder is streamed when large (always for ``labelled=False``:
    predict reads a folder in order, one row per file)."""
    check_corruption_options(p)
    model = load_model(p["model_from"]).to(resolve_device(p["device"]))
    data = corrupted(load(p["data"], p, split="test", size_hint=_input_size(model), labelled=labelled, streamable=True), p)
    data = fit_to_model(data, model.spec["input_shape"], False, model.spec.get("preprocess"))
    return model, data.to(next(model.parameters()).device)


@click.command("eval")
@config_option
@click.option("--data", required=True, help="Labelled data to evaluate on.")
@click.option("--output", default=None, help="Also write the metrics to this JSON file.")
@trained_model_options
@pass_params
def eval_cmd(p: dict[str, Any]) -> None:
    """Accuracy, loss and per-class accuracy of a model on labelled data."""
    out = guard_output(p["output"], p["overwrite"]) if p["output"] else None
    model, data = _trained_model_and_data(p)
    check_labels(data, model.num_classes)
    m = evaluate_source(model, data)
    print(f"accuracy {m['acc']:.2f}%  loss {m['loss']:.4f}  n {m['n']}  ({data.name})")
    rows = [{"class": model.classes[c] if c < len(model.classes) else c, "acc": f"{a:.2f}"} for c, a in enumerate(m["per_class_acc"])]
    print(echo_table(rows, ["class", "acc"]))
    if out is not None:
        write_json(out, {"data": data.name, **m})


@click.command("predict")
@config_option
@click.option("--data", required=True, help="Inputs: an image folder, .npz or .csv (labels, if any, are ignored).")
@click.option("--output", required=True, help="CSV file to write.")
@click.option("--adapt", "tta", type=click.Choice(TTA_METHODS.names()), default=None,
              help="Adapt to the inputs while predicting them, in their order: " + "; ".join(f"{k}: {v}" for k, v in TTA_METHODS.docs().items()) + ".")
@method_options(TTA_METHODS)
@click.option("--tta-batch-size", type=click.IntRange(2), default=64, show_default=True, help="Test batch size of --adapt (its statistics and steps are per batch).")
@click.option("--save-adapted", default=None, help="With --adapt: also save the adapted model to this .safetensors file.")
@trained_model_options
@pass_params
def predict_cmd(p: dict[str, Any]) -> None:
    """Write predictions and class probabilities to a CSV (one row per input).

    \b
    With --adapt the model adapts to the inputs as it predicts them (test-time adaptation):
      transferkit predict --model-from runs/src --data shifted/ --adapt tent --output preds.csv
    """
    out = guard_output(p["output"], p["overwrite"])
    saved = guard_output(p["save_adapted"], p["overwrite"]) if p["save_adapted"] else None
    if saved is not None and not p["tta"]:
        raise TransferkitError("--save-adapted saves the model adapted by --adapt; add --adapt adabn or --adapt tent")
    options = chosen_options(TTA_METHODS, [p["tta"]] if p["tta"] else [], p, "--adapt method")
    model, data = _trained_model_and_data(p, labelled=False)
    if isinstance(data, StreamingFolder) and p["tta"]:
        data = data.materialize()  # adapting needs the inputs in order in memory; unreadable files are left out
    if p["tta"]:
        adapter = create_tta(p["tta"], model, **options)
        logits = adapt_and_predict(adapter, data.x, p["tta_batch_size"])
        print(f"adapted with {p['tta']} while predicting ({len(data)} inputs, batches of {p['tta_batch_size']})")
    elif isinstance(data, StreamingFolder):  # a folder: read in order, one row per readable file
        logits, pos = source_logits(model, data)
        names = [data.files[i] for i in pos.tolist()]
    else:
        logits = predict_logits(model, data.x)
    probs = torch.softmax(logits, 1).cpu()
    if isinstance(data, StreamingFolder):
        write_predictions(out, names, probs, model.classes, name_column="file")
    else:
        write_predictions(out, range(len(probs)), probs, model.classes, name_column="index")
    print(f"wrote {len(probs)} predictions to {out}")
    if saved is not None:
        model.eval()
        model.save(saved, {"adapted": {"method": p["tta"], "data": data.name, **options}})
        print(f"adapted model saved to {saved}")


@click.command("datasets")
def datasets_cmd() -> None:
    """List the named datasets (and the sources you can bring)."""
    rows = [{"name": d.name, "shape": d.shape, "splits": ",".join(d.splits), "offline": "yes" if d.offline else "mirror/download", "description": d.description} for d in DATASETS.values()]
    print(echo_table(rows, ["name", "shape", "splits", "offline", "description"]))
    print("\nYour own data: an image folder (<class>/<image>), an .npz with X and y, or a .csv table with a 'label' column.")
    print("Files are looked up in --data-dir, then $TRANSFERKIT_DATA_DIR, then ~/.cache/transferkit.")
    from ..data.corruptions import describe

    print("\nCorruptions of images (eval, predict, adapt --target: --corruption NAME --severity 1-5):")
    print(echo_table(describe(), ["name", "description", "severity 1-5"]))


@click.command("models")
def models_cmd() -> None:
    """List the architectures."""
    rows = [{"name": k, "description": v} for k, v in BACKBONE_DOCS.items()]
    rows += [{"name": "timm:NAME", "description": "any timm model (pip install 'transferkit[vision]')"},
             {"name": "torchvision:NAME", "description": "any torchvision model (pip install 'transferkit[vision]')"}]
    print(echo_table(rows, ["name", "description"]))


COMMANDS = [train_cmd, finetune_cmd, eval_cmd, predict_cmd, datasets_cmd, models_cmd]
