"""Knowledge distillation: a small student learns from a large, frozen teacher.

Losses (``LOSSES``, composable by name and weight): ``ce``, ``kd`` (Hinton et
al. 2015), ``fitnet`` (Romero et al. 2015), ``at`` (Zagoruyko & Komodakis
2017), ``rkd`` (Park et al. 2019), ``dkd`` (Zhao et al. 2022). Teacher
outputs are cached when inputs are deterministic; students export to
TorchScript or ONNX with an equivalence check.
"""

from ..engine.registry import import_submodules
from .api import (
    DistillSpec,
    build_losses,
    check_classes_agree,
    check_pair,
    distill,
    load_teacher,
    make_student,
    parse_hidden,
)
from .cache import TeacherCache
from .dkd import DKDLoss
from .export import FORMATS, ExportCheck, export_model
from .jitter import PixelJitter
from .losses import (
    LOSSES,
    AttentionTransfer,
    CrossEntropy,
    DistillLoss,
    FitNetLoss,
    KDLoss,
    Outputs,
    RKDLoss,
    attention_map,
    parse_losses,
    soft_kl,
)
from .method import Distill, forward_outputs
from .report import compare, cpu_latency_ms, size_on_disk, summary_rows

__all__ = [
    "FORMATS",
    "LOSSES",
    "AttentionTransfer",
    "CrossEntropy",
    "DKDLoss",
    "Distill",
    "DistillLoss",
    "DistillSpec",
    "ExportCheck",
    "FitNetLoss",
    "KDLoss",
    "Outputs",
    "PixelJitter",
    "RKDLoss",
    "TeacherCache",
    "attention_map",
    "build_losses",
    "check_classes_agree",
    "check_pair",
    "compare",
    "cpu_latency_ms",
    "distill",
    "export_model",
    "forward_outputs",
    "load_teacher",
    "make_student",
    "parse_hidden",
    "parse_losses",
    "size_on_disk",
    "soft_kl",
    "summary_rows",
]

import_submodules(__name__)  # every loss file registers itself
