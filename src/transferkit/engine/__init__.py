"""The engine: one training loop, checkpoints, run folders, evaluation."""

from .callbacks import Callback, ProgressBar
from .evaluate import (
    batched_forward,
    confusion_counts,
    confusion_matrix,
    evaluate,
    metrics_from_logits,
    predict_logits,
)
from .loop import FitResult, TrainConfig, Trainer, epoch_generator
from .method import Method, StepInfo, Supervised
from .run import RunDir
from .runtime import resolve_device, seed_everything
from .state import load_checkpoint, save_checkpoint

__all__ = [
    "Callback",
    "FitResult",
    "Method",
    "ProgressBar",
    "RunDir",
    "StepInfo",
    "Supervised",
    "TrainConfig",
    "Trainer",
    "batched_forward",
    "confusion_counts",
    "confusion_matrix",
    "epoch_generator",
    "evaluate",
    "load_checkpoint",
    "metrics_from_logits",
    "predict_logits",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]
