"""``transferkit adapt``: unsupervised domain adaptation from the command line."""

from __future__ import annotations

import sys
from typing import Any

import click
import numpy as np
import torch

from ..adapt import (
    ADAPT_METHODS,
    METHOD_DOCS,
    SHALLOW_METHODS,
    AdaptSpec,
    adapt,
    create_shallow,
)
from ..adapt.api import prepare_domains
from ..adapt.semi import check_target_labels_given
from ..adapt.shallow import CLASSIFIERS, ShallowConfig
from ..adapt.shot import SOURCE_FREE_METHODS, SOURCE_FREE_VALIDATORS, ShotConfig, adapt_source_free
from ..data import check_classes
from ..engine import resolve_device
from ..engine.pipeline import summary as run_summary
from ..errors import TransferkitError, unknown_name
from ..options import check, from_mapping
from .common import (
    architecture_options,
    augment_from,
    build_model,
    callbacks,
    check_corruption_options,
    config_option,
    corrupted,
    corruption_options,
    data_options,
    echo_table,
    fit_to_model,
    load,
    open_run,
    pass_params,
    run_options,
    start,
    train_config,
    train_options,
)
from .typed import chosen_options, config_options, method_options

ALL_METHODS = {**METHOD_DOCS, **{k: f"shallow: {v}" for k, v in SHALLOW_METHODS.items()}, **SOURCE_FREE_METHODS.docs()}


def _method_help() -> str:
    deep = ", ".join(ADAPT_METHODS)
    shallow = ", ".join(SHALLOW_METHODS)
    free = ", ".join(SOURCE_FREE_METHODS)
    return (f"Deep: {deep}. Shallow (sklearn, on inputs or --features-from): {shallow}. "
            f"Source-free (a trained model as --init, no --source): {free}.")


@click.command("adapt")
@config_option
@click.option("--method", required=True, help=_method_help())
@click.option("--source", default=None, help="Labelled source data (dataset name, folder, .npz or .csv); not with source-free methods.")
@click.option("--target", required=True, help="Unlabelled target data (labels, if present, are ignored with a warning, "
              "except the K per class kept by --target-labels-per-class).")
@click.option("--target-test", default=None, help="Labelled target data used only to report accuracy (never for selection unless --oracle).")
@click.option("--model", "arch", default="auto", show_default=True, help="Architecture; auto = lenet for images, mlp for feature tables.")
@click.option("--bottleneck-dim", type=click.IntRange(1), default=None, help="Add a bottleneck layer of this width before the head.")
@architecture_options
@click.option("--init", default=None, help="Use this trained source model (run folder or .safetensors) and skip source training.")
@click.option("--features-from", default=None, help="Shallow methods: work on the features of this trained network (run folder or .safetensors).")
@config_options(AdaptSpec, exclude=("method", "batch_size", "options"))
@method_options(ADAPT_METHODS)
@config_options(ShotConfig, only=("beta", "im_weight"))
@click.option("--classifier", type=click.Choice(list(CLASSIFIERS)), default="logreg", show_default=True,
              help="Shallow: the classifier fitted on the aligned source features. " + "; ".join(f"{k}: {v}" for k, v in CLASSIFIERS.items()) + ".")
@config_options(ShallowConfig)
@data_options
@corruption_options
@train_options
@run_options
@pass_params
def adapt_cmd(p: dict[str, Any]) -> None:
    """Adapt a model from a labelled source domain to an unlabelled target domain.

    \b
    Examples:
      transferkit adapt --method dann --source mnist5k --target digits --target-test digits:test \\
          --image-size 16 --epochs 5 --run-dir runs/dann
      transferkit adapt --method coral --source mnist5k --target digits --target-test digits:test \\
          --features-from runs/dann --image-size 16 --run-dir runs/coral
      transferkit adapt --method mme --target-labels-per-class 3 --source mnist5k --target digits \\
          --target-test digits:test --image-size 16 --epochs 5 --run-dir runs/mme
    """
    _adapt(p)


