"""Distil a teacher into a student: the Python entry point.

>>> from transferkit.distill import DistillSpec, distill
>>> trainer, result = distill(teacher, student, train, val, DistillSpec(losses={"kd": 1.0}, temperature=4))

Any ``nn.Module`` mapping a batch to (N, C) logits can be the teacher or the
student; a :class:`~transferkit.models.Classifier` also exposes its
penultimate features to ``rkd``. Train on labelled data, or on an unlabelled
transfer set (``train.y is None``) where the teacher's outputs are the only labels.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Augment, TensorData, check_labels
from ..data.streaming import Source, StreamingFolder, evaluate_source, source_stream, take_inputs
from ..engine import RunDir, TrainConfig
from ..engine.pipeline import BatchStream, Outcome
from ..engine.pipeline import train as train_pipeline
from ..errors import TransferkitError
from ..models import Classifier, create_model, load_model, read_checkpoint
from ..options import check, option
from .cache import TeacherCache
from .losses import LOSSES, BuildContext, DistillLoss, parse_losses
from .method import Distill, forward_outputs, hooks_for

HINT_STAGES = ("joint", "stagewise")


@dataclass
class DistillSpec:
    """What the student learns from: losses by name and weight, hints, and the losses' options.

    Attributes:
        losses: ``{"kd": 1.0, "fitnet": 0.5, ...}`` (names in ``LOSSES``; ``["kd=1"]`` also works).
        hints: ``"teacher.layer:student.layer"`` pairs for ``fitnet`` and ``at``.
        hint_stage: ``joint`` or ``stagewise`` (hints alone for ``hint_epochs``, then the rest).
        cache_teacher: reuse teacher outputs computed once when there is no random augmentation.
        options: the chosen losses' own options (their registered configs' fields), e.g.
            ``{"temperature": 4.0, "alpha": 0.9}`` for ``kd``; ``transferkit methods distill`` lists them.
    """

    losses: dict[str, float] = option({"kd": 1.0}, "NAME=WEIGHT, repeatable (default kd=1).", cli="--loss", multiple=True,
                                      metavar="NAME=WEIGHT")
    hints: list[str] = option([], "TEACHER_LAYER:STUDENT_LAYER module paths for fitnet/at (repeatable), e.g. backbone.fc1:backbone.fc1.",
                              cli="--hint", multiple=True)
    hint_stage: str = option("joint", "fitnet/at: add hints throughout, or train them alone first.", choices=HINT_STAGES)
    hint_epochs: int = option(1, "Length of the hint stage with --hint-stage stagewise.", min=0)
    cache_teacher: bool = option(True, "Reuse teacher outputs computed once; --no-cache runs the teacher online even without augmentation.",
                                 flag="--no-cache")
    options: dict[str, Any] = option({}, "The losses' own options.", hidden=True)

    def validate(self) -> None:
        self.losses = parse_losses(self.losses)
        check(self)
        known = {n for name in self.losses for n in LOSSES.entry(name).options()}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise TransferkitError(f"{', '.join(unknown)} is not an option of the chosen losses ({', '.join(self.losses)})")
        for name in self.losses:
            LOSSES.entry(name).make_config(self.options, strict=False)
        needs = [k for k in ("fitnet", "at") if k in self.losses]
        if needs and not self.hints:
            raise TransferkitError(f"{', '.join(needs)} needs layer pairs: add --hint TEACHER_LAYER:STUDENT_LAYER")
        if self.hint_stage == "stagewise" and not needs:
            raise TransferkitError("--hint-stage stagewise needs a hint loss (fitnet or at) in --loss")
        self.hint_pairs()

    def hint_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for h in self.hints:
            t, sep, s = str(h).partition(":")
            if not sep or not t or not s:
                raise TransferkitError(f"hint '{h}' must be TEACHER_LAYER:STUDENT_LAYER, e.g. backbone.fc1:backbone.fc1")
            pairs.append((t.strip(), s.strip()))
        return pairs


def build_losses(spec: DistillSpec, teacher: nn.Module, student: nn.Module, sample: torch.Tensor) -> dict[str, DistillLoss]:
    """Loss modules for ``spec`` from the registry; FitNet's regressors are sized by one forward pass on ``sample``."""
    pairs = spec.hint_pairs()

    def hint_outputs() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.no_grad():
            t = forward_outputs(teacher.eval(), sample, hooks_for(teacher, [a for a, _ in pairs], "teacher hint"))
            was = student.training
            s = forward_outputs(student.eval(), sample, hooks_for(student, [b for _, b in pairs], "student guided"))
            student.train(was)
        return list(s.hints), list(t.hints)

    context = BuildContext(teacher, student, sample, hint_outputs)
    out: dict[str, DistillLoss] = {}
    for name in spec.losses:
        entry = LOSSES.entry(name)
        cfg = entry.make_config(spec.options, strict=False)
        out[name] = entry.obj.build(context, **(vars(cfg) if cfg is not None else {}))
    return out


