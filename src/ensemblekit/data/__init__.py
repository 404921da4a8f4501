"""Data: the dataset registry, splits, validation and fast in-memory batching.

Owns: :data:`DATASETS` (``mnist1d``, ``digits``, ``npz``, arrays and loaders: :mod:`.registry`;
the regression sets ``diabetes``, ``toy_cubic``, ``heteroscedastic``: :mod:`.regression`),
:class:`Data` / :class:`Split` and their digest (part of every cache key), the task and the
targets' rules (:mod:`.targets`), standardisation fitted on the training split (:mod:`.scaling`), index-slicing
batches (:mod:`.batching`), training augmentations and test-time transforms (:mod:`.augment`),
the corruption suite (:mod:`.shift`, :mod:`.corruptions`) and OOD sets (:mod:`.ood`).

May import: the base modules (``errors``, ``registry``, ``hashing``, ``seeding``) only.
"""

from .augment import build_augment, build_tta, mixup
from .batching import Batch, TensorBatcher
from .dataset import Data, Split, from_arrays, validate_data
from .registry import DATASETS, from_loaders, list_datasets, load_dataset, load_npz, register_dataset
from .scaling import Standardizer, standardize
from .targets import TASKS, infer_task

__all__ = [
    "build_augment", "build_tta", "mixup", "Batch", "TensorBatcher", "Data", "Split", "from_arrays", "validate_data",
    "DATASETS", "from_loaders", "list_datasets", "load_dataset", "load_npz", "register_dataset",
    "Standardizer", "standardize", "TASKS", "infer_task",
]
