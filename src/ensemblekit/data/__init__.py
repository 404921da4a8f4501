"""Datasets: registry, splits, validation and fast in-memory batching."""

from .augment import build_augment, build_tta, mixup
from .batching import Batch, TensorBatcher
from .dataset import Data, Split, from_arrays, validate_data
from .registry import DATASETS, from_loaders, list_datasets, load_dataset, load_npz, register_dataset

__all__ = [
    "build_augment", "build_tta", "mixup", "Batch", "TensorBatcher", "Data", "Split", "from_arrays", "validate_data",
    "DATASETS", "from_loaders", "list_datasets", "load_dataset", "load_npz", "register_dataset",
]
