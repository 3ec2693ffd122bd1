"""``distill`` (teacher -> student) and ``export`` (TorchScript / ONNX with an equivalence check)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..data import TensorData, check_labels, random_split
from ..distill import (
    FORMATS,
    LOSSES,
    DistillSpec,
    compare,
    distill,
    export_model,
    load_teacher,
    make_student,
    summary_rows,
)
from ..distill.losses import parse_losses
from ..engine import resolve_device
from ..engine.pipeline import summary as run_summary
from ..errors import TransferkitError
from ..models import load_model, parameter_count
from ..options import from_mapping
from .common import (
    architecture_kwargs,
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
from .typed import chosen_options, config_options, method_options


def _spec(p: dict[str, Any]) -> DistillSpec:
    """The distillation spec from the command's options, checked before any run folder exists."""
    losses = parse_losses(list(p.get("losses") or ["kd=1"]))
    spec = from_mapping(DistillSpec, p, losses=losses, options=chosen_options(LOSSES, list(losses), p, "losses"))
    spec.validate()
    return spec


def _data(p: dict[str, Any], shape: list[int], prep: dict[str, Any] | None = None) -> tuple[TensorData, TensorData | None, TensorData | None]:
    """Training set (labelled --data or unlabelled --transfer-data), validation and test sets."""
    if not p.get("data") and not p.get("transfer_data"):
        raise TransferkitError("give the training inputs: --data (labelled) or --transfer-data (unlabelled, teacher labels only)")
    if p.get("data") and p.get("transfer_data"):
        raise TransferkitError("give either --data (labelled) or --transfer-data (unlabelled), not both")
    val = fit_to_model(load(p["val_data"], p, streamable=True), shape, True, prep) if p.get("val_data") else None
    if p.get("transfer_data"):
        train = fit_to_model(load(p["transfer_data"], p, streamable=True), shape, p["quiet"], prep).unlabeled()
    else:
        train = fit_to_model(load(p["data"], p, streamable=True), shape, p["quiet"], prep)
        train.require_labels(f"distilling on --data {p['data']} (use --transfer-data for unlabelled inputs)")
        if val is None and p["val_split"] > 0:
            train, val = random_split(train, p["val_split"], p["seed"])
    test = fit_to_model(load(p["test_data"], p, split="test", streamable=True), shape, True, prep) if p.get("test_data") else None
    return train, val, test


