"""Models: backbones, the classifier, checkpoints and feature hooks."""

from .backbones import BACKBONE_DOCS, BACKBONES, create_backbone, register_backbone
from .classifier import (
    Classifier,
    FeatureHooks,
    create_model,
    load_init,
    load_model,
    parameter_count,
    read_checkpoint,
    trainable_by_pattern,
)

__all__ = [
    "BACKBONES",
    "BACKBONE_DOCS",
    "Classifier",
    "FeatureHooks",
    "create_backbone",
    "create_model",
    "load_init",
    "load_model",
    "parameter_count",
    "read_checkpoint",
    "register_backbone",
    "trainable_by_pattern",
]
