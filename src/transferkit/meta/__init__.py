"""Meta-learning: episode sampling and functional (torch.func) learners vmapped over tasks.

Importing this package also registers the ``omniglot`` dataset.
"""

from ..data import omniglot as _omniglot  # noqa: F401  (registers the dataset)
from ..engine.registry import import_submodules
from .api import (
    TASK_MODES,
    MetaSpec,
    build_learner,
    few_shot_predict,
    meta_train,
    set_task_mode,
    uses_vmap,
)
from .episodes import Episode, EpisodeSampler, class_groups, rotate_batch, split_classes
from .learner import LEARNERS, MetaLearner, batch_stat_norm, use_batch_statistics
from .maml import ANIL, MAML, first_order_agreement
from .protonet import ProtoNet, prototypes, squared_distances
from .reptile import Reptile
from .sinusoid import SinusoidTasks, sinusoid_model

__all__ = [
    "ANIL",
    "LEARNERS",
    "MAML",
    "TASK_MODES",
    "Episode",
    "EpisodeSampler",
    "MetaLearner",
    "MetaSpec",
    "ProtoNet",
    "Reptile",
    "SinusoidTasks",
    "batch_stat_norm",
    "build_learner",
    "class_groups",
    "few_shot_predict",
    "first_order_agreement",
    "meta_train",
    "prototypes",
    "rotate_batch",
    "set_task_mode",
    "sinusoid_model",
    "split_classes",
    "squared_distances",
    "use_batch_statistics",
    "uses_vmap",
]

import_submodules(__name__)  # every learner file registers itself