def _adapt(p: dict[str, Any]) -> None:
    p["command"] = "adapt"
    method = p["method"]
    if method not in ADAPT_METHODS and method not in SHALLOW_METHODS and method not in SOURCE_FREE_METHODS:
        raise unknown_name("adaptation method", method, ALL_METHODS)
    check_corruption_options(p)
    if p.get("target_labels_per_class") is not None and method not in ADAPT_METHODS:
        raise TransferkitError(f"--target-labels-per-class trains deep methods with a few target labels; --method {method} "
                               f"does not take them (deep methods: {', '.join(ADAPT_METHODS)})")
    if method in SOURCE_FREE_METHODS:
        _source_free(p)
        return
    for name in ("beta", "im_weight"):
        if ctx_given(name):
            raise TransferkitError(f"--{name.replace('_', '-')} is an option of {', '.join(SOURCE_FREE_METHODS)}, not of {method}")
    if not p["source"]:
        raise TransferkitError(f"--method {method} learns from labelled source data: give it with --source "
                               f"(or adapt a trained model without source data: --method {', '.join(SOURCE_FREE_METHODS)} --init RUN)")
    if method in ADAPT_METHODS:
        _spec(p)  # refuse a bad or another method's option before any work
        check_target_labels_given(method, ADAPT_METHODS[method], p.get("target_labels_per_class"))
    start(p)
    channels = int(p["channels"]) if p.get("channels") else None
    deep = method in ADAPT_METHODS and p.get("target_labels_per_class") is None  # these take streamed folders too
    source = load(p["source"], {**p, "image_size": None, "channels": None}, streamable=deep)
    check_classes(source, f"adaptation (the labelled source {p['source']} trains the classifier)")
    target = corrupted(load(p["target"], {**p, "image_size": None, "channels": None}, streamable=deep), p)
    test = corrupted(load(p["target_test"], {**p, "image_size": None, "channels": None}, split="test", streamable=deep), p) if p["target_test"] else None
    if method in SHALLOW_METHODS:
        _shallow(p, source, target, test, channels)
        return
    if p["features_from"]:
        raise TransferkitError("--features-from is for shallow methods; to start a deep method from a trained source model use --init")
    source, target, test = prepare_domains(source, target, test, p["image_size"], channels, p["quiet"],
                                           keep_target_labels=p.get("target_labels_per_class") is not None)
    source_model = None
    if p["init"]:
        from ..models import load_model

        source_model = load_model(_model_path(p["init"]))
        shape, prep = source_model.spec["input_shape"], source_model.spec.get("preprocess")
        source, target = fit_to_model(source, shape, p["quiet"], prep), fit_to_model(target, shape, True, prep)
        test = fit_to_model(test, shape, True, prep) if test is not None else None
    arch = p["arch"] if p["arch"] != "auto" else ("lenet" if source.is_image else "mlp")
    spec = _spec(p)
    model = (build_model(p, arch, source.num_classes, source.input_shape, source.classes, source.preprocess)
             if source_model is None else arch)
    run = open_run(p, "adapt", model if source_model is None else None)
    device = resolve_device(p["device"])
    res = adapt(source, target, spec, train_config(p), model, test, source_model, run, device,
                verbose=not p["quiet"], callbacks=callbacks(p), resume=p["resume"], augment=augment_from(p))
    s = res.summary
    sel = s["selection"]
    epoch = "-" if sel["epoch"] is None else sel["epoch"] + 1
    print(f"{method}: {source.name} -> {target.name}; checkpoint of epoch {epoch} chosen by {sel['by']}"
          + (" (ORACLE: target labels used; an upper bound)" if sel["oracle"] else ""))
    if "target_test" in s:
        rows = [{"model": "source-only", "target-test acc": f"{s['source_only']['target_test_acc']:.2f}"},
                {"model": f"{method} ({'oracle' if sel['oracle'] else sel['by']})", "target-test acc": f"{s['target_test']['acc']:.2f}"}]
        if "oracle_upper_bound" in s:
            rows.append({"model": f"{method} (oracle upper bound)", "target-test acc": f"{s['oracle_upper_bound']['acc']:.2f}"})
        print(echo_table(rows, ["model", "target-test acc"]))
    print(f"run folder: {run.path}")


def ctx_given(name: str) -> bool:
    """Whether option ``name`` was given on the command line or in the config (not its default)."""
    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)


def _source_free(p: dict[str, Any]) -> None:
    """``--method shot``: a trained model (--init) adapts to the unlabelled --target alone."""
    from ..models import load_model

    method = p["method"]
    if p["source"]:
        raise TransferkitError(f"--method {method} adapts without source data; drop --source (the trained model is --init)")
    if not p["init"]:
        raise TransferkitError(f"--method {method} adapts a trained model: give it as --init RUN (a run folder or .safetensors)")
    if p["oracle"] or p["select_by"] not in SOURCE_FREE_VALIDATORS:
        raise TransferkitError(f"--method {method} chooses its checkpoint without source data or target labels: "
                               f"--select-by {', '.join(SOURCE_FREE_VALIDATORS)} (no --oracle)")
    start(p)
    model = load_model(_model_path(p["init"]))
    shape, prep = model.spec["input_shape"], model.spec.get("preprocess")
    target = fit_to_model(corrupted(load(p["target"], {**p, "image_size": None, "channels": None}), p), shape, p["quiet"], prep)
    test = None
    if p["target_test"]:
        test = fit_to_model(corrupted(load(p["target_test"], {**p, "image_size": None, "channels": None}, split="test"), p), shape, True, prep)
    spec = check(from_mapping(ShotConfig, p))
    run = open_run(p, "adapt", model)
    res = adapt_source_free(model, target, spec, train_config(p), test, run, resolve_device(p["device"]),
                            verbose=not p["quiet"], callbacks=callbacks(p), resume=p["resume"])
    s = res.summary
    print(f"{method}: {model.spec.get('arch')} -> {target.name} without source data; checkpoint of epoch "
          f"{(s['selection']['epoch'] or 0) + 1} chosen by {s['selection']['by']}")
    if test is not None:
        print(echo_table([{"model": "trained model", "target-test acc": f"{s['metrics']['source_model_target_test_acc']:.2f}"},
                          {"model": f"{method} ({s['selection']['by']})", "target-test acc": f"{s['metrics']['target_test_acc']:.2f}"}],
                         ["model", "target-test acc"]))
    print(f"run folder: {run.path}")


