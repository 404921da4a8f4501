"""Repeated random splits: the protocol of the UCI regression benchmarks.

Hernández-Lobato & Adams ("Probabilistic Backpropagation for Scalable Learning of Bayesian
Neural Networks", ICML 2015) and Lakshminarayanan, Pritzel & Blundell ("Simple and Scalable
Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017, Table 1) report each
method as the mean ± std over 20 random 90/10 train/test splits of one dataset. A small test
set (44 examples of diabetes) makes one split's numbers noisy; averaging over splits is what
makes a table of them readable. :func:`resplit` gives the k-th of those splits; ``compare``
runs every split x seed as its own cell (``data.splits: K``, ``data.split_fraction``).
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ConfigError, DataError
from ..seeding import derive_seed
from .dataset import Data, Split, validate_data

__all__ = ["resplit"]


def _pool(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [s for s in (data.train, data.val, data.test) if s is not None]
    for name, s in zip(("train", "val", "test"), parts):
        if not s.in_memory:
            raise DataError(f"repeated splits need in-memory data; the {name} split of {data.name!r} is a DataLoader")
    return torch.cat([s.x for s in parts]), torch.cat([s.y for s in parts])  # type: ignore[misc]


def resplit(data: Data, index: int, test_fraction: float = 0.1, seed: int = 0) -> Data:
    """The ``index``-th random train/test split of all of ``data``'s labelled examples.

    Train, validation and test examples are pooled and permuted by a generator seeded from
    ``(seed, "split", index)``; the first ``round(test_fraction * N)`` become the test split,
    and of the rest the same share as in ``data`` (``len(val) / (len(train) + len(val))``)
    the validation split. Held-out (OOD) examples are kept as they are. Split 0 is a split
    like any other, not ``data``'s own.

    Args:
        data: in-memory data (any task).
        index: which split (>= 0); the same index gives the same split.
        test_fraction: the test share in (0, 1) (default 0.1: the 90/10 protocol).
        seed: the protocol's seed (default 0).

    Returns:
        The re-split data (``info["split"]`` records index, fraction and seed), validated.

    Raises:
        ConfigError: a bad index or fraction. DataError: DataLoader splits, or too few
            examples for a non-empty train and test split.

    Example:
        >>> parts = [resplit(load_dataset("diabetes"), k) for k in range(20)]  # the 20 splits of the protocol
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"split index must be an int >= 0, got {index!r}")
    if not 0 < float(test_fraction) < 1:
        raise ConfigError(f"split_fraction must be in (0, 1), got {test_fraction!r}")
    x, y = _pool(data)
    n = int(x.shape[0])
    n_test = int(round(test_fraction * n))
    n_val_share = len(data.val) / (len(data.train) + len(data.val)) if data.val is not None else 0.0
    n_val = int(round(n_val_share * (n - n_test)))
    if n_test < 1 or n - n_test - n_val < 2:
        raise DataError(f"{data.name!r}: {n} examples are too few for a {test_fraction:g} test split")
    g = torch.Generator().manual_seed(derive_seed(seed, "split", index) % (2**63))
    perm = torch.randperm(n, generator=g)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    out = dataclasses.replace(
        data, train=Split(x[train], y[train]), val=Split(x[val], y[val]) if n_val else None, test=Split(x[test], y[test]),
        info={**data.info, "split": {"index": index, "test_fraction": float(test_fraction), "seed": int(seed)}},
    )
    return validate_data(out)
