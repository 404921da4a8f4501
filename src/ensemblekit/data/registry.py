"""Dataset registry: ``mnist1d`` and ``digits`` built in (regression sets in :mod:`.regression`),
``.npz`` files and DataLoaders for the user's own data."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError, DataError
from ..registry import Registry
from .dataset import Data, Split, from_arrays, validate_data

__all__ = ["DATASETS", "register_dataset", "load_dataset", "list_datasets", "load_npz", "from_loaders"]

DATASETS: Registry[Callable[..., Data]] = Registry("dataset", discover=("ensemblekit.data",))  # data/regression.py registers more


def register_dataset(name: str) -> Callable[[Callable[..., Data]], Callable[..., Data]]:
    """Decorator registering a function ``(**kwargs) -> Data`` under ``name``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def load_dataset(name: str, **kwargs: Any) -> Data:
    """Load a registered dataset by name.

    Args:
        name: ``mnist1d``, ``digits``, ``diabetes``, ``toy_cubic``, ... (``ensemblekit list`` shows all).
        **kwargs: the dataset's options, e.g. ``num_samples=10000``, ``val_fraction=0.1``, ``seed=0``.

    Raises:
        ConfigError: unknown name or option.
        DataError: the data fails validation.

    Example:
        >>> data = load_dataset("mnist1d")
        >>> len(data.train), len(data.val), len(data.test)
        (3600, 400, 1000)
    """
    import inspect

    fn = DATASETS.get(name)
    valid = list(inspect.signature(fn).parameters)
    for key in kwargs:
        if key not in valid:
            raise ConfigError(f"dataset {name!r} got unknown option {key!r}; valid: {', '.join(valid)}")
    return fn(**kwargs)


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(num_samples: int, train_split: float, generator_seed: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    args.seed = int(generator_seed)
    d = make_mnist1d(args)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def make_mnist1d(args: Any) -> dict[str, Any]:
    """``mnist1d.data.make_dataset(args)`` without touching the caller's global RNGs
    (make_dataset reseeds NumPy's and Python's global generators)."""
    import random

    from mnist1d.data import make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@register_dataset("mnist1d")
def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    generator_seed: int = 42,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Data:
    """MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package: 40-sample signals, 10 classes.

    Args:
        num_samples: total examples generated (default 5000 -> 4,000 train / 1,000 test).
        train_split: share of generated examples used for training (default 0.8).
        generator_seed: seed of the generator (42 reproduces the published dataset).
        val_fraction: share of the training examples held out for validation (default 0.1).
        seed: seed of the validation split.

    Returns:
        Data with examples of shape ``(1, 40)``.
    """
    if num_samples < 20:
        raise ConfigError(f"mnist1d num_samples must be >= 20, got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise ConfigError(f"mnist1d train_split must be in (0, 1), got {train_split}")
    x, y, xt, yt = _mnist1d_arrays(int(num_samples), float(train_split), int(generator_seed))
    return from_arrays(
        x[:, None, :], y, xt[:, None, :], yt,
        val_fraction=val_fraction, seed=seed, num_classes=10, name="mnist1d",
        info={"num_samples": num_samples, "train_split": train_split, "generator_seed": generator_seed},
    )


@register_dataset("digits")
def digits(test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> Data:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), scaled to [0, 1].

    Args:
        test_fraction: share held out for testing (default 0.2), drawn with ``seed``.
        val_fraction: share of the rest held out for validation (default 0.1).
        seed: seed of both splits.

    Returns:
        Data with examples of shape ``(1, 8, 8)``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :] / 16.0
    return from_arrays(
        x, bunch.target, val_fraction=val_fraction, test_fraction=test_fraction,
        seed=seed, num_classes=10, name="digits",
    )


def load_npz(path: str | os.PathLike[str], *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0, num_classes: int | None = None,
             task: str | None = None) -> Data:
    """Load the user's data from an ``.npz`` file with arrays ``x``, ``y`` and optional ``x_test``, ``y_test``, ``x_val``, ``y_val``.

    Never unpickles (``allow_pickle=False``): object arrays are refused. ``task`` is
    ``"classification"``, ``"regression"`` (float targets ``(N,)`` or ``(N, D)``) or ``None``:
    inferred from ``y`` as :func:`~ensemblekit.data.dataset.from_arrays` does.

    Raises:
        ConfigError: an unknown task, or ``num_classes`` for regression.
        DataError: missing file or keys, object arrays, an ambiguous task, or data failing validation.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"npz file not found: {path}")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (an .npz is a zip archive of .npy arrays, as np.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        raise DataError(f"{path}: cannot read without unpickling (object arrays are not allowed): {exc}") from exc
    except Exception as exc:  # zipfile.BadZipFile, OSError, ...
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {missing}; found {sorted(arrays)} (need x, y; optional x_test, y_test, x_val, y_val)")
    unknown = sorted(set(arrays) - {"x", "y", "x_test", "y_test", "x_val", "y_val"})
    if unknown:
        raise DataError(f"{path}: unexpected array(s) {unknown}; allowed: x, y, x_test, y_test, x_val, y_val")
    return from_arrays(
        arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"),
        x_val=arrays.get("x_val"), y_val=arrays.get("y_val"),
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, num_classes=num_classes, task=task,
        name=os.path.splitext(os.path.basename(path))[0], info={"npz": os.path.abspath(path)},
    )


def from_loaders(train: DataLoader, test: DataLoader, val: DataLoader | None = None, *, num_classes: int | None = None,
                 name: str = "loaders", key: str | None = None, task: str = "classification") -> Data:
    """Wrap the user's DataLoaders (data that does not fit in memory).

    Members then share each batch (no per-member data order); the first batch of
    every loader is validated. ``key`` names the data for cached results (a compare's
    cells): loaders over a ``TensorDataset`` are hashed by their tensors, any other loader
    only by this name (:meth:`Data.digest` refuses to cache it without one).

    ``num_classes`` is required for classification; for ``task="regression"`` it is left out
    and the target shape is read from the first batch (``(B,)`` or ``(B, D)``).
    """
    if task == "classification" and num_classes is None:
        raise ConfigError("from_loaders needs num_classes for classification data")
    if task == "regression" and num_classes is not None:
        raise ConfigError(f"num_classes is not meaningful for regression data (num_outputs is D), got num_classes={num_classes}")
    xb, yb = next(iter(train))
    data = Data(
        train=Split(loader=train), test=Split(loader=test), val=Split(loader=val) if val is not None else None,
        num_classes=int(num_classes or 0), input_shape=tuple(int(s) for s in torch.as_tensor(xb).shape[1:]), name=name, key=key,
        task=task, target_shape=tuple(int(s) for s in torch.as_tensor(yb).shape[1:]) if task == "regression" else (),
    )
    return validate_data(data)


_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _cifar(name: str, root: str, val_fraction: float, seed: int, download: bool) -> Data:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise ConfigError(f"dataset {name!r} needs torchvision: pip install 'ensemblekit[vision]' (install your torch build first)") from None
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as exc:
        raise DataError(f"{name}: no dataset files under {root!r} ({exc}); put them there or set download: true") from None
    mean = torch.tensor(_CIFAR_STATS[name][0]).view(1, 3, 1, 1)
    std = torch.tensor(_CIFAR_STATS[name][1]).view(1, 3, 1, 1)

    def prep(images: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0) - mean) / std

    return from_arrays(
        prep(train.data), np.asarray(train.targets), prep(test.data), np.asarray(test.targets),
        val_fraction=val_fraction, seed=seed, num_classes=10 if name == "cifar10" else 100, name=name, info={"root": root},
    )


@register_dataset("cifar10")
def cifar10(root: str = "data", val_fraction: float = 0.0, seed: int = 0, download: bool = False) -> Data:
    """CIFAR-10 through torchvision (optional extra ``vision``), normalised per channel, ``(3, 32, 32)``.

    Args:
        root: folder with torchvision's ``cifar-10-batches-py``.
        val_fraction: share of the 50,000 training images held out (default 0: the papers' setting).
        seed: seed of the validation split.
        download: let torchvision download the files (needs network).
    """
    return _cifar("cifar10", root, val_fraction, seed, download)


@register_dataset("cifar100")
def cifar100(root: str = "data", val_fraction: float = 0.0, seed: int = 0, download: bool = False) -> Data:
    """CIFAR-100 through torchvision (optional extra ``vision``); see :func:`cifar10`."""
    return _cifar("cifar100", root, val_fraction, seed, download)
