"""Markdown tables of the uncertainty evaluation in a comparison: calibrated NLL/ECE, shift, OOD, selective, conformal.

Each table is mean ± sample std over seeds, from the rows' ``evaluation`` (see
:func:`~ensemblekit.evaluation.run.evaluate_uncertainty`); a table whose part no row has is left out.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

from .tables import grid, markdown_table, marked_body, mean_std, mean_std_cell, is_regression, paired_grid

__all__ = ["uncertainty_markdown", "row_value", "budget_table", "columns_table", "add_section", "percent", "mean_or_none"]


def row_value(r: Mapping[str, Any], *path: Any) -> Any:
    node: Any = r.get("evaluation") or {}
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def budget_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int], fn: Callable[[Mapping[str, Any]], Any],
                  digits: int, better: str | None = None) -> str | None:
    """Methods x budgets, each cell mean ± std [95% interval]; with ``better`` (``min`` / ``max``) the best of
    each budget and its statistical ties bold (:func:`~.tables.marked_body`)."""
    g = paired_grid(rows, fn)
    if not g:
        return None
    return markdown_table(["method", *[f"{b}B" for b in budgets]], marked_body(g, methods, budgets, digits, better))


def columns_table(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], columns: Sequence[tuple[str, Callable[[Mapping[str, Any]], Any]]],
                   digits: int, better: str | None = None) -> str | None:
    """Rows = methods, columns = named quantities (one budget's rows); ``better`` as :func:`budget_table`."""
    g: dict[tuple[str, Any], dict[Any, float]] = {}
    for name, fn in columns:
        for key, values in paired_grid(rows, fn, column=lambda r, n=name: n).items():
            g[key] = values
    if not g:
        return None
    names = [c for c, _ in columns]
    return markdown_table(["method", *names], marked_body(g, methods, names, digits, better))


def add_section(parts: list[str], title: str, note: str, table: str | None) -> None:
    if table:
        parts += [f"## {title}", "", note, "", table, ""] if note else [f"## {title}", "", table, ""]


def uncertainty_markdown(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int]) -> str:
    """The uncertainty sections of a comparison's ``results.md`` (empty when no row has an evaluation); regression
    rows get :func:`~.regression_uncertainty_tables.regression_uncertainty_markdown`'s."""
    if is_regression(rows):
        from .regression_uncertainty_tables import regression_uncertainty_markdown

        return regression_uncertainty_markdown(rows, methods, budgets)
    rows = [r for r in rows if r.get("evaluation")]
    if not rows:
        return ""
    top = max(budgets)
    at_top = [r for r in rows if int(r["budget"]) == top]
    parts: list[str] = []
    add_section(parts, "Test NLL, temperature-scaled (pool, then calibrate)",
             "One temperature fitted on the validation split to the ensemble's mean (Ashukha et al. 2020: compare methods on this, not on raw NLL).",
             budget_table(rows, methods, budgets, lambda r: row_value(r, "calibration", "pool_then_calibrate", "nll"), 3, "min"))
    add_section(parts, "Test NLL, members temperature-scaled, then pooled", "",
             budget_table(rows, methods, budgets, lambda r: row_value(r, "calibration", "calibrate_then_pool", "nll"), 3, "min"))
    add_section(parts, "Test ECE (%), temperature-scaled (pool, then calibrate)", "",
             budget_table(rows, methods, budgets, lambda r: percent(row_value(r, "calibration", "pool_then_calibrate", "ece")), 2, "min"))
    if any(row_value(r, "calibration", "vector") for r in rows):
        add_section(parts, "Test NLL, vector scaling", "",
                 budget_table(rows, methods, budgets, lambda r: row_value(r, "calibration", "vector", "nll"), 3, "min"))
    _shift_sections(parts, rows, at_top, methods, budgets, top)
    _ood_sections(parts, at_top, methods, top)
    _selective_sections(parts, rows, at_top, methods, budgets, top)
    _conformal_sections(parts, rows, methods, budgets)
    return "\n".join(parts)


