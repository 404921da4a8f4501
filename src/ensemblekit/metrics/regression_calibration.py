"""Calibration of a Gaussian predictive: interval coverage and width, quantile calibration, variance scaling.

The intervals are the central intervals of the ensemble's uniform Gaussian mixture (solved
from its CDF, :meth:`~ensemblekit.metrics.predictive.Gaussian.interval`), not of the
moment-matched Gaussian. With multi-output targets ``(N, D)`` every quantity is taken per
output (each output's marginal mixture) and averaged over the N x D entries: a 90% interval
covers 90% of the entries, not 90% of the examples in all D outputs at once.

Variance scaling is regression's temperature scaling: every variance is multiplied by the
one factor ``c`` that minimises the mixture NLL on a held-out split (the validation split,
never the test split the result is reported on).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .predictive import Gaussian, check_probabilities
from .regression import as_gaussian, check_targets

__all__ = ["DEFAULT_LEVELS", "picp", "mpiw", "coverage_width", "quantile_calibration", "fit_variance_scale",
           "scale_variance"]

DEFAULT_LEVELS = (0.5, 0.9, 0.95)
_GOLDEN = (math.sqrt(5) - 1) / 2


def _intervals(pd: Gaussian, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture's central intervals ``(L, N[, D])`` at ``levels`` ``(L,)``, from one quantile solve."""
    q = pd.quantile(torch.cat([(1 - levels) / 2, (1 + levels) / 2]).tolist())
    return q[: len(levels)], q[len(levels):]


def coverage_width(pred: Any, y: Any, levels: float | Sequence[float] = DEFAULT_LEVELS) -> dict[str, torch.Tensor]:
    """PICP and MPIW of the mixture's central intervals at each level, from one quantile solve.

    Args:
        pred: a Gaussian predictive or a ``(mean, var)`` pair.
        y: targets ``(N,)`` or ``(N, D)``.
        levels: interval masses in (0, 1) (default 0.5, 0.9, 0.95), or one number.

    Returns:
        ``{"picp": ..., "mpiw": ...}``, float64 tensors ``(L,)`` (0-d for one number): the
        fraction of targets inside ``[lo, hi]`` and the mean width ``hi - lo``.

    Raises:
        DataError: bad predictive or targets. ConfigError: a level outside (0, 1).
    """
    pd = as_gaussian(pred)
    lv = check_probabilities(levels, "levels")
    y = check_targets(y, pd.example_shape, device=pd.mean.device)
    lo, hi = _intervals(pd, lv.to(pd.mean.device))
    inside = ((y >= lo) & (y <= hi)).to(torch.float64).flatten(1).mean(1)
    width = (hi - lo).flatten(1).mean(1)
    if np.ndim(levels) == 0:
        return {"picp": inside[0], "mpiw": width[0]}
    return {"picp": inside, "mpiw": width}


def picp(pred: Any, y: Any, levels: float | Sequence[float] = DEFAULT_LEVELS) -> torch.Tensor:
    """Prediction interval coverage probability: the fraction of targets inside the mixture's central
    interval of each level (a calibrated predictive has PICP ≈ level). As :func:`coverage_width`.

    Example:
        >>> picp(pd, y, 0.9)   # ≈ 0.9 when calibrated
    """
    return coverage_width(pred, y, levels)["picp"]


def mpiw(pred: Any, levels: float | Sequence[float] = DEFAULT_LEVELS) -> torch.Tensor:
    """Mean prediction interval width of the mixture's central interval of each level, ``(L,)`` float64
    (0-d for one number), in the units of the targets; needs no targets.

    Raises:
        DataError: a bad predictive. ConfigError: a level outside (0, 1).
    """
    pd = as_gaussian(pred)
    lo, hi = _intervals(pd, check_probabilities(levels, "levels").to(pd.mean.device))
    width = (hi - lo).flatten(1).mean(1)
    return width[0] if np.ndim(levels) == 0 else width


