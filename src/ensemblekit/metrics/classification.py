"""Classification metrics on predicted probabilities: accuracy, NLL, Brier, ECE.

Every metric takes ``probs`` of shape ``(..., B, C)`` and labels ``y`` of shape ``(B,)``
and returns a tensor of shape ``(...)``: per-member values on an ensemble's
``(M, B, C)`` and a 0-d tensor on one distribution's ``(B, C)``. Inputs may live on any
device; results are float64 tensors on that device (float32 on MPS, which has no
float64). The ensemble's predictive distribution is the mean of the members'
probabilities (:func:`ensemble_mean`), never an average of logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = ["accuracy", "nll", "brier", "ece", "reliability", "ensemble_mean"]


# --------------------------------------------------------------------------- checks
# Shared by diversity.py and summary.py; private to the metrics package.

def f64(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 (float32 on MPS, which has no float64)."""
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    return x.to(dtype)


def float_tensor(value: Any, name: str, what: str) -> torch.Tensor:
    """``value`` (a tensor or anything NumPy reads) as a floating tensor, or a DataError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value))
        except Exception as exc:  # noqa: BLE001 - any conversion failure is bad data
            raise DataError(f"`{name}` must be a tensor or array{what}, got {type(value).__name__}") from exc
    if not value.is_floating_point():
        raise DataError(f"`{name}` must be a floating-point tensor{what}, got dtype {value.dtype}")
    return value


def check_probs(probs: Any, *, ndim: int | None = None, name: str = "probs") -> torch.Tensor:
    """``probs`` as a floating tensor of shape ``(..., B, C)`` (exactly ``ndim``-D if given)."""
    probs = float_tensor(probs, name, " of probabilities")
    if ndim is not None and probs.dim() != ndim:
        expected = {2: "(B, C)", 3: "(M, B, C)"}.get(ndim, f"{ndim}-D")
        raise DataError(f"`{name}` must have shape {expected}, got shape {tuple(probs.shape)}")
    if probs.dim() < 2:
        raise DataError(f"`{name}` must have shape (..., B, C) with at least 2 dimensions, got shape {tuple(probs.shape)}")
    if probs.shape[-2] == 0 or probs.shape[-1] == 0:
        raise DataError(f"`{name}` must hold at least one example and one class, got shape {tuple(probs.shape)}")
    if ndim == 3 and probs.shape[0] == 0:
        raise DataError(f"`{name}` must hold at least one member, got shape {tuple(probs.shape)}")
    return probs


def check_labels(y: Any, probs: torch.Tensor, *, name: str = "y") -> torch.Tensor:
    """``y`` as int64 class indices of shape ``(B,)`` in ``[0, C)`` on ``probs``' device."""
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(np.asarray(y))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"`{name}` must be a tensor or array of class indices, got {type(y).__name__}") from exc
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"`{name}` must be an integer tensor of class indices, got dtype {y.dtype}")
    num_examples, num_classes = probs.shape[-2], probs.shape[-1]
    if y.dim() != 1 or y.shape[0] != num_examples:
        raise DataError(
            f"`{name}` must have shape (B,) = ({num_examples},) to match `probs` of shape "
            f"{tuple(probs.shape)}, got shape {tuple(y.shape)}"
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"`{name}` must hold class indices in [0, {num_classes - 1}] (C = {num_classes}), got values in [{lo}, {hi}]"
        )
    return y.to(device=probs.device, dtype=torch.int64)


def check_values(probs: torch.Tensor, *, name: str = "probs", atol: float = 1e-3) -> None:
    """Raise unless ``probs`` are finite, in [0, 1] and sum to 1 over the last axis."""
    lo, hi = (float(v) for v in torch.aminmax(probs.detach()))  # NaN propagates into min/max
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"`{name}` must be finite, got NaN or infinite values")
    sums = probs.detach().sum(-1, dtype=f64(probs).dtype)
    slo, shi = (float(v) for v in torch.aminmax(sums))
    if lo < -atol or hi > 1 + atol or slo < 1 - atol or shi > 1 + atol:
        raise DataError(
            f"`{name}` must be probabilities in [0, 1] summing to 1 over classes (tolerance {atol}); got values "
            f"in [{lo:.4g}, {hi:.4g}] and sums in [{slo:.4g}, {shi:.4g}] (pass softmax(logits), not logits)"
        )


