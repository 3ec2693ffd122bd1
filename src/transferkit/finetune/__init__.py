"""Fine-tuning and feature extraction: strategies, regularizers, the recipe."""

from .api import FinetuneSpec, finetune, frozen_features
from .method import FineTune, HeadOnly
from .regularizers import BSS, L2SP, REGULARIZERS, LwF
from .strategies import STRATEGIES, apply_strategy, layerwise_groups

__all__ = [
    "BSS",
    "L2SP",
    "REGULARIZERS",
    "STRATEGIES",
    "FineTune",
    "FinetuneSpec",
    "HeadOnly",
    "LwF",
    "apply_strategy",
    "finetune",
    "frozen_features",
    "layerwise_groups",
]
