"""Figures of the uncertainty evaluation: OOD score histograms, risk-coverage curves, accuracy and ECE under shift, conformal sets.

Per run (:func:`run_plots`, from one ``evaluation`` dict of
:func:`~ensemblekit.evaluation.run.evaluate_uncertainty`) and per comparison (one box or
point per method, from the rows' ``evaluation``: :func:`shift_boxplot`, :func:`risk_coverage_plot`,
:func:`ood_auroc_plot`, :func:`conformal_plot`). Drawn headless like :mod:`ensemblekit.report.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .plots import new_figure, save_figure

__all__ = ["run_plots", "ood_histograms", "rows_at_budget", "series_color", "risk_coverage_plot", "shift_lines", "shift_boxplot", "ood_auroc_plot", "conformal_plot"]

_SCORE_LABELS = {"msp": "- max prob (MSP)", "entropy": "entropy", "mi": "mutual information", "energy": "energy", "max_logit": "- max logit"}


def run_plots(unc: Mapping[str, Any], rd: Any, title: str = "") -> list[Path]:
    """The figures of one run's evaluation: ``ood_scores.png``, ``risk_coverage.png``, ``shift.png`` (those that apply)."""
    out = []
    if unc.get("ood"):
        out.append(ood_histograms(unc["ood"], rd.file("ood_scores.png"), title=f"{title}: OOD scores, test split vs OOD set"))
    if unc.get("selective"):
        curves = {k: (v["coverage"], v["risk"]) for k, v in unc["selective"]["curves"].items()}
        out.append(risk_coverage_plot(curves, rd.file("risk_coverage.png"), title=f"{title}: selective prediction"))
    if unc.get("shift"):
        out.append(shift_lines(unc["shift"], rd.file("shift.png"), title=f"{title}: under shift"))
    return out


def ood_histograms(ood: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """One panel per OOD set x score: the score's histogram on the test split and on the OOD set, with the AUROC."""
    sets = list(ood)
    scores = list(next(iter(ood.values()))["histograms"])
    fig = new_figure((2.8 * len(scores), 2.3 * len(sets) + 0.4))
    axes = fig.subplots(len(sets), len(scores), squeeze=False)
    for i, name in enumerate(sets):
        for j, score in enumerate(scores):
            ax, h = axes[i][j], ood[name]["histograms"][score]
            edges = np.asarray(h["edges"])
            width = np.diff(edges)
            for key, colour, label in (("in", "C0", "test (in)"), ("out", "C3", "OOD")):
                counts = np.asarray(h[key], dtype=float)
                ax.bar(edges[:-1], counts / max(counts.sum(), 1.0), width=width, align="edge", alpha=0.55, color=colour, label=label)
            auroc = ood[name]["scores"][score]["auroc"]
            ax.set_title(f"{name}: {score} (AUROC {100 * auroc:.1f})", fontsize="small")
            if i == len(sets) - 1:
                ax.set_xlabel(_SCORE_LABELS.get(score, score), fontsize="small")
            if i == 0 and j == 0:
                ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def risk_coverage_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "") -> Path:
    """Selective risk (error % among the accepted) against coverage, one line per label."""
    fig = new_figure((5.5, 4.0))
    ax = fig.subplots()
    for label, (cov, risk) in curves.items():
        ax.plot(np.asarray(cov), 100 * np.asarray(risk), label=label)
    ax.set_xlabel("coverage (share of examples predicted)")
    ax.set_ylabel("selective risk (error %)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def shift_lines(shift: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Accuracy and ECE against severity (0 = the clean test split), one thin line per corruption, the mean in black."""
    fig = new_figure((10.0, 4.0))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "accuracy", "accuracy (%)"), (axes[1], "ece", "ECE (%)")):
        clean = 100 * shift["clean"][key]
        for name, rows in shift["corruptions"].items():
            ax.plot([0, *rows["severity"]], [clean, *(100 * np.asarray(rows[key]))], linewidth=1, alpha=0.7, label=name)
        mean = shift["by_severity"]
        ax.plot([0, *mean["severity"]], [clean, *(100 * np.asarray(mean[key]))], color="black", linewidth=2.5, label="mean")
        ax.set_xlabel("severity")
        ax.set_ylabel(label)
    axes[1].legend(fontsize="x-small", ncol=2)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def rows_at_budget(rows: Sequence[Mapping[str, Any]], method: str, budget: int, part: str) -> list[Mapping[str, Any]]:
    return [r["evaluation"][part] for r in rows if r["method"] == method and int(r["budget"]) == budget
            and (r.get("evaluation") or {}).get(part)]


def series_color(k: int, n: int) -> Any:
    """Distinct colours for up to 20 methods (the default cycle repeats after 10)."""
    if n <= 10:
        return f"C{k}"
    import matplotlib

    return matplotlib.colormaps["tab20"](k % 20)


