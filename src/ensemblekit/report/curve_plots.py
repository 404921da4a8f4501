"""Figures of mode-connecting curves: metrics along t, the two-model ensemble vs t, the plane.

Drawn with the headless helpers of :mod:`ensemblekit.report.plots` (no pyplot). Each
function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .plots import new_figure, save_figure

__all__ = ["curve_metrics_plot", "two_model_plot", "plane_plot"]


def curve_metrics_plot(evals: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Train loss and test error (%) along t, one line per curve (e.g. ``line``, ``bezier``, ``polychain``).

    Args:
        evals: ``{label: CurveEvaluation}`` (anything with ``ts``, ``train_loss``, ``test_error``).
        path: the PNG to write.
    """
    fig = new_figure((10, 4))
    axes = fig.subplots(1, 2)
    for label, ev in evals.items():
        style = "--" if label == "line" else "-"
        axes[0].plot(ev.ts, ev.train_loss, style, label=label)
        axes[1].plot(ev.ts, ev.test_error, style, label=label)
    for ax, name in zip(axes, ("train loss", "test error (%)")):
        ax.set_xlabel("t")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def two_model_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
                   references: Mapping[str, float] | None = None, title: str | None = None) -> Path:
    """Test error (%) of the two-model ensemble ``{w0, phi(t)}`` against t, with horizontal reference lines.

    Args:
        series: ``{label: (ts, errors)}``.
        references: ``{label: error}`` drawn as dotted horizontal lines (e.g. w0 alone,
            the independent pair {w0, w1}).
    """
    fig = new_figure((6, 4))
    ax = fig.subplots()
    for label, (ts, errs) in series.items():
        ax.plot(ts, errs, "--" if label == "line" else "-", label=label)
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, linestyle=":", color=f"C{len(series) + i}", label=f"{label} ({value:.2f})")
    ax.set_xlabel("t")
    ax.set_ylabel("test error of {w0, phi(t)} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "two-model ensemble along the curve")
    return save_figure(fig, path)


def plane_plot(xs: np.ndarray, ys: np.ndarray, errors: np.ndarray, marks: Mapping[str, tuple[float, float]],
               path: str | Path, curve_xy: tuple[Sequence[float], Sequence[float]] | None = None, title: str | None = None) -> Path:
    """Test error (%) over a 2-D plane in weight space (``errors`` of shape ``(len(ys), len(xs))``),
    with the points in ``marks`` (``{label: (x, y)}``) and optionally the curve drawn through it."""
    fig = new_figure((6, 5))
    ax = fig.subplots()
    levels = np.linspace(float(np.nanmin(errors)), float(np.nanmax(errors)), 20)
    cs = ax.contourf(xs, ys, errors, levels=levels, cmap="viridis_r")
    fig.colorbar(cs, ax=ax, label="test error (%)")
    if curve_xy is not None:
        ax.plot(curve_xy[0], curve_xy[1], "w-", linewidth=1.5, label="curve")
    for label, (x, y) in marks.items():
        ax.plot([x], [y], "o", markersize=7, label=label)
    ax.set_xlabel("along w1 - w0")
    ax.set_ylabel("towards the bend")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "test error in the plane of w0, w1 and the bend")
    return save_figure(fig, path)
