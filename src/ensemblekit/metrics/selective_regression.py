"""Selective regression: risk against coverage when a model keeps only the examples it is surest about.

With the N examples sorted by predicted uncertainty ascending (for an ensemble, the
predicted standard deviation), at coverage ``k/N`` (k = 1..N) the model answers on the k
least uncertain; its selective risk there is the MEAN SQUARED ERROR of those k (the
regression analogue of the selective classification error, and like it additive over
examples). :func:`selective_regression_summary` also reports the RMSE (its square root, in
the targets' units) at chosen coverages.

The area under the curve (AURC: the mean risk over k = 1..N) is compared with two
references: the oracle, which keeps the examples in order of their TRUE squared error (the
lowest area any ranking can reach), and a random ranking, whose expected risk is the full
MSE at every coverage. Ties are ranked in random order and every quantity is the expectation
over that order (computed exactly, as in :mod:`ensemblekit.metrics.selective`). The error
retention curves of Malinin et al., "Shifts: A Dataset of Real Distributional Shift Across
Multiple Large-Scale Tasks" (NeurIPS 2021 Datasets and Benchmarks) are this curve read from
the other end; Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks"
(NeurIPS 2017) for the risk-coverage view.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..errors import ConfigError, DataError
from .classification import float_tensor

__all__ = ["squared_errors", "regression_risk_coverage", "oracle_risk_coverage", "selective_regression_summary"]


def squared_errors(mean: Any, y: Any) -> torch.Tensor:
    """Per-example squared error ``(y - mean)^2`` ``(N,)`` float64 (with ``(N, D)``: the mean over the D outputs).

    Raises:
        DataError: shapes that differ or are not ``(N,)`` / ``(N, D)``, non-finite values.
    """
    mu = float_tensor(mean, "mean", " of predicted means (N,) or (N, D)").detach().double().cpu()
    yt = float_tensor(y, "y", " of regression targets (N,) or (N, D)").detach().double().cpu()
    if mu.dim() not in (1, 2) or tuple(mu.shape) != tuple(yt.shape):
        raise DataError(f"`mean` and `y` must share one shape (N,) or (N, D), got {tuple(mu.shape)} and {tuple(yt.shape)}")
    if not bool(torch.isfinite(mu).all()) or not bool(torch.isfinite(yt).all()):
        raise DataError("`mean` and `y` must be finite, got NaN or infinite values")
    sq = (yt - mu).square()
    return sq.mean(-1) if sq.dim() == 2 else sq


def _check(uncertainty: Any, errors: Any) -> tuple[torch.Tensor, torch.Tensor]:
    u = float_tensor(uncertainty, "uncertainty", " of per-example scores (N,)").detach().double().cpu()
    e = float_tensor(errors, "errors", " of per-example losses (N,)").detach().double().cpu()
    if u.dim() != 1 or e.dim() != 1 or u.shape != e.shape or u.shape[0] == 0:
        raise DataError(f"`uncertainty` and `errors` must be 1-D of one length N >= 1, got shapes {tuple(u.shape)} and "
                        f"{tuple(e.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise DataError("`uncertainty` must be finite, got NaN or infinite values")
    if not bool((torch.isfinite(e) & (e >= 0)).all()):
        raise DataError("`errors` must be finite and >= 0 (per-example losses), got a negative, NaN or infinite value")
    return u, e


def _curve(key: torch.Tensor, errors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Keep the examples by ``key`` ascending; each tie group's errors replaced by their mean (the expectation)."""
    order = torch.argsort(key, stable=True)
    key_s, err_s = key[order], errors[order]
    _, group, counts = torch.unique_consecutive(key_s, return_inverse=True, return_counts=True)
    sums = err_s.new_zeros(counts.shape[0]).scatter_add_(0, group, err_s)
    expected = (sums / counts.to(err_s.dtype))[group]
    k = torch.arange(1, errors.shape[0] + 1, dtype=torch.float64)
    return {"coverage": k / errors.shape[0], "risk": expected.cumsum(0) / k}


