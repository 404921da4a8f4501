"""Markdown tables of comparison results: mean ± std over seeds, methods x budgets."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = ["mean_std", "grid", "markdown_table", "comparison_markdown", "human", "is_regression", "headline_metric", "metric_specs"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def grid(rows: Iterable[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], float]) -> dict[tuple[str, int], list[float]]:
    """``(method, budget) -> [value per seed]``."""
    out: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        out[(r["method"], int(r["budget"]))].append(float(value(r)))
    return out


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def mean_std_cell(values: list[float] | None, digits: int) -> str:
    values = [v for v in values or [] if not math.isnan(v)]
    if not values:
        return "—"
    m, s = mean_std(values)
    if s == 0 and digits == 0:
        return f"{m:.0f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def human(value: float | None) -> str:
    """A count in engineering units: ``1.23 G`` for 1.23e9 (``—`` for None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


def is_regression(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the rows are of a regression task (their test metrics are a Gaussian's: ``rmse``)."""
    return any("rmse" in (r.get("test") or {}) for r in rows)


def headline_metric(rows: Sequence[Mapping[str, Any]]) -> tuple[str, Callable[[Mapping[str, Any]], float]]:
    """The one number a plot of these rows shows: test error (%) for classification, test NLL for regression."""
    if is_regression(rows):
        return "test NLL", lambda r: r["test"]["nll"]
    return "test error (%)", lambda r: 100.0 * (1.0 - r["test"]["accuracy"])


def _scaled(r: Mapping[str, Any], key: str, level: str | None = None) -> float:
    cal = r["test"].get("calibrated")
    if not cal:
        return math.nan
    return cal[key][level] if level is not None else cal[key]


_CLASSIFICATION_SPECS: list[tuple[str, Callable[[Mapping[str, Any]], float], int]] = [
    ("Test error (%)", lambda r: 100.0 * (1.0 - r["test"]["accuracy"]), 2),
    ("Test NLL", lambda r: r["test"]["nll"], 3),
    ("Test ECE (%)", lambda r: 100.0 * r["test"]["ece"], 2),
]

_REGRESSION_SPECS: list[tuple[str, Callable[[Mapping[str, Any]], float], int]] = [
    ("Test RMSE", lambda r: r["test"]["rmse"], 3),
    ("Test NLL (Gaussian mixture)", lambda r: r["test"]["nll"], 3),
    ("Test CRPS", lambda r: r["test"]["crps"], 3),
    ("Test PICP at 95% (%)", lambda r: 100.0 * r["test"]["picp"]["0.95"], 1),
    ("Test MPIW at 95%", lambda r: r["test"]["mpiw"]["0.95"], 3),
    ("Test NLL, variance-scaled", lambda r: _scaled(r, "nll"), 3),
    ("Test CRPS, variance-scaled", lambda r: _scaled(r, "crps"), 3),
    ("Test PICP at 95% (%), variance-scaled", lambda r: 100.0 * _scaled(r, "picp", "0.95"), 1),
    ("Test MPIW at 95%, variance-scaled", lambda r: _scaled(r, "mpiw", "0.95"), 3),
]


def metric_specs(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, Callable[[Mapping[str, Any]], float], int]]:
    """The metric tables of a comparison: ``(title, row -> value, digits)``, by the rows' task, then
    training seconds and members. Regression: the Deep Ensembles protocol's RMSE and NLL
    (Lakshminarayanan et al. 2017), CRPS, the 95% interval's coverage and width, and the same
    after variance scaling fitted on the validation split."""
    task = _REGRESSION_SPECS if is_regression(rows) else _CLASSIFICATION_SPECS
    return [*task, ("Training wall-clock (s)", lambda r: r["wall_s"], 1), ("Members", lambda r: r["members"], 0)]


def _cost_cell(values: list[float | None] | None) -> str:
    """Mean of a cost that barely varies over seeds (parameters, FLOPs), in engineering units."""
    if not values or any(v is None for v in values):
        return "—"
    return human(sum(values) / len(values))  # type: ignore[arg-type]


def _reference_curves(rows: Sequence[Mapping[str, Any]], reference: Callable[[Mapping[str, Any]], bool]) -> dict[int, list[float]]:
    """Per seed: the calibrated test NLL of 1..K independent members.

    The reference rows (``reference(row)``: k independently trained members, the deep
    ensemble) give k members where the table has a row of k (so the reference reads exactly
    k), else the first k members of the largest reference row of that seed."""
    ind = [r for r in rows if (r.get("test", {}).get("calibrated") or {}).get("size_curve") and reference(r)]
    out: dict[int, list[float]] = {}
    for seed in {r["seed"] for r in ind}:
        mine = [r for r in ind if r["seed"] == seed]
        largest = max(mine, key=lambda r: r["members"])
        curve = list(largest["test"]["calibrated"]["size_curve"]["calibrated_nll"])
        for r in mine:
            curve[r["members"] - 1] = r["test"]["calibrated"]["nll"]
        out[seed] = curve
    return out


def dee_rows(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int],
             reference: Callable[[Mapping[str, Any]], bool]) -> list[list[str]]:
    """The DEE table's body (empty without reference rows or a validation split).

    ``reference(row)``: whether a row is k independently trained members; the method of the
    row says so (see :func:`~ensemblekit.experiments.compare.write_report`)."""
    from ..metrics.calibration import deep_ensemble_equivalent

    refs = _reference_curves(rows, reference)
    if not refs:
        return []
    k_max = min(len(c) for c in refs.values())
    g: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        cal = r.get("test", {}).get("calibrated")
        ref = refs.get(r["seed"])
        if cal and "temperature" not in cal:  # a regression row's variance scaling: no calibrated size curve
            continue
        if cal and ref:
            g[(r["method"], int(r["budget"]))].append(deep_ensemble_equivalent(cal["nll"], ref[:k_max]))

    def cell(values: list[float] | None) -> str:
        if not values:
            return "—"
        beyond = sum(math.isinf(v) for v in values)
        if beyond == len(values):
            return f"> {k_max}"
        finite = mean_std_cell([v for v in values if not math.isinf(v)], 2)
        return finite if not beyond else f"{finite}; > {k_max} in {beyond}/{len(values)} seeds"

    return [[m, *[cell(g.get((m, b))) for b in budgets]] for m in methods if any((m, b) in g for b in budgets)]


def comparison_markdown(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int], title: str = "",
                        reference: Callable[[Mapping[str, Any]], bool] | None = None) -> str:
    """The comparison report, mean ± std over seeds: test error %, NLL, ECE (for regression RMSE,
    NLL, CRPS, 95% coverage and width, raw and variance-scaled: :func:`metric_specs`), training
    seconds, members; then the cost: parameters of the predicting ensemble, measured training FLOPs
    and inference FLOPs per example (means over seeds); with ``reference`` (which rows are k
    independently trained members) the deep-ensemble equivalent of every method."""
    seeds = sorted({r["seed"] for r in rows})
    splits = sorted({r["split"] for r in rows if r.get("split") is not None})
    parts = [f"# {title}".rstrip() if title else "# Comparison", ""]
    over = f"{len(seeds)} seed(s) {seeds}" + (f" x {len(splits)} random train/test splits" if splits else "")
    parts.append(f"Mean ± sample std over {over}; budget kB = k times the cost of one model trained with the shared `train` settings.")
    parts.append("")
    specs = metric_specs(rows)
    header = ["method", *[f"{b}B" for b in budgets]]
    for name, fn, digits in specs:
        g = grid(rows, fn)
        body = [[m, *[mean_std_cell(g.get((m, b)), digits) for b in budgets]] for m in methods if any((m, b) in g for b in budgets)]
        parts += [f"## {name}", "", markdown_table(header, body), ""]
    costs = [
        ("Parameters", lambda r: r["cost"]["parameters"]),
        ("Training FLOPs", lambda r: r["cost"]["train_flops"]),
        ("Inference FLOPs per example", lambda r: r["cost"]["inference_flops"]),
    ]
    for name, fn in costs:
        g: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for r in rows:
            g[(r["method"], int(r["budget"]))].append(fn(r))
        body = [[m, *[_cost_cell(g.get((m, b))) for b in budgets]] for m in methods if any((m, b) in g for b in budgets)]
        parts += [f"## {name}", "", markdown_table(header, body), ""]
    alloc: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in rows:
        kw = r.get("budget_kwargs") or {}
        if "budget_unit" in kw:
            alloc[(r["method"], int(r["budget"]))].append(f"{kw.get('epochs', '—')}" + ("" if kw["budget_unit"] == "flops" else " †"))
    if alloc:
        body = [[m, *[", ".join(sorted(set(alloc.get((m, b), ["—"])))) for b in budgets]] for m in methods if any((m, b) in alloc for b in budgets)]
        parts += ["## Epochs per run (budget_unit: flops)", "",
                  "kB = k times the measured training FLOPs of one single model; each method gets the whole number of epochs "
                  "nearest to that (the Training FLOPs table has the exact cost). †: a method without an epoch knob, run as with "
                  "budget_unit: epochs.", "", markdown_table(header, body), ""]
    dee = dee_rows(rows, methods, budgets, reference) if reference is not None else []
    if dee:
        parts += ["## Deep-ensemble equivalent (DEE)", "",
                  "How many independently trained members (Ind) match each method's calibrated test NLL (temperature fitted on "
                  "the validation split; Ashukha et al. 2020), interpolated on Ind's size curve of the same seed; "
                  "`> K`: better than the largest Ind ensemble measured.", "", markdown_table(header, dee), ""]
    parts.append("Training FLOPs count every optimisation step (forward and backward, all members; for the search methods "
                 "also the DARTS search and the hypernetwork), measured with torch.utils.flop_counter on the first step of each stage.")
    return "\n".join(parts)
