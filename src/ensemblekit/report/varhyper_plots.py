"""Plots of the variational hypernetwork experiment (docs/methods.md, varhyper).

- ``varhyper_pruning.png``: test accuracy vs share of pruned weights, one panel per model
  kind (hypernetwork forms, separate variational nets, L2 nets), one curve per lambda;
- ``varhyper_lambda.png``: unpruned test accuracy vs lambda, every kind on one axis;
- ``varhyper_kl.png``: KL(q_lambda || p) vs lambda for the variational kinds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .plots import line_plot, new_figure, save_figure
from .tables import markdown_table

__all__ = ["write_varhyper_plots", "pruning_panels", "varhyper_markdown"]

#: The pruned shares ``varhyper.md`` shows (all of them when the grid has none of these).
SHOWN_FRACTIONS = (0.0, 0.6, 0.8, 0.9)


def varhyper_markdown(summary: Mapping[str, Any], lambdas: Sequence[float], fractions: Sequence[float], runs: Mapping[str, str],
                      title: str, seeds: int) -> str:
    """The family's table: per kind and lambda, KL(q, prior), test accuracy mean ± std at the
    pruned shares of :data:`SHOWN_FRACTIONS` and the training seconds of one run.

    Args:
        summary: ``{kind: {acc_mean, acc_std (lambda x fraction), kl_mean, train_s}}`` over seeds.
        runs: ``{kind: what one run trains}`` (e.g. ``"one run, all lambdas"``, ``"6 nets"``).
        title: the heading's start. seeds: how many seeds the means are over.
    """
    shown = [j for j, f in enumerate(fractions) if round(f, 2) in SHOWN_FRACTIONS] or list(range(len(fractions)))
    head = ["model", "lambda", "KL(q, prior)", *[f"acc @ {fractions[j]:.0%} pruned" for j in shown], "train s / run"]
    body = []
    for kind, s in summary.items():
        for i, lam in enumerate(lambdas):
            cells = [f"{100 * s['acc_mean'][i][j]:.1f} ± {100 * s['acc_std'][i][j]:.1f}" for j in shown]
            kl = f"{s['kl_mean'][i]:.0f}" if s.get("kl_mean") else "-"
            body.append([kind, f"{lam:g}", kl, *cells, f"{s['train_s'][0]:.0f} ({runs[kind]})" if i == 0 else ""])
    return (f"# {title}: test accuracy % (mean ± std over {seeds} seeds)\n\n"
            + markdown_table(head, body) + "\n\nWall-clock seconds include other processes' load.\n")


def pruning_panels(results: Mapping[str, Any], path: str | Path) -> Path:
    """Accuracy vs pruned share: one panel per kind, one line per lambda (mean over seeds, ± std)."""
    summary, lambdas, fr = results["summary"], results["lambdas"], np.asarray(results["fractions"]) * 100
    kinds = list(summary)
    fig = new_figure((3.6 * len(kinds), 3.3))
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        mean, std = np.asarray(summary[kind]["acc_mean"]) * 100, np.asarray(summary[kind]["acc_std"]) * 100
        for i, lam in enumerate(lambdas):
            ax.errorbar(fr, mean[i], yerr=std[i], marker="o", ms=3, capsize=2, label=f"λ={lam:g}")
        ax.set_title(kind)
        ax.set_xlabel("pruned weights %")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy %")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"{results['data']}: accuracy vs pruned share")
    return save_figure(fig, path)


def write_varhyper_plots(results: Mapping[str, Any], run_dir: str | Path) -> list[Path]:
    """Write the three plots into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    summary, lambdas = results["summary"], results["lambdas"]
    paths = [pruning_panels(results, run_dir / "varhyper_pruning.png")]
    acc = {k: (lambdas, [100 * row[0] for row in s["acc_mean"]]) for k, s in summary.items()}
    err = {k: [100 * row[0] for row in s["acc_std"]] for k, s in summary.items()}
    paths.append(line_plot(acc, run_dir / "varhyper_lambda.png", "λ", "test accuracy % (unpruned)",
                           title=f"{results['data']}: accuracy vs complexity λ", yerr=err, logx=True))
    kl = {k: (lambdas, s["kl_mean"]) for k, s in summary.items() if s.get("kl_mean") is not None}
    if kl:
        paths.append(line_plot(kl, run_dir / "varhyper_kl.png", "λ", "KL(q_λ || p)", title=f"{results['data']}: KL vs λ", logx=True))
    return paths