def check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"`n_bins` must be an integer >= 1, got {n_bins!r}")
    return int(n_bins)


def check_eps(eps: Any) -> float:
    if not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ConfigError(f"`eps` must be a number in (0, 1), got {eps!r}")
    return float(eps)


def _onehot_labels(y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``y`` broadcast to ``probs.shape[:-1] + (1,)`` for ``gather`` on the class axis."""
    return y.view(*([1] * (probs.dim() - 2)), -1, 1).expand(*probs.shape[:-1], 1)


# --------------------------------------------------------------------------- metrics

def ensemble_mean(probs: torch.Tensor) -> torch.Tensor:
    """The ensemble's predictive distribution: the mean of members' probabilities.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``.

    Returns:
        ``(B, C)`` tensor in the dtype of ``probs`` (accumulated in float64).

    Raises:
        DataError: ``probs`` is not a 3-D floating tensor.

    Example:
        >>> ensemble_mean(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
        tensor([[0.5000, 0.5000]])
    """
    probs = check_probs(probs, ndim=3)
    return f64(probs).mean(0).to(probs.dtype)


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of examples whose argmax class equals the label (ties: lowest index).

    Args:
        probs: probabilities (or any scores), shape ``(..., B, C)``.
        y: int64 labels, shape ``(B,)``, values in ``[0, C)``.

    Returns:
        Accuracy in [0, 1], shape ``(...)``.

    Raises:
        DataError: bad shapes, dtypes or labels out of range.
    """
    probs = check_probs(probs)
    y = check_labels(y, probs)
    return (probs.argmax(-1) == y).to(f64(probs).dtype).mean(-1)


def nll(probs: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean negative log-likelihood ``mean_b -log max(p_b[y_b], eps)`` (natural log).

    Args:
        probs: probabilities, shape ``(..., B, C)``.
        y: int64 labels, shape ``(B,)``.
        eps: floor on the probability of the true class (default 1e-12, in (0, 1)),
            so that a confident mistake costs ``-log(eps) ~ 27.6`` instead of inf.

    Returns:
        NLL >= 0, shape ``(...)``.

    Raises:
        DataError: bad shapes, dtypes or labels out of range.
        ConfigError: ``eps`` outside (0, 1).
    """
    eps = check_eps(eps)
    probs = check_probs(probs)
    y = check_labels(y, probs)
    p_true = f64(probs.gather(-1, _onehot_labels(y, probs)).squeeze(-1))
    return -p_true.clamp_min(eps).log().mean(-1)


def brier(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Brier score ``mean_b sum_c (p_bc - onehot(y_b)_c)^2``.

    Convention: summed over classes and averaged over examples (Brier 1950's original
    multi-class form), so it lies in [0, 2]; it is *not* divided by ``C`` as in some
    libraries (``sklearn.metrics.brier_score_loss`` is binary only).

    Args:
        probs: probabilities, shape ``(..., B, C)``.
        y: int64 labels, shape ``(B,)``.

    Returns:
        Brier score, shape ``(...)``.

    Raises:
        DataError: bad shapes, dtypes or labels out of range.
    """
    probs = check_probs(probs)
    y = check_labels(y, probs)
    p_true = f64(probs.gather(-1, _onehot_labels(y, probs)).squeeze(-1))
    # sum_c (p_c - 1[c=y])^2 = sum_c p_c^2 - 2 p_y + 1, without materialising a one-hot;
    # the squares keep the input's precision, their sum is accumulated in float64.
    sq = probs.square().sum(-1, dtype=p_true.dtype)
    return (sq - 2 * p_true + 1).mean(-1)


def _bin_stats(probs: torch.Tensor, y: torch.Tensor, n_bins: int):
    """Per-bin count, summed confidence and summed correctness, each ``(..., n_bins)``."""
    conf, pred = probs.max(-1)
    # Bin in the input's own precision, so that a float32 0.8 lands in (0.6, 0.8] and not
    # in (0.8, 1.0] as its float64 image 0.800000012 would.
    bin_dtype = torch.promote_types(conf.dtype, torch.float32)
    inner = (torch.arange(1, n_bins, dtype=torch.float64, device=probs.device) / n_bins).to(bin_dtype)
    idx = torch.bucketize(conf.to(bin_dtype).contiguous(), inner, right=False)  # bins (lo, hi], 0 in bin 0
    conf64 = f64(conf)
    zeros = conf64.new_zeros(*conf.shape[:-1], n_bins)
    counts = zeros.scatter_add(-1, idx, torch.ones_like(conf64))
    sum_conf = zeros.scatter_add(-1, idx, conf64)
    sum_acc = zeros.scatter_add(-1, idx, (pred == y).to(conf64.dtype))
    return counts, sum_conf, sum_acc


def ece(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Top-label expected calibration error with equal-width confidence bins.

    Confidence is ``max_c p_c``; bins are ``(k/n, (k+1)/n]`` for ``k = 0..n-1`` with
    confidence 0 in the first bin. ``ECE = sum_k (n_k / B) |acc_k - conf_k|`` over
    non-empty bins (Naeini et al. 2015; Guo et al. 2017).

    Args:
        probs: probabilities, shape ``(..., B, C)``.
        y: int64 labels, shape ``(B,)``.
        n_bins: number of bins (default 15, >= 1).

    Returns:
        ECE in [0, 1], shape ``(...)``.

    Raises:
        DataError: bad shapes, dtypes or labels out of range.
        ConfigError: ``n_bins`` < 1.

    Example:
        >>> ece(torch.tensor([[0.8, 0.2], [0.4, 0.6]]), torch.tensor([0, 0]), n_bins=5)
        tensor(0.4000, dtype=torch.float64)
    """
    n_bins = check_n_bins(n_bins)
    probs = check_probs(probs)
    y = check_labels(y, probs)
    _, sum_conf, sum_acc = _bin_stats(probs, y, n_bins)
    # (n_k / B) |sum_acc/n_k - sum_conf/n_k| = |sum_acc - sum_conf| / B; empty bins give 0.
    return (sum_acc - sum_conf).abs().sum(-1) / probs.shape[-2]


def reliability(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, Any]:
    """Per-bin mean confidence, accuracy and counts of one predictive distribution.

    Uses the same bins as :func:`ece`.

    Args:
        probs: probabilities, shape ``(B, C)`` (use :func:`ensemble_mean` first for an
            ensemble).
        y: int64 labels, shape ``(B,)``.
        n_bins: number of bins (default 15, >= 1).

    Returns:
        dict of numpy arrays: ``edges`` ``(n_bins + 1,)``, ``confidence`` and ``accuracy``
        ``(n_bins,)`` (NaN for empty bins), ``counts`` ``(n_bins,)`` int64, and ``ece``
        (a float).

    Raises:
        DataError: ``probs`` not 2-D, bad labels.
        ConfigError: ``n_bins`` < 1.
    """
    n_bins = check_n_bins(n_bins)
    probs = check_probs(probs, ndim=2)
    y = check_labels(y, probs)
    counts, sum_conf, sum_acc = (t.detach().cpu().double().numpy() for t in _bin_stats(probs, y, n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(counts > 0, sum_conf / counts, np.nan)
        acc = np.where(counts > 0, sum_acc / counts, np.nan)
    return {
        "edges": np.arange(n_bins + 1, dtype=np.float64) / n_bins,
        "confidence": confidence,
        "accuracy": acc,
        "counts": counts.astype(np.int64),
        "ece": float(np.abs(sum_acc - sum_conf).sum() / probs.shape[0]),
    }
