"""Figures of a regression ensemble's Gaussian predictive: 1-D predictive bands, quantile calibration, size curves.

- :func:`predictive_band`: for a 1-D input, the ensemble's mean with its aleatoric and total
  (aleatoric + epistemic) bands, the toy figure of Lakshminarayanan, Pritzel & Blundell,
  "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles" (NeurIPS 2017,
  Figure 1: y = x³ + noise);
- :func:`regression_calibration_plot`: observed against expected quantile levels, from
  :func:`~ensemblekit.metrics.regression_calibration.quantile_calibration` (Kuleshov, Fenner &
  Ermon, "Accurate Uncertainties for Deep Learning Using Calibrated Regression", ICML 2018);
- :func:`regression_size_curve_plot`: a metric against the number of members, from
  :func:`~ensemblekit.metrics.regression_summary.gaussian_size_curve`.

Drawn headless like :mod:`ensemblekit.report.plots` (a bare Figure on an Agg canvas); every
function writes one PNG (creating parent folders) and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ConfigError, DataError
from ..metrics.regression import as_gaussian
from .plots import line_plot, new_figure, save_figure

__all__ = ["predictive_band", "regression_calibration_plot", "regression_size_curve_plot", "REGRESSION_SIZE_METRICS"]

REGRESSION_SIZE_METRICS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "nll": "NLL (mixture)",
    "nll_moment_matched": "NLL (moment-matched Gaussian)",
    "crps": "CRPS (mixture)",
    "quantile_calibration_error": "quantile calibration error",
}
"""The scalar entries of a regression size curve and their axis labels (``picp@0.9`` and
``mpiw@0.9`` name an interval level's coverage and width)."""


def _vector(values: Any, what: str) -> np.ndarray:
    """``values`` (tensor, array, sequence) as a new float64 array of shape ``(N,)`` (``(N, 1)`` accepted), finite."""
    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator
        values = values.detach().cpu().numpy()
    try:
        arr = np.array(values, dtype=np.float64)  # a copy: the caller's data is never touched
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a sequence of numbers, got {type(values).__name__}") from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{what} must be 1-D, of shape (N,) or (N, 1) with N >= 1, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{what} must be finite, got NaN or infinite values")
    return arr


def _band_arrays(pred: Any, x: Any) -> dict[str, np.ndarray]:
    """Sorted inputs, members' means ``(M, N)``, ensemble mean, aleatoric and epistemic variances, for one output."""
    pd = as_gaussian(pred)
    if pd.num_outputs != 1:
        raise DataError(f"predictive_band draws one target, got a predictive with {pd.num_outputs} outputs "
                        f"(shape {tuple(pd.mean.shape)}); pass one output, e.g. Gaussian(mean[..., d], var[..., d])")
    xs = _vector(x, "`x` (one input feature per example)")
    if xs.shape[0] != pd.num_examples:
        raise DataError(f"`x` must have one value per example of the predictive ({pd.num_examples}), got {xs.shape[0]}")
    order = np.argsort(xs, kind="stable")
    members = pd.mean.detach().cpu().double().reshape(pd.num_members, pd.num_examples).numpy()[:, order]
    mean, _ = pd.pooled()
    return {
        "x": xs[order],
        "members": members,
        "mean": mean.cpu().numpy().reshape(-1)[order],
        "aleatoric": pd.aleatoric().cpu().numpy().reshape(-1)[order],
        "epistemic": pd.epistemic().cpu().numpy().reshape(-1)[order],
    }


