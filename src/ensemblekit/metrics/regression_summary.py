"""One call that turns a regression ensemble's Gaussian predictive into every number a report needs.

:func:`evaluate_gaussian` is the regression analogue of
:func:`~ensemblekit.metrics.summary.evaluate_probs`: the ensemble's (mixture's) metrics, each
member's, their mean, diversity and the size curve (the ensemble of the first k members for
k = 1..M), as a JSON-able dict of plain floats, ints, lists and dicts.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .predictive import Gaussian, check_probabilities
from .regression import (as_gaussian, check_targets, crps_gaussian, crps_mixture, gaussian_nll, mae, mean_spread,
                         mixture_nll, r2, rmse, variance_decomposition)
from .regression_calibration import DEFAULT_LEVELS, coverage_width, quantile_calibration

__all__ = ["gaussian_size_curve", "evaluate_gaussian"]

_SCALARS = ("rmse", "mae", "r2", "nll", "nll_moment_matched", "crps", "quantile_calibration_error")


def _key(level: float) -> str:
    return f"{level:g}"


def _metrics(pd: Gaussian, y: Any, levels: list[float]) -> dict[str, Any]:
    """The mixture's metrics as plain floats (``picp`` / ``mpiw``: dicts keyed by level)."""
    cw = coverage_width(pd, y, levels)
    mu, var = pd.pooled()
    return {
        "rmse": float(rmse(pd, y)),
        "mae": float(mae(pd, y)),
        "r2": float(r2(pd, y)),
        "nll": float(mixture_nll(pd, y)),
        "nll_moment_matched": float(gaussian_nll(mu, var, y)),
        "crps": float(crps_mixture(pd, y)),
        "picp": {_key(lv): float(v) for lv, v in zip(levels, cw["picp"])},
        "mpiw": {_key(lv): float(v) for lv, v in zip(levels, cw["mpiw"])},
        "quantile_calibration_error": float(quantile_calibration(pd, y)["error"]),
    }


def _size_curve(pd: Gaussian, y: Any, levels: list[float]) -> dict[str, Any]:
    rows = [_metrics(pd.prefix(k), y, levels) for k in range(1, pd.num_members + 1)]
    curve: dict[str, Any] = {"members": list(range(1, pd.num_members + 1))}
    curve.update({name: [r[name] for r in rows] for name in _SCALARS})
    for name in ("picp", "mpiw"):
        curve[name] = {_key(lv): [r[name][_key(lv)] for r in rows] for lv in levels}
    return curve


def _check(pred: Any, y: Any, levels: Any) -> tuple[Gaussian, list[float]]:
    pd = as_gaussian(pred)
    check_targets(y, pd.example_shape)
    return pd, check_probabilities(levels, "levels").tolist()


def gaussian_size_curve(pred: Any, y: Any, levels: Sequence[float] = DEFAULT_LEVELS) -> dict[str, Any]:
    """Metrics of the mixture of the first k members, for k = 1..M (members in order).

    Each entry is computed by the same functions as a standalone call on ``pred.prefix(k)``,
    so the last entry equals the full ensemble's metrics exactly. Cost O(M³ N D) for the
    CRPS and M quantile solves (measured: the whole of :func:`evaluate_gaussian` for 10 members x 10⁴
    examples, about 0.5 s on 2 CPU cores).

    Args:
        pred: a Gaussian predictive or a ``(mean, var)`` pair, ``(M, N[, D])``.
        y: targets ``(N,)`` or ``(N, D)``.
        levels: interval masses for ``picp`` / ``mpiw`` (default 0.5, 0.9, 0.95).

    Returns:
        dict of length-M lists: ``members`` ``[1, ..., M]``, ``rmse``, ``mae``, ``r2``,
        ``nll`` (the exact mixture NLL), ``nll_moment_matched``, ``crps``,
        ``quantile_calibration_error``; ``picp`` and ``mpiw`` as dicts level (``"0.9"``) -> list.

    Raises:
        DataError: bad predictive or targets. ConfigError: a level outside (0, 1).

    Example:
        >>> gaussian_size_curve(pd, y)["nll"][-1]  # the full ensemble's NLL
    """
    pd, lv = _check(pred, y, levels)
    return _size_curve(pd, y, lv)