@torch.no_grad()
def check_pair(teacher: nn.Module, student: nn.Module, sample: torch.Tensor) -> int:
    """Both networks must accept the inputs and predict the same number of classes; returns it."""
    outs = {}
    for role, m in (("teacher", teacher), ("student", student)):
        was = m.training
        m.eval()
        try:
            outs[role] = m(sample)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise TransferkitError(f"the {role} cannot take inputs of shape {tuple(sample.shape[1:])}: {first}") from None
        finally:
            m.train(was)
        if outs[role].dim() != 2:
            raise TransferkitError(f"the {role} must return (N, classes) logits, got shape {tuple(outs[role].shape)}")
    ct, cs = outs["teacher"].shape[1], outs["student"].shape[1]
    if ct != cs:
        raise TransferkitError(
            f"the teacher predicts {ct} classes but the student {cs}; build the student with {ct} outputs "
            "(distillation matches class scores one to one)"
        )
    return int(ct)


def _named(classes: Sequence[str]) -> bool:
    """Whether class names are real names, not the default ``"0".."K-1"`` of integer labels."""
    return list(classes) != [str(i) for i in range(len(classes))]


def _preview(classes: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(str(c) for c in list(classes)[:limit])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def check_classes_agree(teacher: nn.Module, student: nn.Module, data: TensorData | None, num_classes: int | None = None) -> None:
    """Teacher, student and labelled ``data`` must have the same classes: their number, and their names
    where both sides have names (integer labels ``0..K-1`` have none). ``num_classes``: the teacher's
    output width when known (from :func:`check_pair`), else its ``num_classes`` attribute.
    """
    t_classes = list(getattr(teacher, "classes", None) or [])
    s_classes = list(getattr(student, "classes", None) or [])
    if t_classes and s_classes and _named(t_classes) and _named(s_classes) and t_classes != s_classes:
        raise TransferkitError(
            f"the teacher's classes ({_preview(t_classes)}) differ from the student's ({_preview(s_classes)}); "
            "start the student from a new architecture (--student ARCH) or from a model of the teacher's classes"
        )
    if data is None or data.y is None:
        return
    nt = num_classes if num_classes is not None else getattr(teacher, "num_classes", None)
    if nt is not None and int(nt) != data.num_classes:
        raise TransferkitError(
            f"the teacher predicts {nt} classes but {data.name} has {data.num_classes} ({_preview(data.classes)}); "
            "distillation matches the teacher's class scores to the labels one to one. Use a teacher trained on these "
            "classes, or give the inputs as --transfer-data (unlabelled: the student learns the teacher's classes)"
        )
    if t_classes and _named(t_classes) and _named(data.classes) and t_classes != list(data.classes):
        raise TransferkitError(
            f"the teacher's classes ({_preview(t_classes)}) are not those of {data.name} ({_preview(data.classes)}); "
            "labels must name the same classes in the same order. Use a teacher trained on these classes, or give the "
            "inputs as --transfer-data (unlabelled: the student learns the teacher's classes)"
        )


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train: Source,
    val: Source | None = None,
    spec: DistillSpec | None = None,
    config: TrainConfig | None = None,
    batch_size: int = 64,
    augment: Augment | None = None,
    run: RunDir | None = None,
    device: str | torch.device = "cpu",
    verbose: bool = True,
    callbacks: list[Any] | None = None,
    resume: bool = False,
    cache: TeacherCache | None = None,
) -> Outcome:
    """Train ``student`` to imitate ``teacher`` on ``train`` (labelled, or unlabelled: ``train.y is None``).

    Teacher outputs are computed once (or taken from ``cache``, built on ``train.x``) when
    ``augment`` is inactive and ``spec.cache_teacher``; otherwise the teacher runs online on each
    augmented batch. The best epoch's weights (validation accuracy, or train loss without ``val``)
    are in ``student`` at the end, with or without a run folder; returns the trainer and the fit result.
    ``train`` and ``val`` may be streamed image folders (:mod:`transferkit.data.streaming`); a streamed
    ``train`` is cropped at random by its workers, so the teacher runs online on it.
    """
    spec = spec or DistillSpec()
    config = config or TrainConfig()
    spec.validate()
    device = torch.device(device) if isinstance(device, str) else device
    if len(train) == 0:
        raise TransferkitError(f"{train.name} is empty: nothing to distil on")
    teacher.to(device).eval()
    student.to(device)
    train_d = train.to(device)
    sample = take_inputs(train_d, torch.arange(min(4, len(train_d))))
    num_classes = check_pair(teacher, student, sample)
    check_classes_agree(teacher, student, train, num_classes)  # type: ignore[arg-type]  # reads classes and name
    if train_d.y is not None:
        check_labels(train_d, num_classes)  # type: ignore[arg-type]  # reads .y and .name of either source
    val_d = val.to(device) if val is not None else None
    if val_d is not None:
        check_classes_agree(teacher, student, val, num_classes)  # type: ignore[arg-type]
        check_labels(val_d, num_classes)  # type: ignore[arg-type]
    method = Distill(
        student, teacher, build_losses(spec, teacher, student, sample), spec.losses,
        spec.hint_pairs(), spec.hint_stage, spec.hint_epochs,
    )
    augment = augment if augment is not None and augment.active else None
    streamed = isinstance(train_d, StreamingFolder)
    if augment is None and spec.cache_teacher and not streamed:
        assert isinstance(train_d, TensorData)
        if cache is None:
            cache = TeacherCache.build(teacher, train_d.x, method.teacher_hooks, keep_embedding="rkd" in spec.losses,
                                       batch_size=config.eval_batch_size)
        elif len(cache) != len(train_d):
            raise TransferkitError(f"the teacher cache holds {len(cache)} examples but {train.name} has {len(train_d)}")
        if verbose:
            print(f"distill: teacher outputs cached once ({len(cache)} examples, {cache.nbytes / 1e6:.1f} MB, "
                  f"{cache.seconds:.1f}s); the teacher does not run during training", file=sys.stderr)
    else:
        cache = None
        if verbose:
            why = ("random augmentation is on" if augment is not None else
                   "the folder is streamed with random crops" if streamed else "the cache is turned off")
            print(f"distill: teacher runs online on every batch because {why}", file=sys.stderr)
    inner = source_stream(train_d, batch_size, device)  # (idx, x, y): index slices of a tensor, or a streamed folder

    def batches(epoch: int, gen: torch.Generator) -> Any:
        for idx, x, y in inner.batches(epoch, gen):
            if augment is not None:
                x = augment(x, gen)
            yield {"x": x, "y": y, "teacher": cache.slice(idx) if cache is not None else None}

    return train_pipeline(
        method, BatchStream(batches, inner.steps_per_pass), config,
        validate=(lambda m: evaluate_source(m.model, val_d, config.eval_batch_size)) if val_d is not None else None,
        run=run, device=device, verbose=verbose, callbacks=callbacks, resume=resume,
    )


