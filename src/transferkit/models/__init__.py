"""Models: backbones, the classifier, checkpoints and feature hooks."""

from .backbones import BACKBONE_DOCS, BACKBONES, PRETRAINED, create_backbone, register_backbone
from .classifier import (
    Classifier,
    CosineHead,
    FeatureHooks,
    create_model,
    load_init,
    load_model,
    parameter_count,
    pretrained_classifier,
    read_checkpoint,
    trainable_by_pattern,
)

__all__ = [
    "BACKBONES",
    "BACKBONE_DOCS",
    "PRETRAINED",
    "Classifier",
    "CosineHead",
    "FeatureHooks",
    "create_backbone",
    "create_model",
    "load_init",
    "load_model",
    "parameter_count",
    "pretrained_classifier",
    "read_checkpoint",
    "register_backbone",
    "trainable_by_pattern",
]