def evaluate_gaussian(pred: Any, y: Any, levels: Sequence[float] = DEFAULT_LEVELS) -> dict[str, Any]:
    """Every metric of a regression ensemble's predictive, as a JSON-able dict.

    The ensemble is the uniform mixture of the members' Gaussians. Its metrics are the size
    curve's last entry, so the two agree exactly; ``diversity.nll_gain`` (= member_mean.nll -
    nll, >= 0 by Jensen's inequality) and ``diversity.crps_gain`` (= member_mean.crps - crps,
    >= 0 since the CRPS is convex in the predictive) say how much pooling the members gained.

    Args:
        pred: a Gaussian predictive or a ``(mean, var)`` pair, ``(M, N[, D])`` (for a single
            model, M = 1).
        y: targets ``(N,)`` or ``(N, D)`` (D outputs: diagonal Gaussians per member; NLL and
            CRPS summed over D, the rest averaged over the N x D entries).
        levels: interval masses for ``picp`` / ``mpiw`` (default 0.5, 0.9, 0.95).

    Returns:
        dict with plain Python floats, ints, lists and dicts:

        - ``rmse``, ``mae``, ``r2`` (of the mixture's mean), ``nll`` (exact mixture NLL),
          ``nll_moment_matched`` (NLL of the moment-matched Gaussian, for reference),
          ``crps`` (mixture CRPS), ``picp`` / ``mpiw`` (dicts level -> float),
          ``quantile_calibration_error``: of the ensemble;
        - ``members``: dict of length-M lists ``rmse``, ``mae``, ``nll``, ``crps``;
        - ``member_mean``: the mean over members of each of those;
        - ``diversity``: ``aleatoric``, ``epistemic``, ``total`` (mean variances),
          ``epistemic_share``, ``spread`` (mean std of the members' means), ``nll_gain``,
          ``crps_gain``;
        - ``size_curve``: as :func:`gaussian_size_curve`;
        - ``levels``, ``num_members``, ``num_examples``, ``num_outputs``.

    Raises:
        DataError: shapes of means / variances / targets that disagree, variances not finite
            and > 0, NaN targets. ConfigError: a level outside (0, 1).

    Example:
        >>> res = evaluate_gaussian(Gaussian(means, variances), y_test)
        >>> res["rmse"], res["nll"], res["picp"]["0.9"], res["size_curve"]["nll"]
    """
    pd, lv = _check(pred, y, levels)
    curve = _size_curve(pd, y, lv)
    ensemble: dict[str, Any] = {name: curve[name][-1] for name in _SCALARS}
    ensemble.update({name: {k: v[-1] for k, v in curve[name].items()} for name in ("picp", "mpiw")})
    members = {
        "rmse": rmse(pd.mean, y).tolist(),
        "mae": mae(pd.mean, y).tolist(),
        "nll": gaussian_nll(pd.mean, pd.var, y).tolist(),
        "crps": crps_gaussian(pd.mean, pd.var, y).tolist(),
    }
    member_mean = {name: float(np.mean(v)) for name, v in members.items()}
    decomposition = {name: float(v) for name, v in variance_decomposition(pd).items()}
    diversity = {
        **decomposition,
        "spread": float(mean_spread(pd)),
        "nll_gain": member_mean["nll"] - ensemble["nll"],
        "crps_gain": member_mean["crps"] - ensemble["crps"],
    }
    return {
        **ensemble,
        "members": members,
        "member_mean": member_mean,
        "diversity": diversity,
        "size_curve": curve,
        "levels": lv,
        "num_members": pd.num_members,
        "num_examples": pd.num_examples,
        "num_outputs": pd.num_outputs,
    }