# ------------------------------------------------------------ model loading
def load_teacher(path: str | Path, arch: str | None = None, data: TensorData | None = None) -> Classifier:
    """A teacher from a run folder or checkpoint; a plain state dict needs ``arch`` (and ``data`` for shapes)."""
    p = Path(path)
    if not p.exists():
        raise TransferkitError(f"--teacher {path}: no such run folder or checkpoint file")
    try:
        state, info = read_checkpoint(p)
    except TransferkitError as exc:
        raise TransferkitError(f"--teacher {path} could not be read: {exc}") from None
    if info.get("spec"):
        return load_model(p)
    if not arch:
        raise TransferkitError(
            f"--teacher {path} is a foreign checkpoint (a plain state dict without a transferkit model "
            "description); say which architecture it is with --teacher-model ARCH, or give a transferkit run folder"
        )
    if data is None:
        raise TransferkitError("a plain state-dict teacher needs data to infer its input shape and classes")
    model = create_model(arch, data.num_classes, data.input_shape, classes=data.classes)
    try:
        model.load_weights(state, strict=True)  # a teacher needs every weight, its head included
    except TransferkitError as exc:
        raise TransferkitError(f"--teacher {path} does not fit --teacher-model {arch}: {exc}") from None
    return model


def make_student(arch_or_path: str, teacher: Classifier, **kwargs: Any) -> Classifier:
    """A new student of architecture ``arch`` shaped like the teacher, or one loaded from a run folder/checkpoint."""
    if Path(arch_or_path).exists():
        return load_model(arch_or_path)
    spec = teacher.spec
    student = create_model(arch_or_path, teacher.num_classes, spec["input_shape"], classes=teacher.classes, **kwargs)
    if spec.get("preprocess"):
        student.spec["preprocess"] = dict(spec["preprocess"])  # the student sees the teacher's inputs
    return student


def parse_hidden(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"800,800"`` -> ``(800, 800)``."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    try:
        out = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise TransferkitError(f"--student-hidden must be comma-separated widths such as 800,800, got '{text}'") from None
    if not out or min(out) < 1:
        raise TransferkitError(f"--student-hidden must be positive widths such as 800,800, got '{text}'")
    return out
