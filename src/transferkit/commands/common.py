"""Shared pieces of the command line: options, YAML configs, data and run set-up.

Every option can also come from ``--config FILE.yaml`` (keys are option names
with ``-`` or ``_``); an option given on the command line wins. The resolved
options are saved as ``config.yaml`` in the run folder.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..data import Augment, TensorData, conform, load_data
from ..engine import ProgressBar, RunDir, TrainConfig, seed_everything
from ..engine.loop import OPTIMIZERS, SCHEDULES
from ..errors import TransferkitError
from ..io import load_yaml


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if not value:
        return value
    data = load_yaml(value)
    names = {p.name: p for p in ctx.command.params if p.name}
    for prm in list(names.values()):  # option spellings too: `model:` for --model (stored as `arch`)
        for opt in getattr(prm, "opts", []):
            if opt.startswith("--"):
                names.setdefault(opt[2:].replace("-", "_"), prm)
    resolved: dict[str, Any] = {}
    for key, v in data.items():
        name = str(key).replace("-", "_")
        if name not in names or name == "config":
            known = ", ".join(sorted(n.replace("_", "-") for n in names if n != "config"))
            raise click.BadParameter(f"unknown key '{key}' in {value}; known keys: {known}", ctx=ctx, param=_param)
        param = names[name]
        name = param.name or name
        if isinstance(param, click.Option) and param.multiple and not isinstance(v, list):
            v = [v]
        if isinstance(param, click.Option) and param.is_flag and not isinstance(v, bool):
            raise click.BadParameter(f"'{key}' in {value} must be true or false, got {v!r}", ctx=ctx, param=_param)
        try:
            if isinstance(param, click.Option) and param.multiple:
                resolved[name] = [param.type.convert(item, param, ctx) for item in v]
            elif v is not None:
                resolved[name] = param.type.convert(v, param, ctx)
            else:
                resolved[name] = None
        except click.BadParameter as exc:
            raise click.BadParameter(f"'{key}' in {value}: {exc.message}", ctx=ctx, param=_param) from None
    ctx.default_map = {**(ctx.default_map or {}), **resolved}
    return value


config_option = click.option(
    "--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True, expose_value=True,
    help="YAML file of options (command-line options override it).",
)


def compose(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return deco


data_options = compose(
    click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder searched first for dataset files (then $TRANSFERKIT_DATA_DIR, then the cache)."),
    click.option("--image-size", type=click.IntRange(4, 1024), default=None, help="Resize images to SIZE x SIZE."),
    click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Convert images to 1 (grey) or 3 (RGB) channels."),
    click.option("--on-bad-file", type=click.Choice(["skip", "error"]), default="skip", show_default=True, help="Unreadable files in an image folder: skip with a warning, or stop."),
)

train_options = compose(
    click.option("--epochs", type=click.IntRange(1), default=10, show_default=True),
    click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Learning rate."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True),
    click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum."),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True),
    click.option("--schedule", type=click.Choice(SCHEDULES), default="none", show_default=True, help="Learning-rate schedule."),
    click.option("--warmup-epochs", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Linear warm-up length."),
    click.option("--step-epochs", type=click.IntRange(1), default=30, show_default=True, help="Epochs between decays with --schedule step."),
    click.option("--gamma", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Decay factor for --schedule step."),
    click.option("--patience", type=click.IntRange(1), default=None, help="Stop after this many epochs without improvement."),
    click.option("--grad-clip", type=click.FloatRange(min=0, min_open=True), default=None, help="Clip the gradient norm."),
    click.option("--augment-shift", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Random translation of up to N pixels."),
    click.option("--augment-flip", is_flag=True, default=False, help="Random horizontal flips."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--deterministic", is_flag=True, default=False, help="Use deterministic kernels (slower on GPU)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True),
    click.option("--amp", is_flag=True, default=False, help="bfloat16 mixed precision (CUDA only; ignored elsewhere)."),
)

run_options = compose(
    click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<command>-<time>)."),
    click.option("--resume", is_flag=True, default=False, help="Continue the run in --run-dir from its last checkpoint."),
    click.option("--overwrite", is_flag=True, default=False, help="Replace an existing run folder."),
    click.option("--quiet", is_flag=True, default=False, help="No progress bar or per-epoch lines."),
)


def train_config(p: dict[str, Any]) -> TrainConfig:
    return TrainConfig(
        epochs=p["epochs"], lr=p["lr"], optimizer=p["optimizer"], momentum=p["momentum"],
        weight_decay=p["weight_decay"], schedule=p["schedule"], warmup_epochs=p["warmup_epochs"],
        step_epochs=p["step_epochs"], gamma=p["gamma"], grad_clip=p["grad_clip"], patience=p["patience"],
        amp=p["amp"], seed=p["seed"],
    )


def augment_from(p: dict[str, Any]) -> Augment:
    return Augment(shift=p.get("augment_shift", 0.0), flip=p.get("augment_flip", False))


def load(spec: str, p: dict[str, Any], split: str = "train") -> TensorData:
    channels = int(p["channels"]) if p.get("channels") else None
    return load_data(spec, split, p.get("data_dir"), p.get("image_size"), channels, p.get("on_bad_file", "skip"))


def fit_to_model(data: TensorData, input_shape: list[int] | tuple[int, ...], quiet: bool = False) -> TensorData:
    """Resize/convert images to a model's input shape, saying so; refuse what cannot fit."""
    shape = tuple(int(s) for s in input_shape)
    if data.input_shape == shape:
        return data
    if data.is_image and len(shape) == 3:
        if not quiet:
            print(f"note: {data.name} {tuple(data.input_shape)} converted to the model's input {shape}", file=sys.stderr)
        return conform(data, shape[1], shape[0])
    raise TransferkitError(f"{data.name} has inputs of shape {tuple(data.input_shape)} but the model expects {shape}")


def open_run(p: dict[str, Any], command: str) -> RunDir:
    run_dir = p.get("run_dir") or f"runs/{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    p["run_dir"] = run_dir
    run = RunDir(run_dir, resume=p.get("resume", False), overwrite=p.get("overwrite", False))
    saved = {k: v for k, v in p.items() if k not in ("resume", "overwrite", "config")}
    saved["command"] = command
    run.save_config(saved)
    return run


def start(p: dict[str, Any]) -> None:
    seed_everything(p["seed"], p.get("deterministic", False))


def callbacks(p: dict[str, Any]) -> list[Any]:
    return [] if p.get("quiet") else [ProgressBar()]


def echo_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows]
    return "\n".join(out)


def guard_output(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise TransferkitError(f"{path} already exists; pass --overwrite to replace it or choose another --output")
    return path


def pass_params(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the command one dict of all its options."""

    @functools.wraps(fn)
    def wrapper(**params: Any) -> Any:
        return fn(params)

    return wrapper
