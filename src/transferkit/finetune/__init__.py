"""Fine-tuning and feature extraction: strategies, regularizers, the recipe."""

from ..engine.registry import import_submodules
from .api import FinetuneSpec, finetune, frozen_features
from .bss import BSS
from .method import FineTune, HeadOnly
from .regularizers import L2SP, REGULARIZERS, LwF, Regularizer
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
    "Regularizer",
    "apply_strategy",
    "finetune",
    "frozen_features",
    "layerwise_groups",
]

import_submodules(__name__)  # every regularizer file registers itself