def percent(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


def _shift_sections(parts: list[str], rows: Sequence[Mapping[str, Any]], at_top: Sequence[Mapping[str, Any]], methods: Sequence[str],
                    budgets: Sequence[int], top: int) -> None:
    if not any(row_value(r, "shift") for r in rows):
        return
    add_section(parts, "Shift: accuracy (%), mean over corruptions and severities", "",
             budget_table(rows, methods, budgets, lambda r: percent(row_value(r, "shift", "mean", "accuracy")), 2, "max"))
    add_section(parts, "Shift: ECE (%), mean over corruptions and severities", "",
             budget_table(rows, methods, budgets, lambda r: percent(row_value(r, "shift", "mean", "ece")), 2, "min"))
    sevs = next((row_value(r, "shift", "by_severity", "severity") for r in at_top if row_value(r, "shift")), None) or []
    for key, label in (("accuracy", "accuracy (%)"), ("ece", "ECE (%)"), ("nll", "NLL")):
        cols = [("clean", lambda r, k=key: _scale(k, row_value(r, "shift", "clean", k)))]
        cols += [(str(s), lambda r, i=i, k=key: _scale(k, (row_value(r, "shift", "by_severity", k) or [None] * (i + 1))[i])) for i, s in enumerate(sevs)]
        add_section(parts, f"Shift at {top}B: {label} by severity (mean over corruptions)", "", columns_table(at_top, methods, cols, 3 if key == "nll" else 2, "max" if key == "accuracy" else "min"))
    names = next((list(row_value(r, "shift", "corruptions")) for r in at_top if row_value(r, "shift")), [])
    cols = [(n, lambda r, n=n: percent(mean_or_none(row_value(r, "shift", "corruptions", n, "accuracy")))) for n in names]
    add_section(parts, f"Shift at {top}B: accuracy (%) per corruption (mean over severities)", "", columns_table(at_top, methods, cols, 1, "max"))


def _scale(key: str, v: Any) -> float | None:
    return None if v is None else (float(v) if key == "nll" else 100.0 * float(v))


def mean_or_none(values: Any) -> float | None:
    return None if not values else sum(values) / len(values)


def _score_names(rows: Sequence[Mapping[str, Any]], *path: str) -> list[str]:
    """The score names under ``path`` of any row, in first-seen order (a predictor's own score, DDU's density,
    is in its rows only: the other rows' cells stay blank)."""
    names: list[str] = []
    for r in rows:
        for s in row_value(r, *path) or {}:
            if s not in names:
                names.append(s)
    return names


def _ood_sections(parts: list[str], at_top: Sequence[Mapping[str, Any]], methods: Sequence[str], top: int) -> None:
    sets: list[str] = []
    for r in at_top:
        for name in row_value(r, "ood") or {}:
            if name not in sets:
                sets.append(name)
    for name in sets:
        scores = _score_names(at_top, "ood", name, "scores")
        for metric, label in (("auroc", "AUROC (%)"), ("fpr95", "FPR at 95% TPR (%)")):
            cols = [(s, lambda r, s=s, m=metric: percent(row_value(r, "ood", name, "scores", s, m))) for s in scores]
            note = ("The test split mixed with the OOD set; every score oriented so that higher means more likely OOD. "
                    "msp: max softmax probability; mi: mutual information (the members' disagreement); energy and max_logit "
                    "of the members' mean logits; density: minus a DDU's feature log-density (its rows only).") if metric == "auroc" else ""
            add_section(parts, f"OOD detection at {top}B, {name}: {label}", note, columns_table(at_top, methods, cols, 1, "max" if metric == "auroc" else "min"))


def _selective_sections(parts: list[str], rows: Sequence[Mapping[str, Any]], at_top: Sequence[Mapping[str, Any]], methods: Sequence[str],
                        budgets: Sequence[int], top: int) -> None:
    if not any(row_value(r, "selective") for r in rows):
        return
    add_section(parts, "Selective prediction: AURC (%), confidence = max probability",
             "Area under the risk-coverage curve (lower is better); AUGRC: Traub et al. 2024's generalized risk.",
             budget_table(rows, methods, budgets, lambda r: percent(row_value(r, "selective", "scores", "msp", "aurc")), 2, "min"))
    add_section(parts, "Selective prediction: AUGRC (%), confidence = max probability", "",
             budget_table(rows, methods, budgets, lambda r: percent(row_value(r, "selective", "scores", "msp", "augrc")), 2, "min"))
    scores = _score_names(at_top, "selective", "scores")
    cols = [(s, lambda r, s=s: percent(row_value(r, "selective", "scores", s, "aurc"))) for s in scores]
    add_section(parts, f"Selective prediction at {top}B: AURC (%) per confidence score", "", columns_table(at_top, methods, cols, 2, "min"))


def _conformal_sections(parts: list[str], rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int]) -> None:
    scores: list[str] = []
    alpha = None
    for r in rows:
        for s, v in (row_value(r, "conformal") or {}).items():
            alpha = v["alpha"]
            if s not in scores:
                scores.append(s)
    for s in scores:
        mine = [r for r in rows if row_value(r, "conformal", s)]
        cov = grid(mine, lambda r: 100.0 * row_value(r, "conformal", s, "coverage"))
        sizes = {row[0]: row[1:] for row in marked_body(paired_grid(mine, lambda r: row_value(r, "conformal", s, "mean_size")),
                                                          methods, budgets, 2, "min")}  # smaller sets at the guaranteed coverage

        def cell(m: str, b: int, sizes: Mapping[str, list[str]] = sizes, cov: Mapping[Any, list[float]] = cov) -> str:
            return "—" if (m, b) not in cov else f"{mean_std_cell(cov[(m, b)], 1)} / {sizes[m][list(budgets).index(b)]}"

        body = [[m, *[cell(m, b) for b in budgets]] for m in methods if any((m, b) in cov for b in budgets)]
        add_section(parts, f"Conformal sets ({s.upper()}, alpha = {alpha}): test coverage (%) / mean set size",
                 f"Split conformal calibrated on the validation split; the target coverage is {100 * (1 - alpha):.0f}%.",
                 markdown_table(["method", *[f"{b}B" for b in budgets]], body))
