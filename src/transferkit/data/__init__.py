"""Data: named datasets, user sources, tensor batches, transforms."""

from . import omniglot as _omniglot  # noqa: F401  (registers the omniglot dataset)
from .datasets import (
    DATASETS,
    load_csv,
    load_data,
    load_image_folder,
    load_images,
    load_npz,
    read_image,
    register_dataset,
)
from .tensors import (
    TensorData,
    balanced_batches,
    batches,
    check_classes,
    check_labels,
    endless,
    few_labels,
    index_batches,
    random_split,
)
from .transforms import Augment, conform, pair_shapes, resize, to_channels

__all__ = [
    "DATASETS",
    "Augment",
    "TensorData",
    "balanced_batches",
    "batches",
    "check_classes",
    "check_labels",
    "conform",
    "endless",
    "few_labels",
    "index_batches",
    "load_csv",
    "load_data",
    "load_image_folder",
    "load_images",
    "load_npz",
    "pair_shapes",
    "random_split",
    "read_image",
    "register_dataset",
    "resize",
    "to_channels",
]
