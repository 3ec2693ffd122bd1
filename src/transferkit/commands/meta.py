"""``meta train``, ``meta eval`` and ``few-shot``: meta-learning from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import torch

from ..data import TensorData, load_image_folder, load_images
from ..engine import resolve_device
from ..engine.pipeline import summary as run_summary
from ..errors import TransferkitError
from ..io import write_json, write_predictions
from ..meta import (
    LEARNERS,
    EpisodeSampler,
    MetaSpec,
    SinusoidTasks,
    build_learner,
    few_shot_predict,
    meta_train,
    set_task_mode,
    sinusoid_model,
    split_classes,
)
from ..models import create_model, load_model, parameter_count
from ..options import from_mapping
from .common import (
    augment_from,
    callbacks,
    config_option,
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
from .typed import config_options

SINUSOID = "sinusoid"



def _read_meta(run_dir: str) -> dict[str, Any]:
    from ..io import load_yaml

    path = Path(run_dir) / "meta.yaml"
    if not path.is_file():
        raise TransferkitError(f"{run_dir} is not a meta-learning run folder (no meta.yaml); train one with `transferkit meta train`")
    return load_yaml(path)


def _spec(p: dict[str, Any], loss: str) -> MetaSpec:
    spec = from_mapping(MetaSpec, p, loss=loss)
    spec.validate()
    return spec


def _eval_line(m: dict[str, Any], what: str) -> str:
    if "acc" in m:
        return f"{what}: accuracy {m['acc']:.2f}% ± {m['ci95']:.2f} (95% interval, {m['episodes']} episodes)"
    return f"{what}: MSE {m['mse']:.4f} ± {m['ci95']:.4f} (95% interval, {m['episodes']} episodes)"


@click.group("meta")
def meta_group() -> None:
    """Meta-learning: MAML, first-order MAML, ANIL, Reptile, Prototypical Networks.

    \b
    Example (offline, sklearn digits: 10 classes, 6 for meta-train, 4 for meta-test):
      transferkit meta train --data digits --method protonet --ways 3 --shots 1 \\
          --test-fraction 0.4 --epochs 2 --run-dir runs/meta
      transferkit meta eval --model-from runs/meta --ways 3 --shots 1 --episodes 600
    """


@meta_group.command("train")
@config_option
@click.option("--data", required=True, help="Labelled data whose classes become few-shot tasks (omniglot:small, digits, a folder...), or 'sinusoid' (MAML's regression demo).")
@click.option("--method", type=click.Choice(LEARNERS.names()), default="protonet", show_default=True, help="; ".join(f"{k}: {v}" for k, v in LEARNERS.docs().items()))
@click.option("--model", "arch", default="conv4", show_default=True, help="Architecture (conv4 is the few-shot standard; mlp for feature tables).")
@click.option("--global-pool", is_flag=True, default=False,
              help="conv4: average the last feature map (64 features, the MAML paper's Omniglot network) instead of flattening it "
                   "(256 on 28x28); the head's curvature, and so the largest inner lr that does not overshoot, depends on it.")
@config_options(MetaSpec, exclude=("method", "loss", "episodes_per_epoch", "val_episodes"))
@click.option("--split-by", type=click.Choice(["class", "alphabet"]), default="class", show_default=True, help="Split classes into meta-train/val/test individually, or by group (the part of the class name before '/', e.g. the Omniglot alphabet).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True, help="Fraction of classes (or groups) for meta-validation (model selection).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25, show_default=True, help="Fraction of classes (or groups) held out for meta-testing.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the class split.")
@config_options(MetaSpec, only=("episodes_per_epoch", "val_episodes"))
@click.option("--test-episodes", type=click.IntRange(0), default=600, show_default=True, help="Meta-test episodes after training (0: skip).")
@data_options
@train_options
@run_options
@pass_params
def meta_train_cmd(p: dict[str, Any]) -> None:
    """Meta-train a learner on episodes from the meta-train classes of --data."""
    if p["batch_size"] != 64:  # the shared training option's default
        raise TransferkitError("meta train does not use --batch-size: a step is --meta-batch tasks of --ways x (--shots + --queries) "
                               "examples; set those instead")
    if p["global_pool"] and p["arch"] != "conv4":
        raise TransferkitError(f"--global-pool is a conv4 option; --model {p['arch']} does not take it")
    start(p)
    device = resolve_device(p["device"])
    sinusoid = p["data"] == SINUSOID
    spec = _spec(p, "mse" if sinusoid else "ce")
    split_names: dict[str, list[str]] = {}
    if sinusoid:
        train_s: Any = SinusoidTasks(p["shots"], p["queries"], device=device)
        val_s: Any = SinusoidTasks(p["shots"], p["queries"], device=device) if p["val_fraction"] > 0 else None
        test_s: Any = SinusoidTasks(p["shots"], p["queries"], device=device)
        model = sinusoid_model()
    else:
        data = load(p["data"], p)
        data.require_labels(f"meta-learning on {p['data']}")
        split = split_classes(data.classes, p["val_fraction"], p["test_fraction"], p["split_by"] == "alphabet", p["split_seed"])
        split_names = {k: [data.classes[i] for i in v] for k, v in split.items()}
        data = data.to(device)
        train_s = EpisodeSampler(data, split["train"], p["ways"], p["shots"], p["queries"], p["rotations"])
        val_s = EpisodeSampler(data, split["val"], p["ways"], p["shots"], p["queries"], p["rotations"]) if split["val"] else None
        test_s = EpisodeSampler(data, split["test"], p["ways"], p["shots"], p["queries"], p["rotations"])
        pool = {"global_pool": True} if p["global_pool"] else {}
        model = create_model(p["arch"], p["ways"], data.input_shape, classes=[f"way{i}" for i in range(p["ways"])], **pool)
        if data.preprocess:
            model.spec["preprocess"] = dict(data.preprocess)  # saved with the model; few-shot applies it again
    learner = build_learner(model, spec)
    run = open_run(p, "meta-train", model)
    run.save_yaml("meta.yaml", {"data": p["data"], "spec": spec.to_dict(), "split_by": p["split_by"], "split": split_names})
    if val_s is None and not p["quiet"]:
        print("note: no meta-validation classes (--val-fraction 0): the checkpoint is chosen by training loss; "
              "pass --val-fraction 0.1 to choose it on held-out classes", file=sys.stderr)
    outcome = meta_train(learner, train_s, spec, train_config(p), val_s, run, device, not p["quiet"], callbacks(p), p["resume"],
                         augment_from(p))
    summary = run_summary("meta", spec.method, outcome, command="meta train", meta=spec.to_dict(),
                          parameters=parameter_count(model), classes={k: len(v) for k, v in split_names.items()})
    if "val" in summary:
        summary["metrics"].update({f"val_{k}": v for k, v in summary["val"].items() if k in ("acc", "mse")})
    if p["test_episodes"]:
        m = learner.evaluate(test_s, p["test_episodes"], chunk=spec.meta_batch, seed=p["seed"])
        summary["test"] = m
        summary["metrics"].update({f"test_{k}": v for k, v in m.items() if k in ("acc", "mse", "ci95")})
        summary["headline"] = "test_acc" if "acc" in m else "test_mse"
        print(_eval_line(m, f"meta-test {p['ways']}-way {p['shots']}-shot"))
    run.write_summary(summary)
    print(f"run folder: {run.path}")


@meta_group.command("eval")
@config_option
@click.option("--model-from", required=True, help="A run folder of `transferkit meta train`.")
@click.option("--data", default=None, help="Data to draw test episodes from (default: the training data's meta-test classes).")
@click.option("--classes", "which", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True, help="Which classes of the run's split to draw from (with another --data: all).")
@click.option("--ways", type=click.IntRange(1), default=None, help="N (default: as trained; MAML-family models need the trained N).")
@click.option("--shots", type=click.IntRange(1), default=None, help="K (default: as trained).")
@click.option("--queries", type=click.IntRange(1), default=None, help="Q (default: as trained).")
@click.option("--episodes", type=click.IntRange(1), default=600, show_default=True, help="Test episodes (>= 600 for the usual 95% interval).")
@click.option("--inner-steps", type=click.IntRange(1), default=None, help="Inner steps at test time (default: the run's eval inner steps).")
@click.option("--rotations/--no-rotations", default=None, help="Rotated classes too (default: as trained).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the test episodes.")
@click.option("--output", default=None, help="Also write the result to this JSON file.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace --output if it exists.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@data_options
@pass_params
def meta_eval_cmd(p: dict[str, Any]) -> None:
    """Few-shot accuracy with a 95% confidence interval over many test episodes."""
    info = _read_meta(p["model_from"])
    s = dict(info["spec"])
    for k in ("ways", "shots", "queries"):
        if p[k] is not None:
            s[k] = p[k]
    spec = MetaSpec(**s)
    rotations = spec.rotations if p["rotations"] is None else p["rotations"]
    device = resolve_device(p["device"])
    if info["data"] == SINUSOID:
        model = load_model(p["model_from"])
        sampler: Any = SinusoidTasks(spec.shots, spec.queries, device=device)
        name = SINUSOID
    else:
        model = load_model(p["model_from"])
        data = load(p["data"] or info["data"], p)
        data.require_labels("meta-evaluation")
        if p["data"] is None and p["which"] != "all":
            wanted = set(info["split"].get(p["which"], []))
            if not wanted:
                raise TransferkitError(f"the run has no '{p['which']}' classes; use --classes train/test/all")
            classes = [i for i, c in enumerate(data.classes) if c in wanted]
        else:
            classes = list(range(data.num_classes))
        shape = tuple(model.spec["input_shape"])
        if data.input_shape != shape:
            raise TransferkitError(f"{data.name} has inputs of shape {data.input_shape} but the model expects {shape}; pass --image-size/--channels")
        sampler = EpisodeSampler(data.to(device), classes, spec.ways, spec.shots, spec.queries, rotations)
        name = data.name
    learner = build_learner(model, spec).to(device)
    set_task_mode(learner, spec.tasks_as, device)
    m = learner.evaluate(sampler, p["episodes"], chunk=spec.meta_batch, seed=p["seed"], steps=p["inner_steps"])
    print(_eval_line(m, f"{spec.method} {spec.ways}-way {spec.shots}-shot on {name} ({p['which']} classes)"))
    if p["output"]:
        write_json(guard_output(p["output"], p["overwrite"]), {"data": name, "method": spec.method, "ways": spec.ways, "shots": spec.shots, "queries": spec.queries, **m})


def load_query_images(folder: str | Path, shape: tuple[int, ...], quiet: bool = False) -> tuple[torch.Tensor, list[str]]:
    """Every image under ``folder`` (sorted), converted to ``shape`` (C, H, W); a note when converting."""
    c, h, w = (int(v) for v in shape)
    x, names, converted = load_images(folder, c, (h, w), what="query")
    if converted and not quiet:
        print(f"note: {len(converted)} query image(s) (e.g. {converted[0]}) converted to the model's input {c}x{h}x{w}", file=sys.stderr)
    return x, names


@click.command("few-shot")
@click.option("--model-from", required=True, help="A meta-trained run folder (`transferkit meta train`).")
@click.option("--support", required=True, type=click.Path(file_okay=False), help="Folder of labelled examples: support/<class>/<image>, one to a few per class.")
@click.option("--query", required=True, type=click.Path(file_okay=False), help="Folder of images to classify.")
@click.option("--output", required=True, help="CSV file to write (file, prediction, one probability per class).")
@click.option("--overwrite", is_flag=True, default=False, help="Replace --output if it exists.")
@click.option("--inner-steps", type=click.IntRange(1), default=None, help="Adaptation steps (MAML-family; default: the run's eval inner steps).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, default=False)
@pass_params
def few_shot_cmd(p: dict[str, Any]) -> None:
    """Adapt a meta-trained model to new classes from a few examples each, then label query images.

    \b
    Example:
      transferkit few-shot --model-from runs/meta --support my_support/ --query my_images/ --output preds.csv
    """
    out = guard_output(p["output"], p["overwrite"])
    info = _read_meta(p["model_from"])
    if info["data"] == SINUSOID:
        raise TransferkitError("few-shot labels images; a sinusoid run is a regression demo")
    device = resolve_device(p["device"])
    model = load_model(p["model_from"]).to(device)
    shape = tuple(int(v) for v in model.spec["input_shape"])
    if len(shape) != 3:
        raise TransferkitError("few-shot with image folders needs a model trained on images")
    if not Path(p["support"]).is_dir():
        raise TransferkitError(f"support folder {p['support']} does not exist")
    # support and query go through the same reading and resize (PIL bilinear, straight to the model's size)
    support: TensorData = load_image_folder(p["support"], image_size=shape[1], channels=shape[0], on_bad_file="error")
    prep = model.spec.get("preprocess")
    support = fit_to_model(support, shape, p["quiet"], prep)
    qx, names = load_query_images(p["query"], shape, p["quiet"])
    if (prep or {}).get("invert"):
        qx = 1.0 - qx  # the same pixel transform as the model's training images (fit_to_model)
    spec = MetaSpec(**info["spec"])
    spec.ways = model.num_classes if spec.method != "protonet" else support.num_classes
    learner = build_learner(model, spec).to(device)
    probs = few_shot_predict(learner, support.x.to(device), support.require_labels("few-shot").to(device), qx.to(device), p["inner_steps"]).cpu()
    write_predictions(out, names, probs, support.classes, name_column="file")
    counts = support.class_counts().tolist()
    print(echo_table([{"class": c, "support": n} for c, n in zip(support.classes, counts, strict=True)], ["class", "support"]))
    print(f"wrote {len(names)} predictions to {out}")


COMMANDS = [meta_group, few_shot_cmd]