def _spec(p: dict[str, Any]) -> AdaptSpec:
    """The adaptation spec from the command's options (the method's own options checked)."""
    spec = from_mapping(AdaptSpec, p, options=chosen_options(ADAPT_METHODS, [p["method"]], p, "method"))
    spec.validate()
    return spec


def _model_path(path: str) -> str:
    """A run folder, a .safetensors file, or a source-only adapt run (its source_model.safetensors)."""
    from pathlib import Path

    folder = Path(path)
    if folder.is_dir() and not (folder / "checkpoints").is_dir() and (folder / "source_model.safetensors").is_file():
        return str(folder / "source_model.safetensors")
    return path


def _as_table(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().flatten(1).numpy()


def _shallow(p: dict[str, Any], source: Any, target: Any, test: Any, channels: int | None) -> None:
    if p["oracle"]:
        raise TransferkitError("--oracle applies to deep methods (checkpoint selection); shallow methods have no checkpoints")
    if p["features_from"]:
        from ..finetune.api import frozen_features
        from ..models import load_model

        net = load_model(_model_path(p["features_from"]))
        shape, prep = net.spec["input_shape"], net.spec.get("preprocess")
        source, target, test = prepare_domains(source, target, test, shape[-1] if len(shape) == 3 else None,
                                               shape[0] if len(shape) == 3 else None, p["quiet"])
        source, target = fit_to_model(source, shape, True, prep), fit_to_model(target, shape, True, prep)
        test = fit_to_model(test, shape, True, prep) if test is not None else None

        def feats(d: Any) -> np.ndarray:
            return _as_table(frozen_features(net, d.x))
    else:
        source, target, test = prepare_domains(source, target, test, p["image_size"], channels, p["quiet"])

        def feats(d: Any) -> np.ndarray:
            return _as_table(d.x)

    if p["method"].startswith("iw-"):  # refuse a classifier without sample_weight before a run folder exists
        from sklearn.utils.validation import has_fit_parameter

        from ..adapt.shallow import make_classifier

        if not has_fit_parameter(make_classifier(p["classifier"]), "sample_weight"):
            raise TransferkitError(f"--method {p['method']} weights source examples, but --classifier {p['classifier']} "
                                   "does not accept sample_weight; use --classifier logreg or linear-svm")
    run = open_run(p, "adapt")
    xs, ys, xt = feats(source), source.y.numpy(), feats(target)
    summary = run_summary("adapt", p["method"], None, source=source.name, target=target.name, kind="shallow",
                          features_from=p["features_from"], classifier=p["classifier"],
                          selection={"by": "none (no checkpoints)", "oracle": False, "epoch": None})
    rows = []
    for name in dict.fromkeys(["none", p["method"]]):
        clf = create_shallow(name, estimator=p["classifier"], **vars(from_mapping(ShallowConfig, p))).fit(xs, ys, xt)
        ess = getattr(clf, "effective_sample_size_", None)
        if ess is not None:  # how many source rows the importance weights amount to
            summary["effective_sample_size"] = {"value": ess, "source_rows": len(xs)}
            print(f"importance weights: effective sample size {ess:.0f} of {len(xs)} source rows ({100 * ess / len(xs):.0f}%)")
        if test is not None:
            acc = float((clf.predict(feats(test)) == test.y.numpy()).mean() * 100)
            key = "source_only" if name == "none" else "target_test"
            summary[key] = {"acc": acc} if key == "target_test" else {"target_test_acc": acc}
            summary["metrics"]["target_test_acc" if key == "target_test" else "source_only_target_test_acc"] = acc
            summary["headline"] = "target_test_acc"
            rows.append({"model": "source-only (no adaptation)" if name == "none" else name, "target-test acc": f"{acc:.2f}"})
    run.write_summary(summary)
    if rows:
        print(echo_table(rows, ["model", "target-test acc"]))
    print(f"run folder: {run.path}", file=sys.stdout)


COMMANDS = [adapt_cmd]
