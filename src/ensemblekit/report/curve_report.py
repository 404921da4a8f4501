"""The curve report: metrics along t for the straight line and each curve, tables and plots.

Used by the ``curve_ensemble`` method's own report and by the ``ensemblekit curve`` preset.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from ..curves import evaluate_curve, summarize, two_model_errors
from ..curves.model import CurveModel
from ..curves.plane import plane_grid
from ..data.dataset import Data
from ..serialization import atomic_write_text, write_json
from .curve_plots import curve_metrics_plot, plane_plot, two_model_plot
from .tables import markdown_table

__all__ = ["write_curve_report", "summary_markdown"]


def write_curve_report(curves: Mapping[str, CurveModel], data: Data, out_dir: str, grid: int = 61, plane: int = 0,
                       references: Mapping[str, float] | None = None, plots: bool = True) -> dict[str, Any]:
    """Evaluate the straight line and each curve on a t grid; write ``curve.json``, ``curve.md`` and
    (unless ``plots=False``) the plots: metrics along t, the two-model ensemble, the plane (``plane > 0``).

    Returns:
        ``{label: summary}`` (see :func:`~ensemblekit.curves.summarize`), ``line`` included.
    """
    from ..curves import t_grid

    ts = t_grid(grid)
    first = next(iter(curves.values()))
    evals = {"line": evaluate_curve(first.line(), data, ts), **{k: evaluate_curve(c, data, ts) for k, c in curves.items()}}
    yte = data.test.tensors()[1]  # type: ignore[union-attr]
    pairs = {k: two_model_errors(ev, yte) for k, ev in evals.items()}
    summary = {k: summarize(ev) for k, ev in evals.items()}
    for k in evals:
        summary[k]["pair_error_min"] = float(pairs[k].min())
    os.makedirs(out_dir, exist_ok=True)
    grid_rows = {k: [{**row, "pair_error": float(p)} for row, p in zip(ev.table(), pairs[k])] for k, ev in evals.items()}
    write_json(os.path.join(out_dir, "curve.json"), {"summary": summary, "grid": grid_rows})
    atomic_write_text(os.path.join(out_dir, "curve.md"), summary_markdown(summary))
    if plots:
        _plots(curves, evals, pairs, data, out_dir, plane, references)
    return summary


def _plots(curves: Mapping[str, CurveModel], evals: Mapping[str, Any], pairs: Mapping[str, Any], data: Data, out_dir: str, plane: int,
           references: Mapping[str, float] | None) -> None:
    curve_metrics_plot(evals, os.path.join(out_dir, "curve_metrics.png"), title="train loss and test error along t")
    refs = {"w0 alone": float(evals["line"].test_error[0]), **dict(references or {})}
    two_model_plot({k: (ev.ts, pairs[k]) for k, ev in evals.items()}, os.path.join(out_dir, "curve_two_model.png"), references=refs)
    if plane:
        for k, c in curves.items():
            pg = plane_grid(c, data, size=plane)
            plane_plot(pg["xs"], pg["ys"], pg["errors"], pg["marks"], os.path.join(out_dir, f"plane_{k}.png"), curve_xy=pg["curve_xy"],
                       title=f"test error (%) in the plane of w0, w1 and the {k} bend")


def summary_markdown(summary: Mapping[str, Mapping[str, float]]) -> str:
    header = ["path", "train loss min/max/mean/int", "test err % min/max/mean/int", "barrier (pts)", "t=0.5 train loss", "t=0.5 test err %"]
    body = [[k, "/".join(f"{s[f'train_loss_{q}']:.4f}" for q in ("min", "max", "mean", "int")),
             "/".join(f"{s[f'test_error_{q}']:.2f}" for q in ("min", "max", "mean", "int")),
             f"{s['barrier']:.2f}", f"{s['mid_train_loss']:.4f}", f"{s['mid_test_error']:.2f}"] for k, s in summary.items()]
    return markdown_table(header, body)
