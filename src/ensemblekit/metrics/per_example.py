"""Per-example test losses: what a test-set bootstrap resamples.

A comparison with a single seed has no spread over seeds, so the confidence of a cell and of
the difference between two methods comes from resampling the test examples (Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993). Each results row saves its test
predictive's per-example losses beside it (``test_examples.safetensors``); the tables
recompute every bootstrapped metric from them with :data:`STATISTICS`, so a resampled value
is exactly the table's value on the full set.

Classification: ``error`` (0/1 of the pooled class), ``nll`` (``-log max(p_y, 1e-12)``, as
:func:`~ensemblekit.metrics.classification.nll`), ``confidence`` (the pooled maximum
probability; with ``error`` it gives the 15-bin ECE). Regression: ``squared_error`` (of the
mixture's mean, averaged over outputs), ``nll`` (the mixture's) and ``crps``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .predictive import Categorical, Gaussian

__all__ = ["FILE", "per_example_losses", "save_per_example", "load_per_example", "STATISTICS", "binned_ece", "columns"]

#: The file a row's per-example test losses are saved in, inside its run folder.
FILE = "test_examples.safetensors"


def per_example_losses(pd: Categorical | Gaussian, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-example test losses of a predictive ``(N,)`` each, float64 (see the module docstring)."""
    if isinstance(pd, Gaussian):
        from .regression import crps_mixture, mixture_nll

        mean, _ = pd.pooled()
        se = (mean.double() - y.double()).square()
        se = se.flatten(1).mean(-1) if se.dim() > 1 else se
        return {"squared_error": se, "nll": mixture_nll(pd, y, reduction="none").double().reshape(-1),
                "crps": crps_mixture(pd, y, reduction="none").double().reshape(-1)}
    p = pd.pooled().double()
    conf, cls = p.max(-1)
    p_y = p.gather(-1, y.long().view(-1, 1)).squeeze(-1)
    return {"error": (cls != y).double(), "nll": -p_y.clamp_min(1e-12).log(), "confidence": conf}


def save_per_example(folder: str, pd: Categorical | Gaussian, y: torch.Tensor) -> None:
    """Write :data:`FILE` into ``folder`` (atomically: a temporary file renamed into place)."""
    from safetensors.torch import save_file

    losses = {k: v.detach().cpu().contiguous() for k, v in per_example_losses(pd, y).items()}
    path = os.path.join(folder, FILE)
    tmp = path + ".tmp.safetensors"
    save_file(losses, tmp)
    os.replace(tmp, path)


def load_per_example(folder: str) -> dict[str, np.ndarray] | None:
    """The per-example losses saved in ``folder`` (tensors only: nothing is imported or run), or None."""
    from safetensors.numpy import load_file

    path = os.path.join(folder, FILE)
    return load_file(path) if os.path.exists(path) else None


def binned_ece(confidence: np.ndarray, error: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE from per-example confidence and 0/1 error, bins ``(k/n, (k+1)/n]`` (as
    :func:`~ensemblekit.metrics.classification.ece`)."""
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    acc = np.bincount(bins, weights=1.0 - error, minlength=n_bins)
    conf = np.bincount(bins, weights=confidence, minlength=n_bins)
    return float(np.abs(acc - conf).sum() / max(1, len(confidence)))


#: Table metric -> (the per-example columns it needs, the statistic of an ``(N, k)`` array of them).
STATISTICS: Mapping[str, tuple[tuple[str, ...], Callable[[np.ndarray], float]]] = {
    "error": (("error",), lambda a: 100.0 * float(a[:, 0].mean())),
    "nll": (("nll",), lambda a: float(a[:, 0].mean())),
    "ece": (("confidence", "error"), lambda a: 100.0 * binned_ece(a[:, 0], a[:, 1])),
    "rmse": (("squared_error",), lambda a: float(np.sqrt(a[:, 0].mean()))),
    "crps": (("crps",), lambda a: float(a[:, 0].mean())),
}


def columns(losses: Mapping[str, Any], metric: str) -> np.ndarray | None:
    """The ``(N, k)`` array :data:`STATISTICS` ``[metric]`` reads, or None when a column is missing."""
    need = STATISTICS[metric][0]
    if any(k not in losses for k in need):
        return None
    return np.stack([np.asarray(losses[k], dtype=np.float64) for k in need], axis=1)
