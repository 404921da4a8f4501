"""Tabular data from a ``.csv`` file: one example per row, the target in named columns.

The file has a header line naming its columns; every other cell is a number. ``target``
names the target column (or columns: multi-output regression); every other column is a
feature. The task is stated (``task``) or inferred from the targets as for arrays
(:func:`~ensemblekit.data.dataset.from_arrays`): every cell of a csv is a number, so targets
with a fractional value are regression, and whole-number targets need the task stated
(``task: classification`` for class labels). Parsing uses the standard library's ``csv`` module (no code runs, no
pandas); a cell that is not a number is a one-line error naming its line and column.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import Data, from_arrays

__all__ = ["load_csv"]


def _read(path: str) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header line and at least one example")
    header = [c.strip() for c in rows[0]]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: the header names a column twice ({', '.join(header)})")
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {i} has {len(row)} values, the header names {len(header)} columns")
        for j, cell in enumerate(row):
            try:
                values[i - 2, j] = float(cell)
            except ValueError:
                raise DataError(f"{path}: line {i}, column {header[j]!r}: {cell.strip()!r} is not a number") from None
    return header, values


def load_csv(path: str | os.PathLike[str], *, target: str | Sequence[str] | None = None, val_fraction: float = 0.1,
             test_fraction: float = 0.2, seed: int = 0, num_classes: int | None = None, task: str | None = None) -> Data:
    """Load a ``.csv`` of examples (see the module docstring) and split it like :func:`~ensemblekit.data.registry.load_npz`.

    Args:
        path: the file.
        target: the target column's name, or a list of names (D regression targets);
            default: the last column.
        val_fraction, test_fraction, seed: the random split.
        num_classes, task: as for :func:`~ensemblekit.data.dataset.from_arrays`.

    Raises:
        DataError: a missing file, no header or no rows, a non-numeric or NaN cell is reported
            by line and column (NaN targets by the target checks), a row of the wrong width.
        ConfigError: a target column the header does not name, or no feature column left.

    Example:
        >>> data = load_csv("houses.csv", target="price", task="regression")
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"csv file not found: {path}")
    header, values = _read(path)
    names = [header[-1]] if target is None else [target] if isinstance(target, str) else list(target)
    missing = [n for n in names if n not in header]
    if missing or not names:
        raise ConfigError(f"{path}: no target column {missing[0] if missing else ''!r}; the columns are {', '.join(header)}")
    cols = [header.index(n) for n in names]
    features = [j for j in range(len(header)) if j not in cols]
    if not features:
        raise ConfigError(f"{path}: every column is a target; at least one feature column is needed")
    x = values[:, features].astype(np.float32)
    y = values[:, cols[0]] if len(cols) == 1 else values[:, cols]  # float: from_arrays infers or checks the task
    if task == "classification" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return from_arrays(x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, num_classes=num_classes,
                       task=task, name=os.path.splitext(os.path.basename(path))[0],
                       info={"csv": os.path.abspath(path), "target": names, "features": [header[j] for j in features]})
