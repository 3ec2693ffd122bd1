"""Domain adaptation: deep methods, shallow transformers, unsupervised validators."""

from ..engine.registry import import_submodules
from .adamatch import AdaMatch, aligned_pseudo_labels
from .api import AdaptResult, AdaptSpec, adapt, prepare_domains
from .losses import (
    CORALLoss,
    DomainDiscriminator,
    GradientReversal,
    MCCLoss,
    MultiKernelMMD,
    MultilinearMap,
    grad_reverse,
    mmd2,
)
from .methods import (
    ADAPT_METHODS,
    ADDA,
    CDAN,
    DAN,
    DANN,
    MCC,
    AdaptMethod,
    DeepCORAL,
    SourceOnly,
    create_method,
)
from .schedules import WeightSchedule
from .shallow import (
    CORAL,
    SHALLOW_METHODS,
    TCA,
    AdaptedClassifier,
    ImportanceWeightedClassifier,
    PCATransform,
    SubspaceAlignment,
    create_shallow,
    domain_classifier_weights,
    kmm_weights,
)
from .validators import VALIDATOR_DOCS, VALIDATORS, model_outputs, score

__all__ = [
    "ADAPT_METHODS",
    "ADDA",
    "CDAN",
    "CORAL",
    "DAN",
    "DANN",
    "MCC",
    "METHOD_DOCS",
    "SHALLOW_METHODS",
    "TCA",
    "VALIDATORS",
    "VALIDATOR_DOCS",
    "AdaMatch",
    "AdaptMethod",
    "AdaptResult",
    "AdaptSpec",
    "AdaptedClassifier",
    "CORALLoss",
    "DeepCORAL",
    "DomainDiscriminator",
    "GradientReversal",
    "ImportanceWeightedClassifier",
    "MCCLoss",
    "MultiKernelMMD",
    "MultilinearMap",
    "PCATransform",
    "SourceOnly",
    "SubspaceAlignment",
    "WeightSchedule",
    "adapt",
    "aligned_pseudo_labels",
    "create_method",
    "create_shallow",
    "domain_classifier_weights",
    "grad_reverse",
    "kmm_weights",
    "mmd2",
    "model_outputs",
    "prepare_domains",
    "score",
]

import_submodules(__name__)  # every method file registers itself
METHOD_DOCS = ADAPT_METHODS.docs()
