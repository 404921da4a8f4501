"""PNG figures for reports: reliability diagram, ensemble-size curves, labelled lines.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with an explicit Agg
canvas instead of through ``pyplot``: this renders headless on any machine, never
opens a window, leaves the user's global backend (e.g. in a notebook) untouched, and
keeps no figure in pyplot's registry, so nothing has to be closed and nothing leaks.
Every function writes one PNG (creating parent folders) and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import ConfigError, DataError
from ..metrics.classification import reliability

__all__ = ["reliability_diagram", "size_curve_plot", "line_plot", "training_curves", "lr_plot", "matrix_plot", "new_figure", "save_figure"]

_DPI = 120
_SIZE_METRICS = {
    "error": "test error (%)",
    "accuracy": "accuracy",
    "nll": "NLL",
    "brier": "Brier score",
    "ece": "ECE",
}


def new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    fig.clear()  # drop artists now; the figure is not registered anywhere else
    return path


def _to_numpy(values: Any, what: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on an accelerator
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a sequence of numbers, got {type(values).__name__}") from exc
    if arr.ndim != 1:
        raise DataError(f"{what} must be 1-D, got shape {arr.shape}")
    return arr


def reliability_diagram(
    probs: Any,
    y: Any,
    path: str | Path,
    n_bins: int = 15,
    title: str | None = None,
    calibrated: Any = None,
) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal.

    The top panel shows each bin's accuracy (bars), the gap to the bin's mean
    confidence (hatched) and perfect calibration (dashed); the legend carries the ECE.
    The bottom panel is the confidence histogram (fraction of examples per bin). Bins
    as in :func:`ensemblekit.metrics.ece`. With ``calibrated``, a second column shows the
    same after post-hoc calibration (before | after).

    Args:
        probs: one predictive distribution, shape ``(B, C)`` (for an ensemble, its
            :func:`~ensemblekit.metrics.ensemble_mean`).
        y: int64 labels, shape ``(B,)``.
        path: the PNG to write.
        n_bins: number of equal-width bins on [0, 1] (default 15, >= 1).
        title: figure title (default none).
        calibrated: the calibrated distribution ``(B, C)`` (default none: one column).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        DataError: bad shapes or labels. ConfigError: ``n_bins`` < 1.
    """
    panels = [("", probs)] if calibrated is None else [("before calibration", probs), ("temperature-scaled", calibrated)]
    fig = new_figure((5.0 * len(panels), 6.0))
    axes = fig.subplots(2, len(panels), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for col, (label, p) in enumerate(panels):
        _reliability_panel(axes[0][col], axes[1][col], p, y, n_bins, label)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _reliability_panel(top: Any, bottom: Any, probs: Any, y: Any, n_bins: int, label: str) -> None:
    rel = reliability(probs, y, n_bins=n_bins)
    edges, counts = rel["edges"], rel["counts"]
    width = 1.0 / n_bins
    left = edges[:-1]
    filled = counts > 0
    acc = np.where(filled, rel["accuracy"], 0.0)
    conf = np.where(filled, rel["confidence"], 0.0)
    top.bar(left, acc, width=width, align="edge", color="C0", edgecolor="black", linewidth=0.5,
            label=f"accuracy (ECE = {rel['ece']:.4f})")
    # The gap spans [min(acc, conf), max(acc, conf)]: hatched only, so it reads the same
    # above a bar (over-confident bin) and over its top (under-confident bin).
    top.bar(left[filled], np.abs(conf - acc)[filled], bottom=np.minimum(acc, conf)[filled], width=width,
            align="edge", facecolor="none", edgecolor="C3", hatch="///", linewidth=0.8, label="gap to confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="best", fontsize="small")
    if label:
        top.set_title(label)
    bottom.bar(left, counts / max(int(counts.sum()), 1), width=width, align="edge", color="C0",
               edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("fraction")


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    yerr: Mapping[str, Sequence[float]] | None = None,
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """Labelled lines ``label -> (xs, ys)`` on one axis, with optional error bars.

    Args:
        series: ``{label: (xs, ys)}``, each a 1-D sequence, list, array or tensor of
            equal length; lines are drawn in insertion order.
        path: the PNG to write.
        xlabel, ylabel: axis labels.
        title: figure title (default none).
        yerr: ``{label: errors}`` (e.g. std over seeds), same length as that label's
            ``ys``; labels without an entry get no error bars.
        logx: log-scale x axis (default False). logy: log-scale y axis (default False).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        DataError: empty ``series``, lengths that disagree, ``yerr`` for an unknown label.

    Example:
        >>> line_plot({"FGE": ([1, 2, 3], [8.7, 6.1, 5.9])}, "fge.png", "budget", "error (%)",
        ...           yerr={"FGE": [0.5, 0.3, 0.2]})
    """
    if not series:
        raise DataError("`series` must hold at least one labelled (xs, ys) pair, got none")
    yerr = dict(yerr or {})
    unknown = sorted(set(yerr) - set(series))
    if unknown:
        raise DataError(f"`yerr` has labels {unknown} that are not in `series` (labels: {sorted(series)})")

    fig = new_figure((6.0, 4.0))
    ax = fig.subplots()
    integer_x = True
    for label, pair in series.items():
        try:
            xs, ys = pair
        except (TypeError, ValueError) as exc:
            raise DataError(f"`series[{label!r}]` must be an (xs, ys) pair, got {type(pair).__name__}") from exc
        xs = _to_numpy(xs, f"`series[{label!r}]` xs")
        ys = _to_numpy(ys, f"`series[{label!r}]` ys")
        if xs.shape != ys.shape:
            raise DataError(f"`series[{label!r}]` must have xs and ys of equal length, got {len(xs)} and {len(ys)}")
        integer_x = integer_x and bool(np.all(np.mod(xs, 1) == 0))
        err = None
        if label in yerr:
            err = _to_numpy(yerr[label], f"`yerr[{label!r}]`")
            if err.shape != ys.shape:
                raise DataError(f"`yerr[{label!r}]` must have length {len(ys)} like its ys, got {len(err)}")
        ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, capsize=3 if err is not None else 0, label=str(label))
    if logx:
        ax.set_xscale("log")
    elif integer_x:  # member counts, budgets: no 2.5-member ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, which="both" if logy else "major")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def size_curve_plot(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    metric: str = "error",
    title: str | None = None,
) -> Path:
    """A metric of the ensemble against its number of members, one line per curve.

    Args:
        curves: ``{label: curve}``, each curve a dict from
            :func:`ensemblekit.metrics.size_curve` (needs ``members`` and the metric;
            ``error`` is derived from ``accuracy`` when absent).
        path: the PNG to write.
        metric: one of ``error`` (percent, default), ``accuracy``, ``nll``, ``brier``,
            ``ece``.
        title: figure title (default none).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ConfigError: unknown ``metric``.
        DataError: empty ``curves`` or a curve lacking ``members`` or the metric.

    Example:
        >>> size_curve_plot({"Ind": size_curve(p_ind, y), "FGE": size_curve(p_fge, y)}, "size.png")
    """
    if metric not in _SIZE_METRICS:
        raise ConfigError(f"`metric` must be one of {sorted(_SIZE_METRICS)}, got {metric!r}")
    if not curves:
        raise DataError("`curves` must hold at least one labelled size curve, got none")
    series = {}
    for label, curve in curves.items():
        if "members" not in curve:
            raise DataError(f"`curves[{label!r}]` must have a 'members' list (a dict from size_curve), got keys {sorted(curve)}")
        if metric in curve:
            ys = curve[metric]
        elif metric == "error" and "accuracy" in curve:
            ys = 100.0 * (1.0 - _to_numpy(curve["accuracy"], f"`curves[{label!r}]['accuracy']`"))
        else:
            raise DataError(f"`curves[{label!r}]` has no {metric!r} entry, got keys {sorted(curve)}")
        series[label] = (curve["members"], ys)
    return line_plot(series, path, xlabel="number of members", ylabel=_SIZE_METRICS[metric], title=title)


def training_curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Training loss and validation accuracy against the global epoch, one line per stage.

    Args:
        history: per-epoch records with ``stage``, ``train_loss`` and optionally ``val_acc``
            (``Method.history_`` or the lines of ``metrics.jsonl``, whose event lines, such
            as a change of thread count, are skipped).
        path: the PNG to write.
    """
    history = [rec for rec in history if "event" not in rec]
    if not history:
        raise DataError("`history` is empty: nothing to plot")
    fig = new_figure((9.0, 3.6))
    left, right = fig.subplots(1, 2)
    stages: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for i, rec in enumerate(history, start=1):
        stages.setdefault(str(rec.get("stage", "train")), []).append((i, rec))
    for stage, recs in stages.items():
        xs = [i for i, _ in recs]
        left.plot(xs, [r["train_loss"] for _, r in recs], label=stage)
        val = [(i, r["val_acc"]) for i, r in recs if "val_acc" in r]
        if val:
            right.plot([i for i, _ in val], [100 * (1 - a) for _, a in val], label=stage)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (mean member)")
    right.set_xlabel("epoch")
    right.set_ylabel("validation error of the ensemble (%)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        if len(stages) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def lr_plot(steps: Sequence[int], lrs: Sequence[float], path: str | Path, marks: Sequence[int] = (), steps_per_epoch: int | None = None, title: str | None = None) -> Path:
    """Learning rate vs iteration, with member-collection points marked (snapshot, FGE).

    Args:
        steps, lrs: the policy evaluated at each iteration.
        marks: iterations after which a member is collected (drawn as dots).
        steps_per_epoch: adds a secondary epoch axis when given.
    """
    fig = new_figure((7.0, 3.6))
    ax = fig.subplots()
    ax.plot(steps, lrs, lw=1.2, label="learning rate")
    if marks:
        ax.plot(list(marks), [lrs[min(m, len(lrs) - 1)] for m in marks], "o", ms=5, color="C3", label=f"members collected ({len(marks)})")
        ax.legend()
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    if steps_per_epoch:
        sec = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
        sec.set_xlabel("epoch")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def matrix_plot(matrix: Any, path: str | Path, labels: Sequence[str] | None = None, title: str | None = None, cbar: str = "") -> Path:
    """A square matrix as a heatmap with its values written in the cells (up to 12 x 12)."""
    arr = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
    n = arr.shape[0]
    fig = new_figure((1.2 + 0.45 * n + 1.5, 1.0 + 0.45 * n + 0.5))
    ax = fig.subplots()
    im = ax.imshow(arr, cmap="viridis")
    fig.colorbar(im, ax=ax, label=cbar)
    ticks = list(labels) if labels is not None else [str(i + 1) for i in range(n)]
    ax.set_xticks(range(n), ticks, rotation=90, fontsize=7)
    ax.set_yticks(range(n), ticks, fontsize=7)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{arr[i, j]:.3g}", ha="center", va="center", fontsize=6, color="w")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
