"""Markdown tables of a regression comparison's uncertainty evaluation: variance-scaled NLL, CRPS and coverage,
shift, OOD detection, selective regression, conformal intervals.

The regression counterpart of :mod:`.uncertainty_tables`, whose :func:`~.uncertainty_tables.uncertainty_markdown`
hands regression rows (:func:`~.tables.is_regression`) over to :func:`regression_uncertainty_markdown`. Each
table is mean ± sample std over seeds (and random splits), from the rows' ``evaluation``
(:func:`~ensemblekit.evaluation.regression_run.evaluate_regression_uncertainty`; docs/evaluation.md,
"Regression"); a table whose part no row has is left out.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .tables import grid, markdown_table, mean_std_cell
from .uncertainty_tables import budget_table, columns_table, row_value, mean_or_none, percent, add_section

__all__ = ["regression_uncertainty_markdown"]

Row = Mapping[str, Any]

_SCORES_NOTE = ("std: the total predicted std; epistemic_std: the std of the members' means (their disagreement); "
                "aleatoric_std: the root of the members' mean variance.")


def regression_uncertainty_markdown(rows: Sequence[Row], methods: Sequence[str], budgets: Sequence[int]) -> str:
    """The uncertainty sections of a regression comparison's ``results.md`` (empty when no row has an evaluation).

    Sections, each only when some row has its part: NLL, CRPS and 90%/95% coverage after variance
    scaling (pool, then scale; and scale, then pool); RMSE, NLL, coverage and predicted std under
    shift (per severity and per corruption at the largest budget); OOD AUROC per score and set at
    the largest budget; selective AURC (MSE risk) and its ratio to the oracle's; normalised
    split-conformal coverage and width next to the mixture's own interval.

    Example:
        >>> md = regression_uncertainty_markdown(rows, ["Ind", "SSE"], [1, 3, 5])
    """
    rows = [r for r in rows if r.get("evaluation")]
    if not rows:
        return ""
    top = max(budgets)
    at_top = [r for r in rows if int(r["budget"]) == top]
    parts: list[str] = []
    _calibration_sections(parts, rows, methods, budgets)
    _shift_sections(parts, rows, at_top, methods, budgets, top)
    _ood_sections(parts, at_top, methods, top)
    _selective_sections(parts, rows, at_top, methods, budgets, top)
    _conformal_sections(parts, rows, methods, budgets)
    return "\n".join(parts)


def _cal(kind: str, key: str, pct: bool = False) -> Callable[[Row], float | None]:
    return lambda r: _value(row_value(r, "calibration", kind, key), pct)


def _value(v: Any, pct: bool) -> float | None:
    return None if v is None else (100.0 * float(v) if pct else float(v))


def _calibration_sections(parts: list[str], rows: Sequence[Row], methods: Sequence[str], budgets: Sequence[int]) -> None:
    def table(kind: str, key: str, digits: int, pct: bool = False) -> str | None:
        return budget_table(rows, methods, budgets, _cal(kind, key, pct), digits, None if pct or key.startswith(("picp", "mpiw")) or key == "scale" else "min")

    # pool-then-scale NLL, CRPS and 95% coverage and width are the comparison's own metric tables ("variance-scaled")
    add_section(parts, "Test NLL, members variance-scaled, then pooled",
             "One factor per member, fitted on its own validation NLL, then the mixture of the scaled members (the tables above "
             "scale the pooled mixture by one factor). The Gaussian NLL is the proper scoring rule Lakshminarayanan et al. "
             "(2017) compare deep ensembles on.",
             table("scale_then_pool", "nll", 3))
    add_section(parts, "Test CRPS, members variance-scaled, then pooled", "", table("scale_then_pool", "crps", 3))
    add_section(parts, "Test PICP at 90% (%), variance-scaled (pool, then scale)",
             "The share of test targets inside the scaled mixture's central interval; a calibrated predictive covers the "
             "nominal level. One factor fits the coverage on average only; Kuleshov et al. (2018) recalibrate every quantile.",
             table("variance_scaled", "picp90", 1, pct=True))
    add_section(parts, "Variance scale fitted on the validation split (pool, then scale)",
             "Above 1: the raw predictive was over-confident on the validation split; below 1: under-confident.",
             table("variance_scaled", "scale", 3))


_SHIFT_METRICS = (("rmse", "RMSE", False), ("nll", "NLL", False), ("picp95", "PICP at 95% (%)", True))


def _shift_sections(parts: list[str], rows: Sequence[Row], at_top: Sequence[Row], methods: Sequence[str],
                    budgets: Sequence[int], top: int) -> None:
    if not any(row_value(r, "shift") for r in rows):
        return
    add_section(parts, "Shift: RMSE, mean over corruptions and severities",
             "The test split's inputs corrupted at increasing severity (for feature vectors: feature noise, feature scaling "
             "and dropped features, in units of the training split's statistics), after Ovadia et al. (2019): an honest "
             "predictive widens its intervals as its error grows.",
             budget_table(rows, methods, budgets, lambda r: row_value(r, "shift", "mean", "rmse"), 3, "min"))
    add_section(parts, "Shift: NLL, mean over corruptions and severities", "",
             budget_table(rows, methods, budgets, lambda r: row_value(r, "shift", "mean", "nll"), 3, "min"))
    shifted = [r for r in at_top if row_value(r, "shift")]
    sevs = next((row_value(r, "shift", "by_severity", "severity") for r in shifted), None) or []
    for key, label, pct in (*_SHIFT_METRICS, ("mean_std", "mean predicted std", False)):
        cols = [("clean", lambda r, k=key, p=pct: _value(row_value(r, "shift", "clean", k), p))]
        cols += [(str(s), lambda r, i=i, k=key, p=pct: _value((row_value(r, "shift", "by_severity", k) or [None] * (i + 1))[i], p))
                 for i, s in enumerate(sevs)]
        note = "Does the predicted std grow with the shift (clean: the test split)?" if key == "mean_std" else ""
        add_section(parts, f"Shift at {top}B: {label} by severity (mean over corruptions)", note,
                 columns_table(at_top, methods, cols, 1 if pct else 3, None if pct or key == "mean_std" else "min"))
    names = next((list(row_value(r, "shift", "corruptions")) for r in shifted), [])
    for key, label, pct in _SHIFT_METRICS:
        cols = [(n, lambda r, n=n, k=key, p=pct: _value(mean_or_none(row_value(r, "shift", "corruptions", n, k)), p)) for n in names]
        add_section(parts, f"Shift at {top}B: {label} per corruption (mean over severities)", "",
                 columns_table(at_top, methods, cols, 1 if pct else 3, None if pct else "min"))


def _ood_sections(parts: list[str], at_top: Sequence[Row], methods: Sequence[str], top: int) -> None:
    sets: list[str] = []
    for r in at_top:
        for name in row_value(r, "ood") or {}:
            if name not in sets:
                sets.append(name)
    for k, name in enumerate(sets):
        scores = next((list(row_value(r, "ood", name, "scores")) for r in at_top if row_value(r, "ood", name, "scores")), [])
        cols = [(s, lambda r, s=s, n=name: percent(row_value(r, "ood", n, "scores", s, "auroc"))) for s in scores]
        note = ("The test split mixed with the OOD set, each score's higher values taken as more likely OOD; an ensemble's "
                "uncertainty should grow away from its training data (Lakshminarayanan et al. 2017). " + _SCORES_NOTE) if k == 0 else ""
        if name == "extrapolation":
            note = (note + " " if note else "") + ("extrapolation: the test examples beyond the training range of one feature, "
                                                   "against the rest of the test split.")
        add_section(parts, f"OOD detection at {top}B, {name}: AUROC (%)", note, columns_table(at_top, methods, cols, 1, "max"))


def _oracle_aurc(r: Row, score: str) -> float | None:
    v = row_value(r, "selective", "oracle", "aurc")
    return v if v is not None else row_value(r, "selective", "scores", score, "oracle_aurc")


def _ratio(r: Row, score: str, key: str = "aurc") -> float | None:
    v, o = row_value(r, "selective", "scores", score, key), _oracle_aurc(r, score)
    return None if v is None or not o else float(v) / float(o)


def _selective_sections(parts: list[str], rows: Sequence[Row], at_top: Sequence[Row], methods: Sequence[str],
                        budgets: Sequence[int], top: int) -> None:
    scores: list[str] = []
    for r in rows:
        scores += [s for s in row_value(r, "selective", "scores") or {} if s not in scores]
    if not scores:
        return
    first = "std" if "std" in scores else scores[0]
    add_section(parts, f"Selective regression: AURC / oracle AURC, score = {first}",
             "Keep the examples with the lowest predicted uncertainty first; the risk is the MSE of the kept examples and AURC "
             "its mean over every coverage (lower is better). The oracle ranks by the true squared error, the lowest AURC any "
             "score reaches: a ratio of 1 is a perfect ranking.",
             budget_table(rows, methods, budgets, lambda r: _ratio(r, first), 2, "min"))
    cols = [(s, lambda r, s=s: row_value(r, "selective", "scores", s, "aurc")) for s in scores]
    add_section(parts, f"Selective regression at {top}B: AURC (MSE risk) per score",
             "In the targets' units squared; oracle: ranked by the true squared error.",
             columns_table(at_top, methods, [*cols, ("oracle", lambda r: _oracle_aurc(r, scores[0]))], 3, "min"))
    cols = [(s, lambda r, s=s: _ratio(r, s)) for s in scores]
    add_section(parts, f"Selective regression at {top}B: AURC / oracle AURC per score",
             "random: a random ranking's AURC (the test MSE) over the oracle's.",
             columns_table(at_top, methods, [*cols, ("random", lambda r: _ratio(r, scores[0], "random_aurc"))], 2, "min"))


def _interval_table(rows: Sequence[Row], methods: Sequence[str], budgets: Sequence[int], part: str) -> str | None:
    """Cells ``coverage (%) / mean width``, each mean ± std over seeds."""
    ok = [r for r in rows if row_value(r, "conformal", part)]
    if not ok:
        return None
    cov = grid(ok, lambda r: 100.0 * float(row_value(r, "conformal", part, "coverage")))
    width = grid(ok, lambda r: float(row_value(r, "conformal", part, "mean_width")))

    def cell(m: str, b: int) -> str:
        return "—" if (m, b) not in cov else f"{mean_std_cell(cov[(m, b)], 1)} / {mean_std_cell(width[(m, b)], 3)}"

    body = [[m, *[cell(m, b) for b in budgets]] for m in methods if any((m, b) in cov for b in budgets)]
    return markdown_table(["method", *[f"{b}B" for b in budgets]], body)


def _conformal_sections(parts: list[str], rows: Sequence[Row], methods: Sequence[str], budgets: Sequence[int]) -> None:
    first = next((r for r in rows if row_value(r, "conformal", "normalized")), None)
    if first is not None:
        alpha = row_value(first, "conformal", "normalized", "alpha")
        add_section(parts, f"Normalised split-conformal intervals (alpha = {alpha}): test coverage (%) / mean width",
                 "Intervals μ ± q̂σ (μ, σ the mixture's mean and std), q̂ calibrated on the validation split from the scores "
                 f"|y − μ| / σ (Lei et al. 2018): coverage ≥ {100 * (1 - alpha):g}% on exchangeable data whatever the "
                 "ensemble's calibration; the width, in the targets' units, is what a better σ buys.",
                 _interval_table(rows, methods, budgets, "normalized"))
    mix = next((r for r in rows if row_value(r, "conformal", "mixture_interval")), None)
    if mix is not None:
        level = row_value(mix, "conformal", "mixture_interval", "level")
        add_section(parts, f"The mixture's own central {100 * level:g}% interval: test coverage (%) / mean width",
                 "For comparison with the conformal intervals: the raw predictive's interval, without calibration.",
                 _interval_table(rows, methods, budgets, "mixture_interval"))