@click.command("distill")
@config_option
@click.option("--teacher", required=True, help="Teacher: a run folder or checkpoint (.safetensors, or a weights-only .pt state dict with --teacher-model).")
@click.option("--teacher-model", default=None, help="Architecture of --teacher, only when it is a plain state dict.")
@click.option("--student", required=True, help="Student architecture (see `transferkit models`), or a run folder/checkpoint to start from.")
@click.option("--student-hidden", default=None, help="mlp student: hidden widths, e.g. 800,800.")
@click.option("--student-dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="mlp/lenet student: dropout.")
@click.option("--data", default=None, help="Labelled training inputs (see `transferkit datasets`).")
@click.option("--transfer-data", default=None, help="Unlabelled transfer set: the teacher's outputs are the only labels.")
@click.option("--val-data", default=None, help="Labelled validation data (default: hold out --val-split of --data).")
@click.option("--val-split", type=click.FloatRange(0, 0.9), default=0.1, show_default=True, help="Fraction of --data held out for validation (0: none).")
@click.option("--test-data", default=None, help="Labelled test data for the teacher-vs-student summary.")
@config_options(DistillSpec, exclude=("options",))
@method_options(LOSSES)
@click.option("--export", "export_formats", multiple=True, type=click.Choice(list(FORMATS)), help="Export the student (repeatable); each export is checked for equivalence.")
@click.option("--export-tolerance", type=click.FloatRange(min=0), default=1e-3, show_default=True, help="Largest allowed absolute logit difference of an export.")
@click.option("--no-latency", is_flag=True, default=False, help="Skip the CPU latency measurement in the summary.")
@data_options
@train_options
@run_options
@pass_params
def distill_cmd(p: dict[str, Any]) -> None:
    """Distil a large teacher into a small student.

    \b
    Example:
      transferkit train --data digits --model mlp --epochs 20 --run-dir runs/teacher
      transferkit distill --teacher runs/teacher --student mlp --student-hidden 32 \\
          --data digits --loss kd=1 --temperature 4 --export torchscript --run-dir runs/student
    """
    p["command"] = "distill"
    spec = _spec(p)
    start(p)
    device = resolve_device(p["device"])
    probe = load(p["data"] or p["transfer_data"], p) if p.get("teacher_model") and (p.get("data") or p.get("transfer_data")) else None
    teacher = load_teacher(p["teacher"], p.get("teacher_model"), probe)
    shape = teacher.spec["input_shape"]
    train, val, test = _data(p, shape, teacher.spec.get("preprocess"))
    kw = architecture_kwargs(p.get("student_hidden"), p.get("student_dropout"))
    try:
        student = make_student(p["student"], teacher, **kw)
    except TypeError as exc:
        raise TransferkitError(f"--student {p['student']} does not take these options: {exc}") from None
    if test is not None:  # checked before training, not after it
        test.require_labels(f"--test-data {test.name}")
        check_labels(test, teacher.num_classes, "give test data with the teacher's classes")
    run = open_run(p, "distill", student)
    outcome = distill(
        teacher, student, train, val, spec, train_config(p), p["batch_size"], augment_from(p), run, device,
        verbose=not p["quiet"], callbacks=callbacks(p), resume=p["resume"],
    )
    if not run.is_main:  # under torchrun only rank 0 measures, exports and writes
        return
    summary = run_summary(
        "distill", "+".join(f"{k}={v:g}" for k, v in spec.losses.items()), outcome, command="distill",
        teacher=str(p["teacher"]), student=p["student"], parameters=parameter_count(student),
        unlabelled_transfer_set=bool(p.get("transfer_data")), teacher_cached=spec.cache_teacher and not augment_from(p).active,
    )
    if "val" in summary:
        summary["val"] = {k: v for k, v in summary["val"].items() if k != "per_class_acc"}
        summary["metrics"]["val_acc"] = summary["val"].get("acc")
    ref = test or val or train
    where = ref.name if ref is test or (ref is val and p.get("val_data")) else (
        f"the validation split of {ref.name}" if ref is val else f"the training inputs {ref.name}")
    from ..data.streaming import bounded_sample, evaluate_source

    ref = bounded_sample(ref)  # a streamed folder: its first 2,000 files
    cmp = compare(teacher.cpu(), student.cpu(), ref.x, ref.y, latency=not p["no_latency"])
    summary["comparison"] = {"data": where, **cmp}
    print(f"teacher vs student on {where} ({cmp['n']} inputs):")
    cols = ["model", "acc", "agree", "params", "size"] + [k for k in summary_rows(cmp)[0] if "ms b" in k]
    print(echo_table(summary_rows(cmp), cols))
    summary["metrics"]["agreement"] = cmp["agreement"]
    if test is not None:
        summary["test"] = {k: v for k, v in evaluate_source(student, test).items() if k != "per_class_acc"}
        summary["metrics"]["test_acc"] = summary["test"]["acc"]
    summary["headline"] = "test_acc" if test is not None else "val_acc"
    exports = []
    try:
        for fmt in p.get("export_formats") or []:
            check = export_model(student, ref.x, Path(run.path) / f"student{FORMATS[fmt]}", fmt, p["export_tolerance"])
            print(check.line())
            exports.append(vars(check))
    finally:
        summary["exports"] = exports
        run.write_summary(summary)
        print(f"run folder: {run.path}")


@click.command("export")
@config_option
@click.option("--model-from", required=True, help="A run folder or checkpoint.")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="torchscript", show_default=True)
@click.option("--data", required=True, help="Real inputs for the equivalence check (labels unused).")
@click.option("--output", required=True, help="File to write (.pt for TorchScript, .onnx for ONNX).")
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-3, show_default=True, help="Largest allowed absolute logit difference.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace --output if it exists.")
@data_options
@pass_params
def export_cmd(p: dict[str, Any]) -> None:
    """Export a model to TorchScript or ONNX and check it against the original on real inputs.

    \b
    Example:
      transferkit export --model-from runs/student --format onnx --data digits --output student.onnx
    """
    out = guard_output(p["output"], p["overwrite"])
    model = load_model(p["model_from"])
    data = fit_to_model(load(p["data"], p, split="test"), model.spec["input_shape"], True, model.spec.get("preprocess"))
    check = export_model(model, data.x, out, p["fmt"], p["tolerance"])
    print(check.line())
    print(f"check saved to {out.with_name(out.name + '.check.json')}", file=sys.stderr)


COMMANDS = [distill_cmd, export_cmd]
