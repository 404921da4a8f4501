"""Split conformal prediction intervals for regression, with normalised nonconformity scores.

Calibrate on held-out examples the score ``r = |y - mu| / sigma`` (the residual in units of
the predicted standard deviation), take its finite-sample quantile ``qhat`` (the
``ceil((n+1)(1-alpha))``-th smallest of the n calibration scores), and predict
``[mu - qhat sigma, mu + qhat sigma]``. For exchangeable calibration and test examples the
interval holds the target with probability >= 1 - alpha (and < 1 - alpha + 1/(n+1) without
ties), whatever the model; the normalisation makes the intervals adaptive, wider where the
model is less sure.

Lei, G'Sell, Rinaldo, Tibshirani & Wasserman, "Distribution-Free Predictive Inference for
Regression", JASA 2018 (split conformal, locally weighted residuals); Papadopoulos, Gammerman
& Vovk, "Normalized Nonconformity Measures for Regression Conformal Prediction", AIA 2008;
Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction and Distribution-Free
Uncertainty Quantification", 2021 (section 2.3.2, "conformalizing scalar uncertainty estimates").

Multi-output targets ``(N, D)``: one quantile per output, each from that output's n
calibration scores, so every output's interval has the marginal guarantee, and so does the
coverage averaged over the N x D entries that is reported. It is not simultaneous coverage of
all D outputs of an example at once.

Conformalised quantile regression (Romano, Patterson & Candès, NeurIPS 2019) needs quantile
heads, which ensemblekit's regression models do not have; it is not implemented.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import DataError
from .classification import float_tensor
from .conformal import conformal_quantile

__all__ = ["normalized_scores", "normalized_conformal"]


def _check(mean: Any, std: Any, y: Any, names: tuple[str, str, str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean``, ``std``, ``y`` (named ``names``) as float64 CPU tensors of one shape ``(N,)`` or ``(N, D)``, checked."""
    nm, ns, ny = names
    mu = float_tensor(mean, nm, " of predicted means (N,) or (N, D)").detach().double().cpu()
    sd = float_tensor(std, ns, " of predicted standard deviations (N,) or (N, D)").detach().double().cpu()
    yt = float_tensor(y, ny, " of regression targets (N,) or (N, D)").detach().double().cpu()
    if mu.dim() not in (1, 2) or mu.shape[0] == 0:
        raise DataError(f"`{nm}` must have shape (N,) or (N, D) with N >= 1, got shape {tuple(mu.shape)}")
    for name, t in ((ns, sd), (ny, yt)):
        if tuple(t.shape) != tuple(mu.shape):
            raise DataError(f"`{name}` must have the shape of `{nm}` {tuple(mu.shape)}, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(mu).all()) or not bool(torch.isfinite(yt).all()):
        raise DataError(f"`{nm}` and `{ny}` must be finite, got NaN or infinite values")
    ok = torch.isfinite(sd) & (sd > 0)
    if not bool(ok.all()):
        raise DataError(f"`{ns}` must be finite and > 0 (standard deviations), got the value {sd[~ok][0].item()!r}")
    return mu, sd, yt


def normalized_scores(mean: Any, std: Any, y: Any) -> torch.Tensor:
    """The normalised nonconformity scores ``|y - mean| / std``, float64, the shape of ``y`` (``(N,)`` or ``(N, D)``).

    Raises:
        DataError: shapes that differ, non-finite values, a std that is not > 0.

    Example:
        >>> normalized_scores(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), torch.tensor([1.0, -3.0]))
        tensor([1., 2.], dtype=torch.float64)
    """
    mu, sd, yt = _check(mean, std, y, ("mean", "std", "y"))
    return (yt - mu).abs() / sd


def normalized_conformal(val_mean: Any, val_std: Any, y_val: Any, test_mean: Any, test_std: Any, y_test: Any,
                         alpha: float = 0.1) -> dict[str, Any]:
    """Calibrate normalised split-conformal intervals on one split and evaluate them on another.

    Args:
        val_mean, val_std, y_val: the calibration split's predicted means, predicted standard
            deviations (> 0) and targets, each ``(n,)`` or ``(n, D)``; for an ensemble the
            mixture's mean and ``sqrt`` of its total variance.
        test_mean, test_std, y_test: the same for the evaluation split (the same D).
        alpha: allowed miscoverage in (0, 1) (default 0.1: intervals for 90%).

    Returns:
        dict of plain Python values: ``qhat`` (a float; a list of D floats for ``(N, D)``;
        ``inf`` where ``n < 1/alpha - 1``: unbounded intervals), ``coverage`` (share of the
        test entries inside their interval), ``mean_width`` and ``median_width`` (of
        ``2 qhat std``, in the targets' units), ``alpha``, ``level`` (the empirical quantile
        level ``ceil((n+1)(1-alpha)) / n`` that ``qhat`` is), ``n_cal``, ``n_test``,
        ``score`` (``"normalized"``); for D > 1 also ``coverage_by_output`` and
        ``mean_width_by_output`` (lists of D floats).

    Raises:
        ConfigError: ``alpha`` outside (0, 1).
        DataError: shapes that differ (within a split, or D between them), non-finite
            values, a std that is not > 0.

    Example:
        >>> res = normalized_conformal(mu_val, sd_val, y_val, mu_test, sd_test, y_test, alpha=0.1)
        >>> res["coverage"], res["mean_width"]          # ~0.9, and the interval width it took
    """
    mu_c, sd_c, y_c = _check(val_mean, val_std, y_val, ("val_mean", "val_std", "y_val"))
    mu_t, sd_t, y_t = _check(test_mean, test_std, y_test, ("test_mean", "test_std", "y_test"))
    if mu_c.shape[1:] != mu_t.shape[1:]:
        raise DataError(f"the calibration and test splits must have the same outputs, got shapes {tuple(mu_c.shape)} and "
                        f"{tuple(mu_t.shape)}")
    cal = ((y_c - mu_c).abs() / sd_c).reshape(mu_c.shape[0], -1)  # (n, D)
    qhat = torch.tensor([conformal_quantile(cal[:, d], alpha) for d in range(cal.shape[1])], dtype=torch.float64)
    n = int(cal.shape[0])
    a = float(alpha)
    half = sd_t.reshape(mu_t.shape[0], -1) * qhat  # (N, D)
    inside = ((y_t - mu_t).abs().reshape(half.shape) <= half).double()
    width = 2.0 * half
    k = math.ceil((n + 1) * (1 - a) - 1e-9)  # the rank conformal_quantile takes (its tolerance absorbs round-off)
    out: dict[str, Any] = {
        "qhat": float(qhat[0]) if mu_c.dim() == 1 else [float(q) for q in qhat],
        "coverage": float(inside.mean()),
        "mean_width": float(width.mean()),
        "median_width": float(width.reshape(-1).median()),
        "alpha": a,
        "level": k / n,
        "n_cal": n,
        "n_test": int(mu_t.shape[0]),
        "score": "normalized",
    }
    if mu_c.dim() == 2:
        out["coverage_by_output"] = inside.mean(0).tolist()
        out["mean_width_by_output"] = width.mean(0).tolist()
    return out
