"""Shared pieces of the command line: options, YAML configs, data and run set-up.

Every option can also come from ``--config FILE.yaml`` (keys are option names
with ``-`` or ``_``); an option given on the command line wins. The resolved
options are saved as ``config.yaml`` in the run folder. A malformed config gives one
line naming the field, the value and what is allowed (:mod:`transferkit.config_validation`).

Distributed training: every command built from ``train_options`` + ``pass_params`` +
``open_run`` + :class:`~transferkit.engine.Trainer` runs data-parallel under ``torchrun``
(``pass_params`` joins the process group, ``open_run`` lets only rank 0 create the run
folder, the Trainer splits batches and averages gradients) and accepts ``--nproc N``,
which re-launches the same command through ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..config_validation import check_finite, resolve_config
from ..data import Augment, TensorData, conform, load_data
from ..engine import ProgressBar, RunDir, TrainConfig, seed_everything
from ..engine import distributed as ddp
from ..errors import TransferkitError
from ..options import from_mapping
from .typed import config_options


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read ``--config``: keys are option names (``model`` or ``arch``, ``batch-size`` or ``batch_size``)."""
    if not value:
        return value
    resolved = resolve_config(value, list(ctx.command.params), ctx)
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
    click.option("--text-column", default=None, help="Text data (.csv/.tsv/.jsonl): the column holding the texts (default: text)."),
    click.option("--label-column", default=None, help="Text data: the column holding the labels (default: label, if present)."),
    click.option("--max-length", type=click.IntRange(2, 4096), default=None,
                 help="Text data: tokens kept per text (default: the trained model's, else 128); longer texts are cut, said once."),
    click.option("--tokenizer", default=None, help="Text data: tokenizer (minilm or hf:PATH; default: the text model's)."),
    click.option("--stream/--no-stream", default=None,
                 help="Image folders: decode from disk per batch (--stream) or hold as a tensor (--no-stream); default: stream when the decoded folder exceeds the memory budget."),
    click.option("--workers", type=int, default=0, show_default=True, help="Worker processes decoding a streamed image folder (0: the main process)."),
    click.option("--crop-scale", type=(float, float), default=None,
                 help="Streamed folders: area range LO HI of the training random-resized crop (default 0.35 1; 1 1: no random crop)."),
)

train_options = compose(
    config_options(TrainConfig),
    click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True),
    click.option("--augment-shift", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Random translation of up to N pixels."),
    click.option("--augment-flip", is_flag=True, default=False, help="Random horizontal flips."),
    click.option("--augment-scale", type=(click.FloatRange(min=0, min_open=True), click.FloatRange(min=0, min_open=True)),
                 default=None, help="Random zoom by a factor drawn from [LO, HI] (e.g. 0.85 1.15)."),
    click.option("--augment-colour", is_flag=True, default=False,
                 help="Random colours: fold each channel about a random level, |l - x|: grey digits become colour digits on colour backgrounds. For a colour target with a grey source (use --channels 3); it hurts on grey targets."),
    click.option("--deterministic", is_flag=True, default=False, help="Use deterministic kernels (slower on GPU)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True),
    click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
                 help="Train data-parallel in N processes on this machine (re-launches itself with torchrun; gloo on CPU, nccl on GPUs)."),
)

run_options = compose(
    click.option("--run-dir", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<command>-<time>)."),
    click.option("--resume", is_flag=True, default=False, help="Continue the run in --run-dir from its last checkpoint."),
    click.option("--overwrite", is_flag=True, default=False, help="Replace an existing run folder."),
    click.option("--quiet", is_flag=True, default=False, help="No progress bar or per-epoch lines."),
)


