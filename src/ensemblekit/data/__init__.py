"""Data: the dataset registry, splits, validation and fast in-memory batching.

Owns: :data:`DATASETS` (``mnist1d``, ``digits``, ``npz``, arrays and loaders: :mod:`.registry`),
:class:`Data` / :class:`Split` and their digest (part of every cache key), index-slicing
batches (:mod:`.batching`), training augmentations and test-time transforms (:mod:`.augment`),
the corruption suite (:mod:`.shift`, :mod:`.corruptions`) and OOD sets (:mod:`.ood`).

May import: the base modules (``errors``, ``registry``, ``hashing``, ``seeding``) only.
"""

from .augment import build_augment, build_tta, mixup
from .batching import Batch, TensorBatcher
from .dataset import Data, Split, from_arrays, validate_data
from .registry import DATASETS, from_loaders, list_datasets, load_dataset, load_npz, register_dataset

__all__ = [
    "build_augment", "build_tta", "mixup", "Batch", "TensorBatcher", "Data", "Split", "from_arrays", "validate_data",
    "DATASETS", "from_loaders", "list_datasets", "load_dataset", "load_npz", "register_dataset",
]
