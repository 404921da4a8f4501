"""In-memory datasets: splits of tensors, validated before any training.

A :class:`Data` holds ``train``, optional ``val`` and ``test`` splits, its task
(classification, or regression as in Lakshminarayanan et al., "Simple and Scalable
Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017), the number of
classes or outputs and the shape of one example. Splits keep their features and labels as
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

from ..errors import ConfigError, DataError
from .targets import as_features, as_targets, check_task, infer_task, numeric_array

__all__ = ["Split", "Data", "from_arrays", "split_off", "validate_data"]


@dataclass
class Split:
    """One split of a dataset: tensors ``x`` (N, *input_shape) and ``y``, or a DataLoader.

    ``y`` is int64 class indices ``(N,)`` for classification, float32 targets ``(N,)`` or
    ``(N, D)`` for regression; batches and :meth:`tensors` keep its dtype and shape.
    """

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
    """A classification or regression dataset split into train / val / test.

    Attributes:
        train, val, test: :class:`Split` (``val`` may be ``None``).
        num_classes: C; labels are integers in ``0..C-1``. Not meaningful for regression,
            where it is ``0`` by convention (use :attr:`num_outputs`).
        input_shape: shape of one example, e.g. ``(1, 40)`` for MNIST-1D.
        name: registry name or a label.
        split_seed: seed of the train/val(/test) split (recorded in every run).
        info: JSON-able provenance (generator arguments, file path, ...).
        held_out: test examples of classes removed from every split (with their original
            labels), the out-of-distribution set of :func:`ensemblekit.data.ood.hold_out_classes`.
        key: a name for data whose contents cannot be hashed (a DataLoader over a dataset
            that is not a ``TensorDataset``): cached results (compare cells, presets' units)
            are keyed by it; change it whenever the data changes.
        task: ``"classification"`` (default) or ``"regression"``.
        target_shape: shape of one target: ``()`` for classification and for regression
            targets ``(N,)``, ``(D,)`` for regression targets ``(N, D)``.
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
    task: str = "classification"
    target_shape: tuple[int, ...] = ()
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_outputs(self) -> int:
        """Values predicted per example: C for classification, D for regression (1 for targets ``(N,)``)."""
        if self.task == "regression":
            return int(np.prod(self.target_shape)) if self.target_shape else 1
        return int(self.num_classes)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    def digest(self) -> str:
        """A hash of the splits' contents (features, labels, class count): results computed
        from this data are reused only for data with the same digest.

        The task and target shape are hashed only for regression, so that the digest of
        every classification dataset (and the cache keys built on it) is what it was before
        regression existed.

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
            if self.task != "classification":
                parts.append({"task": self.task, "target_shape": list(self.target_shape)})
            self._digest = spec_hash(parts)
        return self._digest

    def describe(self) -> dict[str, Any]:
        kind: dict[str, Any] = ({"num_classes": self.num_classes} if self.task == "classification" else
                                {"task": self.task, "num_outputs": self.num_outputs, "target_shape": list(self.target_shape)})
        return {
            "name": self.name,
            **kind,
            "input_shape": list(self.input_shape),
            "sizes": {k: (len(s) if s is not None else 0) for k, s in (("train", self.train), ("val", self.val), ("test", self.test))},
            "split_seed": self.split_seed,
            **({"key": self.key} if self.key is not None else {}),
            **({"info": self.info} if self.info else {}),
        }

    def __repr__(self) -> str:
        d = self.describe()
        kind = f"C={self.num_classes}" if self.task == "classification" else f"{self.task}, D={self.num_outputs}"
        return f"Data({self.name!r}, {kind}, input_shape={self.input_shape}, sizes={d['sizes']})"


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


def _check_split(x: torch.Tensor, y: torch.Tensor, split: str, data: Data) -> None:
    num_classes, input_shape = data.num_classes, data.input_shape
    if x.shape[0] == 0:
        raise DataError(f"the {split} split is empty")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{split}: x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{split}: examples have shape {tuple(x.shape[1:])}, expected {tuple(input_shape)} like the train split")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
        raise DataError(f"{split}: {bad} example(s) have NaN or infinite features")
    if data.task == "regression":
        if not y.is_floating_point():
            raise DataError(f"{split}: regression targets must be floating point, got dtype {y.dtype}")
        if tuple(y.shape[1:]) != tuple(data.target_shape):
            raise DataError(f"{split}: targets have shape {tuple(y.shape[1:])} per example, expected {tuple(data.target_shape)}")
        if not torch.isfinite(y).all():
            raise DataError(f"{split}: {int((~torch.isfinite(y)).sum())} regression target value(s) are NaN or infinite")
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{split}: labels must be in 0..{num_classes - 1}, found values from {lo} to {hi}")


def validate_data(data: Data) -> Data:
    """Check every in-memory split (lengths, labels in range or finite float targets, finite features, non-empty).

    A DataLoader split is checked on its first batch.

    Raises:
        ConfigError: an unknown task, or a class count given for regression data.
        DataError: the first problem found, in one line.
    """
    check_task(data.task)
    if data.task == "regression":
        if data.num_classes != 0:
            raise ConfigError(f"num_classes is not meaningful for regression data (num_outputs is D), got num_classes={data.num_classes}; leave it 0")
        if len(data.target_shape) > 1:
            raise DataError(f"regression targets must have shape (N,) or (N, D), got target_shape {tuple(data.target_shape)} per example")
        if len(data.train) < 2:
            raise DataError(f"regression needs at least 2 training examples (to estimate the target scale), got {len(data.train)}")
    elif data.num_classes < 2:
        raise DataError(f"need at least 2 classes, got num_classes={data.num_classes}")
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name)
        if split is None:
            continue
        if split.in_memory:
            _check_split(split.x, split.y, split_name, data)  # type: ignore[arg-type]
        else:
            xb, yb = next(iter(split.loader))  # type: ignore[arg-type]
            _check_split(torch.as_tensor(xb).float(), as_targets(yb, f"{split_name} targets", data.task), split_name, data)
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
    task: str | None = None,
    seed: int = 0,
    name: str = "arrays",
    info: dict[str, Any] | None = None,
) -> Data:
    """Build a validated :class:`Data` from tensors or numpy arrays.

    Args:
        x, y: training features ``(N, *input_shape)`` and targets: integer labels ``(N,)``
            for classification, real values ``(N,)`` or ``(N, D)`` for regression.
        x_test, y_test: a test split; when absent, ``test_fraction`` of ``x`` is held out.
        x_val, y_val: a validation split; when absent, ``val_fraction`` of the training
            data is held out (``0`` for none).
        val_fraction, test_fraction: in [0, 1) (default 0.1 and 0.2).
        num_classes: C; inferred as ``max label + 1`` over all splits when omitted.
            Classification only.
        task: ``"classification"``, ``"regression"`` or ``None`` (default): inferred from the
            targets where unambiguous (integer ``y`` -> classification, floats with a
            non-whole value -> regression; whole-valued floats are refused:
            :func:`~ensemblekit.data.targets.infer_task`).
        seed: seed of the random held-out splits (recorded as ``split_seed``).
        name: a label for reports.

    Returns:
        Data; for regression ``num_classes`` is 0, targets are float32 and
        ``target_shape`` is ``()`` or ``(D,)``.

    Raises:
        ConfigError: an unknown task, or ``num_classes`` given for regression.
        DataError: mismatched lengths, labels outside ``0..C-1``, non-integer labels for
            classification, NaN/inf features or targets, targets of the wrong shape, an
            empty split, inconsistent example shapes, an ambiguous task.

    Example:
        >>> data = from_arrays(np.random.randn(100, 5), np.arange(100) % 3)
        >>> data.num_classes, data.input_shape
        (3, (5,))
        >>> from_arrays(np.random.randn(100, 5), np.random.randn(100)).task
        'regression'
    """
    for frac, label in ((val_fraction, "val_fraction"), (test_fraction, "test_fraction")):
        if not 0.0 <= float(frac) < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {frac}")
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither")
    if (x_val is None) != (y_val is None):
        raise DataError("give both x_val and y_val, or neither")
    if task is not None:
        check_task(task)
    xt, y_raw = as_features(x, "x"), torch.as_tensor(numeric_array(y, "y"))
    if xt.dim() < 2:
        raise DataError(f"x must have shape (N, *input_shape), got {tuple(xt.shape)}")
    if y_raw.dim() == 0 or xt.shape[0] != y_raw.shape[0]:
        raise DataError(f"train: x has {xt.shape[0]} examples but y has {y_raw.shape[0] if y_raw.dim() else 0} labels")
    if xt.shape[0] == 0:
        raise DataError("the train split is empty")
    if task is None:
        task = infer_task(y_raw, ("y_test", y_test), ("y_val", y_val))
    if task == "regression" and num_classes is not None:
        raise ConfigError(f"num_classes is not meaningful for regression data (num_outputs is D), got num_classes={num_classes}")
    yt = as_targets(y_raw, "y", task)
    if x_test is not None:
        test = (as_features(x_test, "x_test"), as_targets(y_test, "y_test", task))
    else:
        if test_fraction == 0:
            raise DataError("no test split: give x_test/y_test or a test_fraction > 0")
        (xt, yt), test = split_off(xt, yt, test_fraction, seed)
    if x_val is not None:
        val: tuple[torch.Tensor, torch.Tensor] | None = (as_features(x_val, "x_val"), as_targets(y_val, "y_val", task))
    elif val_fraction > 0:
        (xt, yt), val = split_off(xt, yt, val_fraction, seed + 1)
    else:
        val = None
    labels = [yt, test[1]] + ([val[1]] if val is not None else [])
    if task == "regression":
        num_classes = 0
    elif num_classes is None:
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
        task=task,
        target_shape=tuple(int(s) for s in yt.shape[1:]) if task == "regression" else (),
    )
    return validate_data(data)
