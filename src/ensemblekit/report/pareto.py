"""The cost Pareto plot of a comparison: test error and NLL against training and inference FLOPs.

One point per method and budget (mean over seeds, error bars: sample std), log-scaled
FLOPs, points of a method joined in budget order, the Pareto front (no other point is both
cheaper and better) drawn as a step line.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from .plots import new_figure, save_figure
from .tables import is_regression, mean_std

__all__ = ["pareto_plot", "pareto_front"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (x) and error (y), sorted by cost."""
    front, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def pareto_plot(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], path: str | os.PathLike[str], title: str = "") -> str:
    """Write the 2 x 2 figure (error, NLL) x (training FLOPs, inference FLOPs per example); returns the path
    (for regression rows RMSE and NLL)."""
    ok = [r for r in rows if "failed" not in r and "skipped" not in r and r.get("cost", {}).get("train_flops")]
    fig = new_figure((10.0, 7.5))
    axes = fig.subplots(2, 2)
    point = "rmse" if is_regression(ok) else "error"
    plabel = "test RMSE" if point == "rmse" else "test error (%)"
    panels = [("train_flops", point, "training FLOPs", plabel), ("inference_flops", point, "inference FLOPs per example", plabel),
              ("train_flops", "nll", "training FLOPs", "test NLL"), ("inference_flops", "nll", "inference FLOPs per example", "test NLL")]
    for ax, (cost, metric, xlabel, ylabel) in zip(axes.flat, panels):
        everything = []
        for m in methods:
            by_budget: dict[int, list[tuple[float, float]]] = defaultdict(list)
            for r in ok:
                if r["method"] == m:
                    y = 100.0 * (1 - r["test"]["accuracy"]) if metric == "error" else r["test"][metric]
                    by_budget[int(r["budget"])].append((float(r["cost"][cost]), float(y)))
            if not by_budget:
                continue
            xs, ys, es = [], [], []
            for b in sorted(by_budget):
                xs.append(float(np.mean([p[0] for p in by_budget[b]])))
                mu, sd = mean_std([p[1] for p in by_budget[b]])
                ys.append(mu)
                es.append(sd)
            ax.errorbar(xs, ys, yerr=es, marker="o", markersize=4, capsize=2, label=m)
            everything += list(zip(xs, ys))
        front = pareto_front(everything)
        if len(front) > 1:
            fx, fy = zip(*front)
            ax.step(fx, fy, where="post", color="black", lw=0.8, alpha=0.5, ls="--", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return str(save_figure(fig, path))
