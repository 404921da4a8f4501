"""In-memory datasets: splits of tensors, validated before any training.

A :class:`Data` holds ``train``, optional ``val`` and ``test`` splits, the number of
classes and the shape of one example. Splits keep their features and labels as
tensors and are batched by index slicing; a user ``DataLoader`` can stand in for a
split when the data does not fit in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import DataError

__all__ = ["Split", "Data", "from_arrays", "split_off", "validate_data"]


@dataclass
class Split:
    """One split of a dataset: tensors ``x`` (N, *input_shape) and ``y`` (N,), or a DataLoader."""

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    loader: DataLoader | None = None

    def __post_init__(self) -> None:
        if self.loader is None and (self.x is None or self.y is None):
            raise DataError("a split needs tensors x and y, or a DataLoader")

    @property
    def in_memory(self) -> bool:
        return self.loader is None

    def __len__(self) -> int:
        if self.x is not None:
            return int(self.x.shape[0])
        return len(self.loader.dataset)  # type: ignore[union-attr, arg-type]

    def batches(self, batch_size: int = 1000, device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate ``(x, y)`` in order (for evaluation)."""
        if self.x is not None:
            for start in range(0, len(self), batch_size):
                xb, yb = self.x[start : start + batch_size], self.y[start : start + batch_size]  # type: ignore[index]
                yield (xb.to(device), yb.to(device)) if device is not None else (xb, yb)
        else:
            for xb, yb in self.loader:  # type: ignore[union-attr]
                yield (xb.to(device), yb.to(device)) if device is not None else (xb, yb)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All of the split as two tensors (a loader is read once)."""
        if self.x is not None:
            return self.x, self.y  # type: ignore[return-value]
        xs, ys = zip(*self.batches())
        return torch.cat(xs), torch.cat(ys)


@dataclass
class Data:
    """A classification dataset split into train / val / test.

    Attributes:
        train, val, test: :class:`Split` (``val`` may be ``None``).
        num_classes: C; labels are integers in ``0..C-1``.
        input_shape: shape of one example, e.g. ``(1, 40)`` for MNIST-1D.
        name: registry name or a label.
        split_seed: seed of the train/val(/test) split (recorded in every run).
        info: JSON-able provenance (generator arguments, file path, ...).
        held_out: test examples of classes removed from every split (with their original
            labels), the out-of-distribution set of :func:`ensemblekit.data.ood.hold_out_classes`.
        key: a name for data whose contents cannot be hashed (a DataLoader over a dataset
            that is not a ``TensorDataset``): cached results (compare cells, presets' units)
            are keyed by it; change it whenever the data changes.
    """

    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    val: Split | None = None
    name: str = "data"
    split_seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    held_out: Split | None = None
    key: str | None = None
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def digest(self) -> str:
        """A hash of the splits' contents (features, labels, class count): results computed
        from this data are reused only for data with the same digest.

        A split given as a DataLoader over a ``TensorDataset`` is hashed by its tensors and the
        loader's batching (batch size, sampler, ``drop_last``); any other loader cannot be
        hashed without reading it, so it is keyed by :attr:`key`.

        Raises:
            DataError: a split is a DataLoader that cannot be hashed and no ``key`` names the data.
        """
        if self._digest is None:
            from ..hashing import spec_hash

            parts: list[Any] = [self.num_classes, list(self.input_shape), self.key]
            for name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
                parts.append(None if split is None else _split_digest(split, name, self.key))
            self._digest = spec_hash(parts)
        return self._digest

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "sizes": {k: (len(s) if s is not None else 0) for k, s in (("train", self.train), ("val", self.val), ("test", self.test))},
            "split_seed": self.split_seed,
            **({"key": self.key} if self.key is not None else {}),
            **({"info": self.info} if self.info else {}),
        }

    def __repr__(self) -> str:
        d = self.describe()
        return f"Data({self.name!r}, C={self.num_classes}, input_shape={self.input_shape}, sizes={d['sizes']})"


def _split_digest(split: Split, name: str, key: str | None) -> Any:
    """What keys one split: its tensors' hash, a TensorDataset loader's tensors and batching,
    or (any other loader) its size under the data's ``key``."""
    from torch.utils.data import TensorDataset

    from ..hashing import tensor_digest

    if split.in_memory:
        return tensor_digest(split.x, split.y)
    loader = split.loader
    batching = {"batch_size": loader.batch_size, "drop_last": loader.drop_last, "sampler": type(loader.sampler).__name__}  # type: ignore[union-attr]
    if isinstance(loader.dataset, TensorDataset):  # type: ignore[union-attr]
        return {"tensors": tensor_digest(*loader.dataset.tensors), **batching}  # type: ignore[union-attr]
    if key is None:
        raise DataError(f"the {name} split is a DataLoader over {type(loader.dataset).__name__}, whose contents cannot be hashed "  # type: ignore[union-attr]
                        "without reading it, so cached results could be reused for other data of its size; name the data "
                        "(from_loaders(..., key='my-data-v1') or Data(..., key=...)) to cache under that name")
    return {"loader": len(split), **batching}


def _numeric_array(a: Any, name: str) -> Any:
    """``a`` as something torch can hold, refusing strings, objects and other non-numbers by name."""
    if isinstance(a, torch.Tensor):
        return a
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be numeric, got numpy dtype {arr.dtype} ({arr.dtype.kind!r}: strings, objects or dates)")
    return arr


def _as_features(a: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(_numeric_array(a, name))
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise DataError(f"{name} must be numeric, got dtype {t.dtype}")
    return t.to(torch.float32)


def _as_labels(a: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(_numeric_array(a, name))
    if t.dim() != 1:
        raise DataError(f"{name} must be a 1-D vector of class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            raise DataError(f"{name} must hold integer class indices, got non-integer values")
    elif t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.numel() and int(t.min()) < 0:
        raise DataError(f"{name}: labels must be in 0..C-1, found a negative value {int(t.min())}")
    return t.to(torch.int64)


def _check_split(x: torch.Tensor, y: torch.Tensor, split: str, num_classes: int, input_shape: tuple[int, ...]) -> None:
    if x.shape[0] == 0:
        raise DataError(f"the {split} split is empty")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{split}: x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{split}: examples have shape {tuple(x.shape[1:])}, expected {tuple(input_shape)} like the train split")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
        raise DataError(f"{split}: {bad} example(s) have NaN or infinite features")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{split}: labels must be in 0..{num_classes - 1}, found values from {lo} to {hi}")


def validate_data(data: Data) -> Data:
    """Check every in-memory split (lengths, labels in range, finite features, non-empty).

    Raises:
        DataError: the first problem found, in one line.
    """
    if data.num_classes < 2:
        raise DataError(f"need at least 2 classes, got num_classes={data.num_classes}")
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if split is None:
            continue
        if split.in_memory:
            _check_split(split.x, split.y, split_name, data.num_classes, data.input_shape)  # type: ignore[arg-type]
        else:
            xb, yb = next(iter(split.loader))  # type: ignore[arg-type]
            _check_split(torch.as_tensor(xb).float(), _as_labels(yb, f"{split_name} labels"), split_name, data.num_classes, data.input_shape)
    return data


def split_off(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split ``(x, y)`` into ``(rest, part)`` with ``part`` a seeded random ``fraction``."""
    n = x.shape[0]
    k = int(math.floor(n * fraction + 0.5))
    if k <= 0 or k >= n:
        raise DataError(f"a fraction of {fraction} of {n} examples leaves an empty split")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    part, rest = perm[:k].sort().values, perm[k:].sort().values
    return (x[rest], y[rest]), (x[part], y[part])


def from_arrays(
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    x_val: Any = None,
    y_val: Any = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    num_classes: int | None = None,
    seed: int = 0,
    name: str = "arrays",
    info: dict[str, Any] | None = None,
) -> Data:
    """Build a validated :class:`Data` from tensors or numpy arrays.

    Args:
        x, y: training features ``(N, *input_shape)`` and integer labels ``(N,)``.
        x_test, y_test: a test split; when absent, ``test_fraction`` of ``x`` is held out.
        x_val, y_val: a validation split; when absent, ``val_fraction`` of the training
            data is held out (``0`` for none).
        val_fraction, test_fraction: in [0, 1) (default 0.1 and 0.2).
        num_classes: C; inferred as ``max label + 1`` over all splits when omitted.
        seed: seed of the random held-out splits (recorded as ``split_seed``).
        name: a label for reports.

    Raises:
        DataError: mismatched lengths, labels outside ``0..C-1``, NaN/inf features,
            an empty split, inconsistent example shapes.

    Example:
        >>> data = from_arrays(np.random.randn(100, 5), np.arange(100) % 3)
        >>> data.num_classes, data.input_shape
        (3, (5,))
    """
    for frac, label in ((val_fraction, "val_fraction"), (test_fraction, "test_fraction")):
        if not 0.0 <= float(frac) < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {frac}")
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither")
    if (x_val is None) != (y_val is None):
        raise DataError("give both x_val and y_val, or neither")
    xt, yt = _as_features(x, "x"), _as_labels(y, "y")
    if xt.dim() < 2:
        raise DataError(f"x must have shape (N, *input_shape), got {tuple(xt.shape)}")
    if xt.shape[0] != yt.shape[0]:
        raise DataError(f"train: x has {xt.shape[0]} examples but y has {yt.shape[0]} labels")
    if xt.shape[0] == 0:
        raise DataError("the train split is empty")
    if x_test is not None:
        test = (_as_features(x_test, "x_test"), _as_labels(y_test, "y_test"))
    else:
        if test_fraction == 0:
            raise DataError("no test split: give x_test/y_test or a test_fraction > 0")
        (xt, yt), test = split_off(xt, yt, test_fraction, seed)
    if x_val is not None:
        val: tuple[torch.Tensor, torch.Tensor] | None = (_as_features(x_val, "x_val"), _as_labels(y_val, "y_val"))
    elif val_fraction > 0:
        (xt, yt), val = split_off(xt, yt, val_fraction, seed + 1)
    else:
        val = None
    labels = [yt, test[1]] + ([val[1]] if val is not None else [])
    if num_classes is None:
        num_classes = int(max(int(t.max()) for t in labels if t.numel())) + 1
        present = int(torch.unique(torch.cat(labels)).numel())
        if num_classes > max(1000, 10 * present):  # a stray label, not a class count: do not allocate for it
            raise DataError(f"labels go up to {num_classes - 1} but only {present} distinct values occur; relabel them to "
                            f"0..{present - 1} (e.g. np.unique(y, return_inverse=True)) or give num_classes explicitly")
    data = Data(
        train=Split(xt, yt),
        test=Split(*test),
        val=Split(*val) if val is not None else None,
        num_classes=int(num_classes),
        input_shape=tuple(int(s) for s in xt.shape[1:]),
        name=name,
        split_seed=int(seed),
        info=dict(info or {}),
    )
    return validate_data(data)