def regression_risk_coverage(uncertainty: Any, errors: Any) -> dict[str, torch.Tensor]:
    """The risk-coverage curve of keeping the least uncertain examples first.

    Args:
        uncertainty: per-example scores ``(N,)``, higher = less sure (e.g. the predicted std).
        errors: per-example losses ``(N,)`` >= 0, e.g. :func:`squared_errors` (then the risk is the MSE).

    Returns:
        dict of float64 tensors ``(N,)``: ``coverage`` ``k/N`` and ``risk`` (the mean of the
        errors of the k least uncertain examples), k = 1..N; ties in expectation.

    Raises:
        DataError: inputs not 1-D of one length, empty, non-finite, negative errors.

    Example:
        >>> regression_risk_coverage(torch.tensor([0.1, 0.5]), torch.tensor([1.0, 9.0]))["risk"]
        tensor([1., 5.], dtype=torch.float64)
    """
    return _curve(*_check(uncertainty, errors))


def oracle_risk_coverage(errors: Any) -> dict[str, torch.Tensor]:
    """The lowest risk-coverage curve: keeping the examples in order of their true error (as :func:`regression_risk_coverage`)."""
    _, e = _check(errors, errors)
    return _curve(e, e)


def _coverages(coverages: Any) -> tuple[float, ...]:
    try:
        values = tuple(float(c) for c in coverages)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"`coverages` must be a sequence of numbers in (0, 1], got {coverages!r}") from exc
    if not all(0 < c <= 1 for c in values):
        raise ConfigError(f"`coverages` must lie in (0, 1], got {list(values)!r}")
    return values


def selective_regression_summary(uncertainty: Any, mean: Any, y: Any,
                                 coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95)) -> dict[str, Any]:
    """AURC of the MSE-coverage curve, its oracle and random references, and the risk at chosen coverages.

    The risk at coverage ``c`` is that of the ``k = ceil(c N)`` least uncertain examples.

    Args:
        uncertainty: per-example scores ``(N,)``, higher = less sure (the predicted std).
        mean, y: the predicted means and the targets, ``(N,)`` or ``(N, D)`` (squared errors
            averaged over D per example).
        coverages: coverages in (0, 1] (default 0.5, 0.8, 0.9, 0.95).

    Returns:
        dict of plain values: ``risk`` (``"mse"``), ``aurc`` (mean MSE over k = 1..N),
        ``oracle_aurc`` (the same, ranked by the true error), ``random_aurc`` (= ``mse``, a
        random ranking's expected area), ``e_aurc`` (``aurc - oracle_aurc`` >= 0),
        ``mse`` and ``rmse`` at full coverage, ``mse@{c:g}`` and ``rmse@{c:g}`` per coverage, ``n``.

    Raises:
        DataError: as :func:`squared_errors` and :func:`regression_risk_coverage`.
        ConfigError: a coverage outside (0, 1].

    Example:
        >>> s = selective_regression_summary(pd.scores("std")["std"], pd.pooled()[0], y)
        >>> s["rmse@0.5"] < s["rmse"]      # when the std tracks the error
    """
    values = _coverages(coverages)
    u, e = _check(uncertainty, squared_errors(mean, y))
    risk = _curve(u, e)["risk"]
    oracle = _curve(e, e)["risk"]
    n = int(e.shape[0])
    mse = float(e.mean())
    out: dict[str, Any] = {"risk": "mse", "aurc": float(risk.mean()), "oracle_aurc": float(oracle.mean()), "random_aurc": mse}
    out.update(e_aurc=out["aurc"] - out["oracle_aurc"], mse=mse, rmse=math.sqrt(mse), n=n)
    for c in values:
        k = min(n, max(1, math.ceil(c * n - 1e-9)))
        out[f"mse@{c:g}"] = float(risk[k - 1])
        out[f"rmse@{c:g}"] = math.sqrt(float(risk[k - 1]))
    return out