architecture_options = compose(
    click.option("--model-hidden", default=None, help="mlp: hidden widths, e.g. 512,256 (default 256,256)."),
    click.option("--model-dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="lenet/dtn/mlp: dropout (default: the architecture's own)."),
    click.option("--model-input-dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
                 help="mlp: dropout on the inputs (e.g. 0.2, as in Hinton et al.'s MNIST nets; default 0)."),
    click.option("--model-standardize", is_flag=True, default=False,
                 help="lenet/dtn: standardise each input image per channel inside the model (digits on colour photographs)."),
    click.option("--freeze-encoder", is_flag=True, default=False,
                 help="Text models (minilm, hf:PATH): the encoder never trains; add --bottleneck-dim N for a trainable layer under the head."),
)


def architecture_kwargs(hidden: str | None, dropout: float | None, input_dropout: float | None = None) -> dict[str, Any]:
    """``hidden="512,256"``, ``dropout``, ``input_dropout`` -> the keyword arguments of ``create_model`` (only those given)."""
    from ..distill.api import parse_hidden

    kw: dict[str, Any] = {}
    if hidden:
        kw["hidden"] = parse_hidden(hidden)
    if dropout is not None:
        kw["dropout"] = dropout
    if input_dropout is not None:
        kw["input_dropout"] = input_dropout
    return kw


def build_model(
    p: dict[str, Any], arch: str, num_classes: int, input_shape: Any, classes: list[str] | None = None,
    preprocess: dict[str, Any] | None = None,
) -> Any:
    """A new model of ``arch`` with ``--bottleneck-dim``, ``--model-hidden`` and ``--model-dropout``."""
    from ..models import create_model

    kw = architecture_kwargs(p.get("model_hidden"), p.get("model_dropout"), p.get("model_input_dropout"))
    if p.get("model_standardize"):
        kw["standardize"] = True
    if p.get("freeze_encoder"):
        kw["frozen"] = True
    try:
        model = create_model(arch, num_classes, input_shape, p.get("bottleneck_dim"), classes=classes, **kw)
    except TypeError:
        given = ", ".join(f"--model-{k.replace('_', '-')}" for k in kw)
        raise TransferkitError(f"--model {arch} does not take {given}; see `transferkit models`") from None
    if preprocess:
        model.spec["preprocess"] = dict(preprocess)  # saved with the model, applied to every later input
    return model


def train_config(p: dict[str, Any]) -> TrainConfig:
    return from_mapping(TrainConfig, p)


def augment_from(p: dict[str, Any]) -> Augment:
    scale = p.get("augment_scale")
    if scale is not None:
        lo, hi = (float(v) for v in scale)
        if lo > hi:
            raise TransferkitError(f"--augment-scale takes LO HI with LO <= HI, got {lo} {hi}")
        scale = (lo, hi)
    return Augment(shift=p.get("augment_shift", 0.0), flip=p.get("augment_flip", False), scale=scale,
                   colour=p.get("augment_colour", False))


def load(
    spec: str, p: dict[str, Any], split: str = "train", size_hint: int | None = None, labelled: bool = True,
    streamable: bool = False,
) -> Any:
    """Data for ``spec``: a :class:`TensorData`, or, where the caller can take one (``streamable``), a
    :class:`~transferkit.data.streaming.StreamingFolder` for an image folder over the memory budget or with
    ``--stream`` (see :mod:`transferkit.data.streaming`).

    ``size_hint``: the model's input size, when known (what the folder's memory estimate uses).
    """
    channels = int(p["channels"]) if p.get("channels") else None
    from ..data.text import is_text_spec, text_options

    if is_text_spec(spec, p.get("text_column")):
        return load_data(spec, split, p.get("data_dir"), text=text_options(p))
    if Path(spec).is_dir() and not streamable and p.get("stream"):
        raise TransferkitError("--stream: this command (or method) holds its data in memory; drop --stream")
    if Path(spec).is_dir() and (streamable or not labelled):
        from ..data.streaming import DEFAULT_CROP_SCALE, check_workers, open_image_folder

        workers = p.get("workers") or 0
        check_workers(workers)
        crop = tuple(p["crop_scale"]) if p.get("crop_scale") else DEFAULT_CROP_SCALE
        return open_image_folder(spec, p.get("image_size"), channels, p.get("on_bad_file", "skip"), stream=p.get("stream"),
                                 workers=workers, crop_scale=(float(crop[0]), float(crop[1])), size_hint=size_hint,
                                 labelled=labelled)
    return load_data(spec, split, p.get("data_dir"), p.get("image_size"), channels, p.get("on_bad_file", "skip"))


corruption_options = compose(
    click.option("--corruption", default=None,
                 help="Corrupt the evaluated/target images (Hendrycks & Dietterich 2019), e.g. gaussian_noise; `transferkit datasets` lists them."),
    click.option("--severity", type=int, default=None, help="Corruption severity 1-5 (default 5)."),
    click.option("--corruption-seed", type=int, default=0, show_default=True, help="Seed of the corruption's random draws."),
)


def check_corruption_options(p: dict[str, Any]) -> None:
    """Refuse a bad ``--corruption``/``--severity`` before any work (one line)."""
    from ..data.corruptions import check_corruption

    if p.get("corruption"):
        check_corruption(p["corruption"], 5 if p.get("severity") is None else p["severity"])
    elif p.get("severity") is not None:
        raise TransferkitError("--severity sets the level of --corruption; add --corruption NAME (see `transferkit datasets`)")


def corrupted(data: TensorData, p: dict[str, Any]) -> TensorData:
    """``data`` with ``--corruption`` applied at ``--severity`` (unchanged without it)."""
    if not p.get("corruption"):
        return data
    from ..data.corruptions import corrupt_data
    from ..data.streaming import StreamingFolder

    if isinstance(data, StreamingFolder):
        raise TransferkitError(f"--corruption needs the images in memory but {data.name} is streamed from disk; add --no-stream")

    return corrupt_data(data, p["corruption"], 5 if p.get("severity") is None else p["severity"], p.get("corruption_seed") or 0)


def fit_to_model(
    data: TensorData, input_shape: list[int] | tuple[int, ...], quiet: bool = False, preprocess: dict[str, Any] | None = None
) -> TensorData:
    """Bring data to what a model was trained on, saying so; refuse what cannot fit.

    ``preprocess`` is the model's ``spec["preprocess"]``: the pixel transform its training data
    had (``invert``: ink is 1, as the Omniglot loader makes it). Data whose loader did not do the
    same (a user's folder of the same PNG files) gets it here, so a prediction never silently uses
    other preprocessing than training. Then images are resized/converted to ``input_shape``.
    """
    from ..data.streaming import StreamingFolder
    from ..data.text import check_text_preprocess

    if not isinstance(data, StreamingFolder):
        check_text_preprocess(data, preprocess)  # token ids of another tokenizer or length: refused
    want = bool((preprocess or {}).get("invert", False))
    if isinstance(data, StreamingFolder):  # nothing is decoded here: the workers decode at the model's size
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise TransferkitError(f"{data.name} holds images but the model expects inputs of shape {shape}")
        return replace(data.conformed(shape[1], shape[0]), preprocess={**data.preprocess, "invert": want})
    if data.is_image and want != bool(data.preprocess.get("invert", False)):
        if not quiet:
            print(f"note: {data.name} inverted (1 - x) as the model's training images were", file=sys.stderr)
        data = replace(data, x=1.0 - data.x, preprocess={**data.preprocess, "invert": want})
    shape = tuple(int(s) for s in input_shape)
    if data.input_shape == shape:
        return data
    if data.is_image and len(shape) == 3:
        if not quiet:
            print(f"note: {data.name} {tuple(data.input_shape)} converted to the model's input {shape}", file=sys.stderr)
        return conform(data, shape[1], shape[0])
    raise TransferkitError(f"{data.name} has inputs of shape {tuple(data.input_shape)} but the model expects {shape}")


def open_run(p: dict[str, Any], command: str, model: Any = None, num_classes: int | None = None) -> RunDir:
    """The run folder, checked; nothing is written until training starts (:meth:`RunDir.start`).

    With ``--resume`` and the ``model`` about to be trained, the checkpoint's architecture is
    compared with it first, so a mismatch is one line and the run's config.yaml stays as it was
    (``num_classes``: the class count the model will have when trained, if its head is replaced).
    """
    run_dir = p.get("run_dir") or f"runs/{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = ddp.broadcast_object(run_dir)  # every rank uses rank 0's (time-stamped) name
    p["run_dir"] = run_dir
    run = ddp.open_run_dir(run_dir, resume=p.get("resume", False), overwrite=p.get("overwrite", False), defer=True)
    if p.get("resume") and model is not None:
        check_resume_fits(run.path, model, num_classes)
    saved = {k: v for k, v in p.items() if k not in ("resume", "overwrite", "config")}
    saved["command"] = command
    run.save_config(saved)  # kept until the run starts
    return run


def check_resume_fits(path: Path, model: Any, num_classes: int | None = None) -> None:
    """Refuse ``--resume`` of a run whose checkpoint holds another architecture, naming what differs."""
    from ..engine.state import checkpoint_folder
    from ..models import read_checkpoint

    folder = checkpoint_folder(Path(path) / "checkpoints" / "last")
    spec = getattr(model, "spec", None)
    if folder is None or not isinstance(spec, dict) or not (folder / "model.safetensors").is_file():
        return
    try:
        _, info = read_checkpoint(folder / "model.safetensors")
    except TransferkitError:
        return  # an unreadable checkpoint is reported when it is loaded
    saved = (info or {}).get("spec") or {}
    if num_classes is not None:
        spec = {**spec, "num_classes": num_classes}
    keys = ("arch", "num_classes", "input_shape", "bottleneck_dim", "kwargs")
    differ = [k for k in keys if k in saved and k in spec and _plain(saved[k]) != _plain(spec[k])]
    if differ:
        what = ", ".join(f"{k} {_plain(saved[k])} in the checkpoint vs {_plain(spec[k])} now" for k in differ)
        raise TransferkitError(
            f"cannot resume {path}: its checkpoint is another model ({what}); "
            "resume with the run's own options (see its config.yaml) or start a new --run-dir"
        )


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def start(p: dict[str, Any]) -> None:
    augment_from(p)  # refuse a bad --augment-scale before any run folder exists
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


def _command_line(ctx: click.Context, skip: tuple[str, ...] = ("config", "nproc", "help")) -> list[str]:
    """The command's arguments rebuilt from its resolved values (config values included)."""
    names: list[str] = []
    node: click.Context | None = ctx
    while node is not None and (node is ctx or node.parent is not None):  # sub-command names, not the program
        names.insert(0, node.info_name or "")
        node = node.parent
    args = names
    for param in ctx.command.params:
        name = param.name or ""
        value = ctx.params.get(name)
        if name in skip or value is None:
            continue
        if isinstance(param, click.Argument):
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        if not isinstance(param, click.Option):
            continue
        long = max(param.opts, key=len)
        if param.is_flag:  # given when it differs from the default (--cold-start sets warm_start False)
            if value is not None and value != param.default:
                args.append(max(param.secondary_opts, key=len) if param.secondary_opts and not value else long)
            continue
        if ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT:
            continue
        for v in value if param.multiple else [value]:
            args += [long, str(v)]
    return args


def _preflight_run_dir(p: dict[str, Any]) -> None:
    """Refuse an unusable run folder before starting N processes (each would say so)."""
    if not p.get("run_dir"):
        return
    RunDir(p["run_dir"], resume=bool(p.get("resume")), overwrite=bool(p.get("overwrite")), is_main=False, defer=True)


def launch(ctx: click.Context, p: dict[str, Any]) -> None:
    """Run this command again in ``p["nproc"]`` processes through PyTorch's launcher.

    The same as ``python -m torch.distributed.run --standalone --nproc_per_node N -m
    transferkit <these arguments without --nproc>``, run in-process so that a failing rank
    gives one ``error:`` line instead of the launcher's traceback. ``--standalone`` picks a
    free local port, so several runs can share a machine; ``OMP_NUM_THREADS`` is split
    between the processes unless already set.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    _preflight_run_dir(p)
    n = int(p["nproc"])
    argv = ["--standalone", f"--nproc_per_node={n}", "-m", "transferkit", *_command_line(ctx)]
    if not p.get("quiet"):
        print(f"launching {n} processes: python -m torch.distributed.run {' '.join(argv)}", file=sys.stderr, flush=True)
    set_threads = "OMP_NUM_THREADS" not in os.environ
    if set_threads:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    log = logging.getLogger("torch.distributed.elastic")
    level = log.level
    log.setLevel(logging.CRITICAL)  # the failing rank prints its own error line
    try:
        torchrun(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise TransferkitError(
            f"the distributed run failed: rank {rank} exited with status {failure.exitcode} (its error is printed above)"
        ) from None
    finally:
        log.setLevel(level)
        if set_threads:
            os.environ.pop("OMP_NUM_THREADS", None)


@contextlib.contextmanager
def distributed_context(p: dict[str, Any]) -> Any:
    """Join ``torchrun``'s process group for a command that trains; rank > 0 runs quietly."""
    info = ddp.init_from_env(p.get("device", "auto"))
    try:
        if info.is_main:
            yield info
            return
        p["quiet"] = True  # progress, notes and results are printed by rank 0 only
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield info
    finally:
        ddp.shutdown()


def pass_params(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hand the command one dict of all its options.

    Also checks numbers given on the command line are finite and, for commands with
    ``--nproc`` (every command built on ``train_options``), sets up distributed training:
    ``--nproc N`` outside ``torchrun`` re-launches the command in N processes; inside
    ``torchrun`` the process group is joined from its environment variables.
    """

    @functools.wraps(fn)
    def wrapper(**params: Any) -> Any:
        ctx = click.get_current_context()
        check_finite(ctx, params)
        if "nproc" not in params:
            if ddp.launched_by_torchrun() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise TransferkitError(f"`transferkit {ctx.info_name}` does not run distributed; start it without torchrun")
            return fn(params)
        if params["nproc"] > 1 and not ddp.launched_by_torchrun():
            launch(ctx, params)
            return None
        with distributed_context(params):
            return fn(params)

    return wrapper