def predictive_band(pd: Any, x: Any, path: str | Path, *, train: tuple[Any, Any] | None = None,
                    truth: Callable[[np.ndarray], Any] | None = None, title: str | None = None,
                    std_factor: float = 2.0, members: bool = False) -> Path:
    """A 1-D regression ensemble's mean with its aleatoric and total predictive bands.

    Sorted by ``x``: the ensemble's mean (the mean of the members' means), the total band
    ``mean ± k sqrt(aleatoric + epistemic)`` (light) and the aleatoric band
    ``mean ± k sqrt(aleatoric)`` (darker, inside it); the gap between them is the members'
    disagreement. The figure of Lakshminarayanan, Pritzel & Blundell, "Simple and Scalable
    Predictive Uncertainty Estimation using Deep Ensembles" (NeurIPS 2017, Figure 1, which
    draws ± 3 std of y = x³ + noise).

    Args:
        pd: a :class:`~ensemblekit.metrics.predictive.Gaussian` or a ``(mean, var)`` pair with
            one target: ``(M, N)`` or ``(M, N, 1)``.
        x: the examples' single input feature, ``(N,)`` or ``(N, 1)``.
        path: the PNG to write.
        train: ``(x_train, y_train)``, each ``(n,)`` or ``(n, 1)``, drawn as dots (default none).
        truth: the true function, called on a NumPy grid over the inputs' range and drawn
            dashed (e.g. ``lambda x: x**3``; default none).
        title: figure title (default none).
        std_factor: k, the band's half-width in standard deviations (default 2.0, > 0).
        members: also draw each member's mean as a thin line (default False).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        DataError: inputs that are not one feature, several targets, lengths that disagree,
            ``truth`` not giving one finite value per grid point.
        ConfigError: ``std_factor`` not a finite number > 0.

    Example:
        >>> predictive_band(Gaussian(means, variances), x_test, "band.png",
        ...                 train=(x_train, y_train), truth=lambda x: x**3, std_factor=3)
    """
    if isinstance(std_factor, bool) or not isinstance(std_factor, (int, float, np.integer, np.floating)) \
            or not 0 < std_factor < math.inf:
        raise ConfigError(f"`std_factor` must be a finite number > 0 (standard deviations), got {std_factor!r}")
    k = float(std_factor)
    b = _band_arrays(pd, x)
    lo_x, hi_x = float(b["x"].min()), float(b["x"].max())
    if train is not None:
        x_train, y_train = _train_pair(train)
        lo_x, hi_x = min(lo_x, float(x_train.min())), max(hi_x, float(x_train.max()))
    fig = new_figure((6.5, 4.5))
    ax = fig.subplots()
    total, alea = k * np.sqrt(b["aleatoric"] + b["epistemic"]), k * np.sqrt(b["aleatoric"])
    ax.fill_between(b["x"], b["mean"] - total, b["mean"] + total, color="C1", alpha=0.25, linewidth=0,
                    label=f"total: mean ± {k:g} std (aleatoric + epistemic)")
    ax.fill_between(b["x"], b["mean"] - alea, b["mean"] + alea, color="C0", alpha=0.35, linewidth=0,
                    label=f"aleatoric: mean ± {k:g} std (members' mean variance)")
    if members:
        for m, row in enumerate(b["members"]):
            ax.plot(b["x"], row, color="gray", linewidth=0.6, alpha=0.7, label="members' means" if m == 0 else None)
    ax.plot(b["x"], b["mean"], color="C0", linewidth=1.8, label="ensemble mean")
    if truth is not None:
        grid = np.linspace(lo_x, hi_x, 400)
        ax.plot(grid, _truth_values(truth, grid), color="black", linestyle="--", linewidth=1.2, label="ground truth")
    if train is not None:
        ax.scatter(x_train, y_train, s=12, color="C3", zorder=3, label="training data")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _train_pair(train: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        x_train, y_train = train
    except (TypeError, ValueError) as exc:
        raise DataError(f"`train` must be an (x_train, y_train) pair, got {type(train).__name__}") from exc
    xt, yt = _vector(x_train, "`train` x_train"), _vector(y_train, "`train` y_train")
    if xt.shape != yt.shape:
        raise DataError(f"`train` must have x_train and y_train of equal length, got {xt.shape[0]} and {yt.shape[0]}")
    return xt, yt


def _truth_values(truth: Callable[[np.ndarray], Any], grid: np.ndarray) -> np.ndarray:
    if not callable(truth):
        raise DataError(f"`truth` must be a callable x -> y (e.g. lambda x: x**3), got {type(truth).__name__}")
    ys = _vector(truth(grid.copy()), "`truth(x)`")
    if ys.shape != grid.shape:
        raise DataError(f"`truth(x)` must give one value per point of x ({grid.shape[0]}), got {ys.shape[0]}")
    return ys


def regression_calibration_plot(curves: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                                title: str | None = None) -> Path:
    """Quantile calibration: the observed frequency of ``y <= F^-1(p)`` against the level p, one line per curve.

    A calibrated predictive follows the diagonal (Kuleshov, Fenner & Ermon, "Accurate
    Uncertainties for Deep Learning Using Calibrated Regression", ICML 2018). An
    over-confident one (intervals too narrow) gives a curve flatter than the diagonal
    (above it at low p, below it at high p), an under-confident one a steeper curve, a
    biased one a curve shifted to one side. The legend carries each curve's calibration
    error, ``mean_p |observed - p|``.

    Args:
        curves: ``{label: calibration}``, each the dict of
            :func:`~ensemblekit.metrics.regression_calibration.quantile_calibration`
            (``levels``, ``observed``; ``error`` is recomputed from them when absent), e.g.
            ``{"raw": ..., "variance-scaled": ...}``; drawn in insertion order.
        path: the PNG to write.
        title: figure title (default none).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        DataError: empty ``curves``, a curve lacking ``levels`` or ``observed``, lengths that
            disagree, values outside [0, 1].

    Example:
        >>> c = fit_variance_scale(val_pd, y_val)
        >>> regression_calibration_plot({"raw": quantile_calibration(pd, y),
        ...     "variance-scaled": quantile_calibration(scale_variance(pd, c), y)}, "qcal.png")
    """
    if not curves:
        raise DataError("`curves` must hold at least one labelled quantile calibration, got none")
    fig = new_figure((5.0, 5.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    for label, curve in curves.items():
        if not isinstance(curve, Mapping) or "levels" not in curve or "observed" not in curve:
            keys = sorted(curve) if isinstance(curve, Mapping) else type(curve).__name__
            raise DataError(f"`curves[{label!r}]` must be a dict from quantile_calibration with 'levels' and 'observed', got {keys}")
        levels = _vector(curve["levels"], f"`curves[{label!r}]['levels']`")
        observed = _vector(curve["observed"], f"`curves[{label!r}]['observed']`")
        if levels.shape != observed.shape:
            raise DataError(f"`curves[{label!r}]` must have levels and observed of equal length, got {levels.size} and {observed.size}")
        if levels.min() < 0 or levels.max() > 1 or observed.min() < 0 or observed.max() > 1:
            raise DataError(f"`curves[{label!r}]` must have levels and observed frequencies in [0, 1]")
        error = float(curve["error"]) if "error" in curve else float(np.abs(observed - levels).mean())
        ax.plot(levels, observed, marker="o", markersize=2.5, linewidth=1.4, label=f"{label} (calibration error {error:.4f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("expected quantile level p")
    ax.set_ylabel("observed frequency of y ≤ quantile p")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _size_metric(metric: Any) -> tuple[str, str | None, str]:
    """``(key, level or None, axis label)`` of a size-curve metric name, or a ConfigError."""
    if isinstance(metric, str) and metric in REGRESSION_SIZE_METRICS:
        return metric, None, REGRESSION_SIZE_METRICS[metric]
    if isinstance(metric, str) and metric.partition("@")[0] in ("picp", "mpiw") and "@" in metric:
        key, _, level = metric.partition("@")
        try:
            p = float(level)
        except ValueError:
            p = math.nan
        if 0 < p < 1:
            what = "coverage (PICP)" if key == "picp" else "mean width (MPIW)"
            return key, f"{p:g}", f"{p:.0%} interval {what}"
    raise ConfigError(f"`metric` must be one of {sorted(REGRESSION_SIZE_METRICS)} or 'picp@LEVEL' / 'mpiw@LEVEL' "
                      f"(e.g. 'picp@0.9'), got {metric!r}")


def regression_size_curve_plot(curves: Mapping[str, Mapping[str, Any]], path: str | Path, *, metric: str = "nll",
                               title: str | None = None) -> Path:
    """A metric of the mixture of the first k members against k, one line per curve.

    Args:
        curves: ``{label: size_curve}``, each the dict of
            :func:`~ensemblekit.metrics.regression_summary.gaussian_size_curve` (or the
            ``size_curve`` entry of :func:`~ensemblekit.metrics.regression_summary.evaluate_gaussian`).
        path: the PNG to write.
        metric: a key of :data:`REGRESSION_SIZE_METRICS` (default ``nll``, the exact mixture
            NLL), or ``picp@LEVEL`` / ``mpiw@LEVEL`` for a level the curves were computed at
            (e.g. ``picp@0.9``).
        title: figure title (default none).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ConfigError: an unknown ``metric``.
        DataError: empty ``curves``, a curve lacking ``members``, the metric or its level.

    Example:
        >>> regression_size_curve_plot({"deep ensemble": gaussian_size_curve(pd, y)}, "size.png", metric="crps")
    """
    key, level, ylabel = _size_metric(metric)
    if not curves:
        raise DataError("`curves` must hold at least one labelled size curve, got none")
    series = {}
    for label, curve in curves.items():
        if not isinstance(curve, Mapping) or "members" not in curve:
            keys = sorted(curve) if isinstance(curve, Mapping) else type(curve).__name__
            raise DataError(f"`curves[{label!r}]` must be a dict from gaussian_size_curve with a 'members' list, got {keys}")
        if key not in curve:
            raise DataError(f"`curves[{label!r}]` has no {key!r} entry, got keys {sorted(curve)}")
        ys = curve[key]
        if level is not None:
            if not isinstance(ys, Mapping) or level not in ys:
                have = sorted(ys) if isinstance(ys, Mapping) else type(ys).__name__
                raise DataError(f"`curves[{label!r}][{key!r}]` has no level {level!r}, got levels {have}")
            ys = ys[level]
        series[str(label)] = (curve["members"], ys)
    return line_plot(series, path, xlabel="number of members", ylabel=ylabel, title=title)
