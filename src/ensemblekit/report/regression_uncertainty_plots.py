"""Figures of a regression comparison's uncertainty evaluation at the largest budget: shift, OOD AUROC,
selective risk-coverage, conformal intervals.

The regression counterpart of the comparison figures of :mod:`.uncertainty_plots` (one line, bar or point
per method, mean over seeds, from the rows' ``evaluation``; docs/evaluation.md, "Regression"):
:func:`regression_shift_plot` (RMSE, NLL and 95% coverage against severity),
:func:`~.uncertainty_plots.ood_auroc_plot` (shared: it reads any scores), :func:`regression_risk_coverage_plot`
(the MSE of the kept examples, the oracle dashed) and :func:`regression_conformal_plot` (coverage against
mean interval width). :func:`regression_uncertainty_plots` writes those that apply. Drawn headless like
:mod:`ensemblekit.report.plots`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .plots import new_figure, save_figure
from .tables import mean_std
from .uncertainty_plots import rows_at_budget, series_color, comparison_risk_curves, ood_auroc_plot

__all__ = ["regression_uncertainty_plots", "regression_shift_plot", "regression_risk_coverage_plot", "regression_oracle_curves",
           "regression_conformal_plot"]

Row = Mapping[str, Any]


def regression_uncertainty_plots(rows: Sequence[Row], methods: Sequence[str], top: int, out_dir: str | os.PathLike[str],
                                 title: str = "") -> list[Path]:
    """``shift.png``, ``ood_auroc.png``, ``risk_coverage.png`` and ``conformal.png`` of the rows at budget ``top``
    (each only when some row has its part; risk-coverage only when the curves are stored); returns the paths written."""
    out_dir = Path(out_dir)
    written = [regression_shift_plot(rows, methods, top, out_dir / "shift.png", title=f"{title}: under shift ({top}B; mean over corruptions)"),
               ood_auroc_plot(rows, methods, top, out_dir / "ood_auroc.png", title=f"{title}: OOD detection ({top}B)")]
    with_curves = [r for r in rows if ((r.get("evaluation") or {}).get("selective") or {}).get("curves")]
    scores = next((list(r["evaluation"]["selective"]["curves"]) for r in with_curves if int(r["budget"]) == top), [])
    if scores:
        score = "std" if "std" in scores else scores[0]
        curves = comparison_risk_curves(with_curves, methods, top, score)
        written.append(regression_risk_coverage_plot(curves, out_dir / "risk_coverage.png",
                                                     oracle=regression_oracle_curves(with_curves, methods, top),
                                                     title=f"{title}: selective regression ({top}B, score {score})"))
    written.append(regression_conformal_plot(rows, methods, top, out_dir / "conformal.png", title=f"{title}: intervals ({top}B)"))
    return [p for p in written if p is not None]


_SHIFT_PANELS = (("rmse", "RMSE", 1.0), ("nll", "NLL", 1.0), ("picp95", "PICP at 95% (%)", 100.0))


def regression_shift_plot(rows: Sequence[Row], methods: Sequence[str], budget: int, path: str | Path, title: str = "") -> Path | None:
    """RMSE, NLL and 95% coverage against severity (0 = the clean test split), one line per method: the mean
    over corruptions of each seed, then mean ± std over seeds; ``None`` when no row at ``budget`` has a shift."""
    drawn = {m: s for m in methods if (s := rows_at_budget(rows, m, budget, "shift"))}
    if not drawn:
        return None
    fig = new_figure((13.0, 4.0))
    axes = fig.subplots(1, len(_SHIFT_PANELS))
    for ax, (key, label, scale) in zip(axes, _SHIFT_PANELS):
        for k, (m, shifts) in enumerate(drawn.items()):
            xs = [0, *shifts[0]["by_severity"]["severity"]]
            per_seed = [[scale * sh["clean"][key], *(scale * np.asarray(sh["by_severity"][key]))] for sh in shifts]
            stats = [mean_std([float(seed[i]) for seed in per_seed]) for i in range(len(xs))]
            ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", markersize=4, capsize=3,
                        color=series_color(k, len(drawn)), label=m)
        if key == "picp95":
            ax.axhline(95.0, linestyle="--", color="gray", label="nominal 95%")
        ax.set_xlabel("shift severity (0: clean)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def regression_oracle_curves(rows: Sequence[Row], methods: Sequence[str], budget: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per method: the oracle's risk-coverage curve (ranked by the true squared error) at ``budget``, averaged over seeds."""
    out = {}
    grid = np.linspace(0, 1, 101)[1:]
    for m in methods:
        sel = [s["oracle"] for s in rows_at_budget(rows, m, budget, "selective") if (s.get("oracle") or {}).get("coverage")]
        if sel:
            out[m] = (grid.tolist(), np.mean([np.interp(grid, o["coverage"], o["risk"]) for o in sel], axis=0).tolist())
    return out


def regression_risk_coverage_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
                                  oracle: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                                  title: str = "") -> Path | None:
    """Selective risk (MSE of the kept examples) against coverage, one line per label, each label's ``oracle``
    curve dashed in its colour; ``None`` without curves."""
    if not curves:
        return None
    fig = new_figure((5.5, 4.0))
    ax = fig.subplots()
    for k, (label, (cov, risk)) in enumerate(curves.items()):
        color = series_color(k, len(curves))
        ax.plot(np.asarray(cov), np.asarray(risk), color=color, label=label)
        if oracle and label in oracle:
            ax.plot(np.asarray(oracle[label][0]), np.asarray(oracle[label][1]), color=color, linestyle="--", linewidth=1,
                    label=f"{label} (oracle)")
    ax.set_xlabel("coverage (share of examples predicted)")
    ax.set_ylabel("selective risk (MSE of the kept examples)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="x-small")
    if title:
        ax.set_title(title, fontsize="small")
    return save_figure(fig, path)


def regression_conformal_plot(rows: Sequence[Row], methods: Sequence[str], budget: int, path: str | Path, title: str = "") -> Path | None:
    """Test coverage against mean interval width at ``budget``, one point per method (mean ± std over seeds): the
    normalised conformal interval filled, the mixture's own interval hollow, the target coverage dashed."""
    fig = new_figure((6.0, 4.5))
    ax = fig.subplots()
    target, drawn = None, False
    for k, m in enumerate(methods):
        confs = rows_at_budget(rows, m, budget, "conformal")
        for part, face in (("normalized", None), ("mixture_interval", "none")):
            ok = [c[part] for c in confs if c.get(part)]
            if not ok:
                continue
            (cov, cs), (width, ws) = mean_std([100 * c["coverage"] for c in ok]), mean_std([c["mean_width"] for c in ok])
            color = series_color(k, len(methods))
            ax.errorbar(width, cov, xerr=ws, yerr=cs, marker="o" if face is None else "s", markersize=7, capsize=2, color=color,
                        markerfacecolor=face or color, linestyle="none",
                        label=m if face is None else f"{m} (mixture interval)")
            drawn = True
            if part == "normalized":
                target = 100 * (1 - ok[0]["alpha"])
    if not drawn:
        return None
    if target is not None:
        ax.axhline(target, linestyle="--", color="gray", label=f"target {target:g}%")
    ax.set_xlabel("mean interval width (targets' units)")
    ax.set_ylabel("test coverage (%)")
    ax.legend(fontsize="x-small")
    if title:
        ax.set_title(title, fontsize="small")
    return save_figure(fig, path)