def quantile_calibration(pred: Any, y: Any, levels: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Quantile calibration: for each level p, how often ``y <= F^-1(p)``, with F the mixture's CDF.

    Since F is continuous and increasing, ``y <= F^-1(p)`` iff ``F(y) <= p``, with
    ``F(y) = mean_m Phi((y - mu_m) / sigma_m)`` (the probability integral transform), so no
    quantile is solved. A calibrated predictive has observed ≈ p at every level (Kuleshov,
    Fenner & Ermon, "Accurate Uncertainties for Deep Learning Using Calibrated Regression",
    ICML 2018). With D > 1 the frequency is over all N x D entries.

    Args:
        pred: a Gaussian predictive or a ``(mean, var)`` pair.
        y: targets ``(N,)`` or ``(N, D)``.
        levels: the grid of p in (0, 1) (default 0.01, 0.02, ..., 0.99).

    Returns:
        dict of float64 tensors: ``levels`` ``(L,)``, ``observed`` ``(L,)``, ``error`` (0-d:
        ``mean_p |observed - p|``, the calibration error), ``squared_error`` (0-d:
        ``mean_p (observed - p)^2``, Kuleshov et al.'s calibration score with equal weights).

    Raises:
        DataError: bad predictive or targets. ConfigError: a level outside (0, 1).

    Example:
        >>> quantile_calibration(pd, y)["error"]  # ≈ 0 when calibrated
    """
    pd = as_gaussian(pred)
    p = check_probabilities(np.arange(1, 100) / 100 if levels is None else levels, "levels").to(pd.mean.device)
    y = check_targets(y, pd.example_shape, device=pd.mean.device)
    pit = pd.cdf(y).reshape(-1)
    observed = (pit.unsqueeze(0) <= p.unsqueeze(1)).to(torch.float64).mean(1)
    gap = observed - p
    return {"levels": p, "observed": observed, "error": gap.abs().mean(), "squared_error": gap.square().mean()}


def _check_factor(c: Any, name: str) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float, np.floating, np.integer)) or not 0 < c < math.inf:
        raise ConfigError(f"`{name}` must be a finite number > 0 (a factor on the variances), got {c!r}")
    return float(c)


def fit_variance_scale(val: Any, y_val: Any, bounds: tuple[float, float] = (1e-4, 1e4)) -> float:
    """The factor ``c`` on every variance (``var -> c var``) that minimises the validation mixture NLL.

    Regression's temperature scaling (Guo et al. 2017's one-scalar recalibration, applied to
    the variances; Kuleshov et al. 2018): one scalar, fit on a held-out split. The NLL as a
    function of ``log c`` is evaluated on an 81-point grid over ``bounds``; between the grid neighbours of the best point the root of its derivative
    (``0.5 mean_n sum_m r_mn (D - z²_mn / c)``, r the members' responsibilities) is found by
    bisection, to round-off (golden section on the NLL if the derivative's signs there do
    not bracket a root). Each evaluation is O(M N D) from precomputed squared z-scores. With one member the optimum is ``mean (y - mu)^2 / var`` (the mean squared
    z-score over the N x D entries); with several, the mixture's, which has no closed form.
    An optimum at a bound is returned as that bound.

    Args:
        val: the validation predictive (Gaussian or ``(mean, var)`` pair).
        y_val: its targets ``(N,)`` or ``(N, D)``.
        bounds: ``(lo, hi)`` with ``0 < lo < hi < inf`` (default ``(1e-4, 1e4)``).

    Returns:
        ``c`` (> 1: the predictive was over-confident; the stds grow by ``sqrt(c)``).

    Raises:
        DataError: bad predictive or targets. ConfigError: bad ``bounds``.

    Example:
        >>> c = fit_variance_scale(val_pd, y_val)
        >>> test_pd = scale_variance(test_pd, c)
    """
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"`bounds` must be a pair (lo, hi) with 0 < lo < hi < inf, got {bounds!r}") from exc
    if not 0 < lo < hi < math.inf:
        raise ConfigError(f"`bounds` must be a pair (lo, hi) with 0 < lo < hi < inf, got {bounds!r}")
    pd = as_gaussian(val)
    y = check_targets(y_val, pd.example_shape, name="y_val", device=pd.mean.device)
    mu, v = pd.mean.detach().double(), pd.var.detach().double()
    sq, base = (y - mu).square() / v, (2 * math.pi * v).log()
    if y.dim() == 2:
        sq, base = sq.sum(-1), base.sum(-1)
    d, log_m = pd.num_outputs, math.log(pd.num_members)

    def lp(log_c: float) -> torch.Tensor:  # members' log-densities (M, N) with the variances scaled by c
        return -0.5 * (base + d * log_c + sq * math.exp(-log_c))

    def nll(log_c: float) -> float:
        return log_m - float(torch.logsumexp(lp(log_c), dim=0).mean())

    def slope(log_c: float) -> float:  # d NLL / d log c = 0.5 mean_n sum_m r_mn (D - sq_mn / c), r = responsibilities
        r = torch.softmax(lp(log_c), dim=0)
        return 0.5 * float((r * (d - sq * math.exp(-log_c))).sum(0).mean())

    grid = np.linspace(math.log(lo), math.log(hi), 81)
    values = [nll(g) for g in grid]
    i = int(np.argmin(values))
    if i in (0, len(grid) - 1):
        return float(math.exp(grid[i]))
    a, b = grid[i - 1], grid[i + 1]
    if slope(a) < 0 < slope(b):
        # bisection on the slope's sign: the NLL is flat at its minimum, so comparing NLL values
        # (golden section) resolves log c to ~1e-8 only, the slope to round-off
        while b - a > 1e-13 * (1 + abs(a)):
            mid = 0.5 * (a + b)
            if slope(mid) < 0:
                a = mid
            else:
                b = mid
        return float(math.exp(0.5 * (a + b)))
    x1, x2 = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)  # the slope's signs say nothing: golden section
    f1, f2 = nll(x1), nll(x2)
    while b - a > 1e-10:
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - _GOLDEN * (b - a)
            f1 = nll(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + _GOLDEN * (b - a)
            f2 = nll(x2)
    return float(math.exp(0.5 * (a + b)))


def scale_variance(pred: Any, c: float) -> Gaussian:
    """The predictive with every member's variance multiplied by ``c`` (means unchanged).

    Raises:
        ConfigError: ``c`` not a finite number > 0. DataError: a bad predictive.
    """
    c = _check_factor(c, "c")
    pd = as_gaussian(pred)
    return Gaussian(pd.mean, pd.var * c)
