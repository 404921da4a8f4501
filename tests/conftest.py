"""Shared fixtures: tiny synthetic data and small models so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ensemblekit as ek

# The command line chooses its thread count from the cores free when it starts (see
# ensemblekit.threads); under a test suite that keeps cores busy that choice would vary
# between runs that must give identical numbers, so tests (and the processes they start)
# use torch's count unless a test says otherwise.
os.environ.setdefault("ENSEMBLEKIT_THREADS", str(torch.get_num_threads()))


@pytest.fixture
def blobs() -> ek.Data:
    """A 3-class Gaussian-blob problem: 240 train / 60 val / 90 test, 8 features."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2.0, size=(3, 8))
    y = np.arange(390) % 3
    x = centers[y] + rng.normal(0, 1.0, size=(390, 8))
    return ek.from_arrays(x[:300], y[:300], x[300:], y[300:], val_fraction=0.2, seed=0, name="blobs")


@pytest.fixture
def tiny_mlp():
    """Factory spec of a small MLP with BatchNorm and dropout (exercises buffers and randomness)."""
    return {"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True, "dropout": 0.1}}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(1234)
    yield


@pytest.fixture
def cli():
    """Run the ``ensemblekit`` command line in this process; returns its exit code."""
    from ensemblekit.cli import main

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        return exc.value.code

    return run