def shift_boxplot(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budget: int, path: str | Path, title: str = "") -> Path | None:
    """Ovadia et al. (2019)'s view: accuracy and ECE against severity, one box per method (the spread over corruptions,
    each corruption's value the mean over seeds); severity 0 is the clean test split."""
    data: dict[str, dict[int, dict[str, list[float]]]] = {}
    severities: list[int] = []
    for m in methods:
        shifts = rows_at_budget(rows, m, budget, "shift")
        if not shifts:
            continue
        severities = [0, *shifts[0]["by_severity"]["severity"]]
        per: dict[int, dict[str, list[float]]] = {s: {"accuracy": [], "ece": []} for s in severities}
        for key in ("accuracy", "ece"):
            per[0][key] = [100 * float(np.mean([sh["clean"][key] for sh in shifts]))]
            for name in shifts[0]["corruptions"]:
                for i, s in enumerate(severities[1:]):
                    per[s][key].append(100 * float(np.mean([sh["corruptions"][name][key][i] for sh in shifts])))
        data[m] = per
    if not data:
        return None
    fig = new_figure((min(16.0, max(7.0, 0.3 * len(severities) * len(data) + 3)), 7.5))
    axes = fig.subplots(2, 1, sharex=True)
    n = len(data)
    width = 0.8 / n
    for ax, key, label in ((axes[0], "accuracy", "accuracy (%)"), (axes[1], "ece", "ECE (%)")):
        for k, (m, per) in enumerate(data.items()):
            pos = [i - 0.4 + width * (k + 0.5) for i in range(len(severities))]
            bp = ax.boxplot([per[s][key] for s in severities], positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False)
            color = series_color(k, n)
            for patch in bp["boxes"]:
                patch.set_facecolor(color)
                patch.set_alpha(0.7)
            ax.plot([], [], color=color, linewidth=6, alpha=0.7, label=m)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(range(len(severities)), ["clean", *map(str, severities[1:])])
    axes[1].set_xlabel("shift severity")
    axes[0].legend(fontsize="small", ncol=min(n, 4))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def comparison_risk_curves(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budget: int, score: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per method: the risk-coverage curve of ``score`` at ``budget``, averaged over seeds on the common coverage grid."""
    out = {}
    for m in methods:
        sel = [s for s in rows_at_budget(rows, m, budget, "selective") if score in s["curves"]]
        if sel:
            grid = np.linspace(0, 1, 101)[1:]
            risks = [np.interp(grid, s["curves"][score]["coverage"], s["curves"][score]["risk"]) for s in sel]
            out[m] = (grid.tolist(), np.mean(risks, axis=0).tolist())
    return out


def ood_auroc_plot(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budget: int, path: str | Path, title: str = "") -> Path | None:
    """Grouped bars: AUROC (%) of every score, per method, one panel per OOD set (mean over seeds)."""
    sets: list[str] = []
    for r in rows:
        for name in ((r.get("evaluation") or {}).get("ood") or {}):
            if name not in sets:
                sets.append(name)
    if not sets:
        return None
    fig = new_figure((max(6.0, 0.9 * len(methods) + 2), 3.0 * len(sets) + 0.5))
    axes = fig.subplots(len(sets), 1, squeeze=False)
    for i, name in enumerate(sets):
        ax = axes[i][0]
        scores: list[str] = []
        vals: dict[str, dict[str, float]] = {}
        for m in methods:
            oods = [o[name] for o in rows_at_budget(rows, m, budget, "ood") if name in o]
            if not oods:
                continue
            mine = list(oods[0]["scores"])
            scores += [s for s in mine if s not in scores]  # a predictor's own score (DDU's density) in its rows only
            vals[m] = {s: 100 * float(np.mean([o["scores"][s]["auroc"] for o in oods])) for s in mine}
        width = 0.8 / max(len(scores), 1)
        for j, s in enumerate(scores):
            ax.bar([k - 0.4 + width * (j + 0.5) for k in range(len(vals))], [vals[m].get(s, np.nan) for m in vals], width=width, label=s, color=f"C{j}")
        ax.set_xticks(range(len(vals)), list(vals), fontsize="small")
        ax.set_ylabel("AUROC (%)")
        ax.set_ylim(max(0.0, min((v for d in vals.values() for v in d.values()), default=50.0) - 5), 100)
        ax.set_title(f"OOD set {name}", fontsize="small")
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.legend(fontsize="x-small", ncol=len(scores))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def conformal_plot(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], path: str | Path, title: str = "") -> Path | None:
    """Mean set size against empirical coverage, one point per method x budget x score (mean over seeds), the target dashed."""
    fig = new_figure((6.0, 4.5))
    ax = fig.subplots()
    alpha, drawn = None, False
    markers = {"thr": "o", "aps": "s", "raps": "^"}
    for k, m in enumerate(methods):
        budgets = sorted({int(r["budget"]) for r in rows if r["method"] == m})
        for b in budgets:
            confs = rows_at_budget(rows, m, b, "conformal")
            for score in (confs[0] if confs else {}):
                cov = 100 * float(np.mean([c[score]["coverage"] for c in confs]))
                size = float(np.mean([c[score]["mean_size"] for c in confs]))
                alpha = confs[0][score]["alpha"]
                ax.scatter(size, cov, color=series_color(k, len(methods)), marker=markers.get(score, "o"), s=20 + 15 * b,
                           label=m if b == budgets[0] and score == next(iter(confs[0])) else None)
                drawn = True
    if not drawn:
        return None
    ax.axhline(100 * (1 - alpha), linestyle="--", color="gray", label=f"target {100 * (1 - alpha):.0f}%")
    ax.set_xlabel("mean prediction-set size (classes)")
    ax.set_ylabel("test coverage (%)")
    ax.legend(fontsize="x-small", ncol=2)
    if title:
        ax.set_title(title, fontsize="small")
    return save_figure(fig, path)
