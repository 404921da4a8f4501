"""EdgeNES report: the results table (Markdown) and two figures.

``nes_common_edges.png``: the discrete common-edge count of sampled architectures with
alpha* against lambda (the diversity control); ``nes_accuracy_cost.png``: ensemble test
accuracy against the wall-clock cost (finding + retraining) of every method.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from .plots import new_figure, save_figure

__all__ = ["nes_markdown", "write_nes_plots"]


def nes_markdown(summary: Mapping[str, Mapping[str, float]], runs: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """The table: method, test accuracy mean ± std (%), finding cost, retraining cost (s), plus Spearman(lambda, common edges).

    ``labels``: how each method is named in the table (default its registered name)."""
    labels = labels or {}
    lines = ["| method | test acc. % | error % | find (s) | retrain (s) | AUC acc-vs-time | seeds |", "|---|---|---|---|---|---|---|"]
    for m, s in summary.items():
        auc = f"{s['auc']:.3f}" if "auc" in s else ""
        lines.append(f"| {labels.get(m, m)} | {s['acc_mean']:.2f} ± {s['acc_std']:.2f} | {100 - s['acc_mean']:.2f} | {s['find_s']:.0f} | {s['retrain_s']:.0f} | {auc} | {int(s['seeds'])} |")
    rho = [r["spearman"] for r in runs if "spearman" in r]
    if rho:
        lines.append("")
        lines.append(f"Spearman(lambda, common edges with alpha*) over the grid, per seed: {', '.join(f'{x:.3f}' for x in rho)}")
    return "\n".join(lines) + "\n"


def write_nes_plots(runs: Sequence[Mapping[str, Any]], summary: Mapping[str, Mapping[str, float]], out: str,
                    labels: Mapping[str, str] | None = None) -> list[str]:
    """Write ``nes_common_edges.png`` (when a run reports its lambda grid) and ``nes_accuracy_cost.png``; returns the paths."""
    labels = labels or {}
    paths = []
    grids = [r["grid"] for r in runs if "grid" in r]
    if grids:
        fig = new_figure((5, 4))
        ax = fig.add_subplot()
        for r, grid in zip(runs, grids):
            lam = np.array([g["lambda"] for g in grid])
            com = np.array([g["common"] for g in grid])
            ax.scatter(lam, com, s=10, alpha=0.5, label=f"seed {r['seed']}")
        top = max(g["lambda"] for g in grids[0])
        ax.plot([0, top], [0, top], "k--", lw=1, label="common = lambda")
        ax.set_xlabel("lambda")
        ax.set_ylabel("common edges with alpha*")
        ax.legend()
        paths.append(str(save_figure(fig, os.path.join(out, "nes_common_edges.png"))))
    fig = new_figure((6, 4))
    ax = fig.add_subplot()
    for m, s in summary.items():
        ax.errorbar(s["find_s"] + s["retrain_s"], s["acc_mean"], yerr=s["acc_std"], fmt="o", capsize=3, label=labels.get(m, m))
    ax.set_xlabel("wall-clock cost: finding + retraining (s)")
    ax.set_ylabel("ensemble test accuracy (%)")
    ax.legend(fontsize=7)
    paths.append(str(save_figure(fig, os.path.join(out, "nes_accuracy_cost.png"))))
    return paths
