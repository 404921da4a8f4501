"""Markdown tables of comparison results: mean ± std over seeds, methods x budgets."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from .stats import bootstrap_interval, format_cell, ranks_with_ties, significance_marks

#: ``(method, column) -> (per-example array, statistic)`` of a single-seed cell, or None.
Examples = Callable[[str, Any], Any]

__all__ = ["mean_std", "grid", "markdown_table", "comparison_markdown", "human", "is_regression", "headline_metric", "metric_specs", "MetricSpec",
           "paired_grid", "marked_body", "rank_body", "mean_std_cell"]


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
    """``mean ± std [95% t interval]`` of the finite values; one value alone is printed bare (its
    spread was not measured: never "± 0.00"); ``—`` for none (:func:`~.stats.format_cell`)."""
    return format_cell([v for v in values or [] if not math.isnan(v)], digits)


PairKey = tuple[Any, Any]


def paired_grid(rows: Iterable[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], Any],
                column: Callable[[Mapping[str, Any]], Any] = lambda r: int(r["budget"])) -> dict[tuple[str, Any], dict[PairKey, float]]:
    """``(method, column) -> {(seed, split): value}`` (column: the budget by default); None values are left out."""
    out: dict[tuple[str, Any], dict[PairKey, float]] = defaultdict(dict)
    for r in rows:
        v = value(r)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[(r["method"], column(r))][(r["seed"], r.get("split"))] = float(v)
    return out


def _test_fraction(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """With random train/test splits, the test share for the Nadeau-Bengio correction; else None."""
    if not any(r.get("split") is not None for r in rows):
        return None
    sizes = next((r.get("data", {}).get("sizes") for r in rows if r.get("data", {}).get("sizes")), None)
    if not sizes or not sizes.get("test") or not sizes.get("train"):
        return None
    return sizes["test"] / (sizes["test"] + sizes["train"])


def marked_body(g: Mapping[tuple[str, Any], Mapping[PairKey, float]], methods: Sequence[str], columns: Sequence[Any], digits: int,
                better: str | None, *, test_fraction: float | None = None, examples: Examples | None = None) -> list[list[str]]:
    """Table rows ``[method, cell per column]``: each cell :func:`mean_std_cell`; with ``better`` (``min`` /
    ``max``) the best mean of each column and every cell not significantly different from it are bold
    (:func:`~.stats.significance_marks`: a paired t-test over the seeds and splits both have, the
    Nadeau-Bengio correction with random splits; with one seed a paired test-set bootstrap on
    ``examples(method, column)`` — ``(array, statistic)`` or None — which also gives the cell its interval)."""
    marks = {}
    for c in columns:
        cells = {m: g[(m, c)] for m in methods if (m, c) in g}
        if better is None or len(cells) < 2:
            continue
        per_example, stat = None, None
        if examples is not None and all(len(v) == 1 for v in cells.values()):
            found = {m: examples(m, c) for m in cells}
            per_example = {m: e[0] for m, e in found.items() if e is not None}
            stat = next((e[1] for e in found.values() if e is not None), None)
        found_marks = significance_marks(cells, lower_is_better=better == "min", test_fraction=test_fraction,
                                         per_example=per_example or None, statistic=stat)
        if len(found_marks.tests) == len(cells) - 1:  # every other method was tested against the best: marks can be read
            marks[c] = found_marks
    body = []
    for m in methods:
        if not any((m, c) in g for c in columns):
            continue
        row = [m]
        for c in columns:
            values = list(g.get((m, c), {}).values())
            interval = None
            if len(values) == 1 and examples is not None:
                e = examples(m, c)
                if e is not None:
                    _, low, high = bootstrap_interval(e[0], e[1])
                    interval = (low, high)
            cell = format_cell(values, digits, interval=interval)
            row.append(f"**{cell}**" if c in marks and m in marks[c].tied else cell)
        body.append(row)
    return body


def rank_body(g: Mapping[tuple[str, Any], Mapping[PairKey, float]], methods: Sequence[str], columns: Sequence[Any],
              better: str = "min") -> list[list[str]]:
    """Mean ranks (Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 2006):
    per column, the methods are ranked within each seed and split they all have (equal values share
    the mean of their positions), and the ranks averaged; ``—`` where fewer than two methods share a run."""
    ranks: dict[tuple[str, Any], float] = {}
    for c in columns:
        here = [m for m in methods if (m, c) in g]
        keys = set.intersection(*(set(g[(m, c)]) for m in here)) if len(here) >= 2 else set()
        per_key = [ranks_with_ties({m: g[(m, c)][k] for m in here}, lower_is_better=better == "min") for k in sorted(keys, key=str)]
        for m in here if per_key else []:
            ranks[(m, c)] = sum(r[m] for r in per_key) / len(per_key)
    return [[m, *[f"{ranks[(m, c)]:.2f}" if (m, c) in ranks else "—" for c in columns]] for m in methods if any((m, c) in ranks for c in columns)]


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


class MetricSpec(NamedTuple):
    """One metric table: its title, the row's value, decimals, which way is better (``min`` /
    ``max``; None: no best, e.g. an interval's coverage) and the per-example statistic a single-seed
    bootstrap recomputes it with (a key of :data:`~ensemblekit.metrics.per_example.STATISTICS`)."""

    title: str
    value: Callable[[Mapping[str, Any]], float]
    digits: int
    better: str | None = None
    stat: str | None = None


_CLASSIFICATION_SPECS = [
    MetricSpec("Test error (%)", lambda r: 100.0 * (1.0 - r["test"]["accuracy"]), 2, "min", "error"),
    MetricSpec("Test NLL", lambda r: r["test"]["nll"], 3, "min", "nll"),
    MetricSpec("Test ECE (%)", lambda r: 100.0 * r["test"]["ece"], 2, "min", "ece"),
]

_REGRESSION_SPECS = [
    MetricSpec("Test RMSE", lambda r: r["test"]["rmse"], 3, "min", "rmse"),
    MetricSpec("Test NLL (Gaussian mixture)", lambda r: r["test"]["nll"], 3, "min", "nll"),
    MetricSpec("Test CRPS", lambda r: r["test"]["crps"], 3, "min", "crps"),
    MetricSpec("Test PICP at 95% (%)", lambda r: 100.0 * r["test"]["picp"]["0.95"], 1),
    MetricSpec("Test MPIW at 95%", lambda r: r["test"]["mpiw"]["0.95"], 3),
    MetricSpec("Test NLL, variance-scaled", lambda r: _scaled(r, "nll"), 3, "min"),
    MetricSpec("Test CRPS, variance-scaled", lambda r: _scaled(r, "crps"), 3, "min"),
    MetricSpec("Test PICP at 95% (%), variance-scaled", lambda r: 100.0 * _scaled(r, "picp", "0.95"), 1),
    MetricSpec("Test MPIW at 95%, variance-scaled", lambda r: _scaled(r, "mpiw", "0.95"), 3),
]


def metric_specs(rows: Sequence[Mapping[str, Any]]) -> list[MetricSpec]:
    """The metric tables of a comparison (:class:`MetricSpec`), by the rows' task, then training
    seconds and members. Regression: the Deep Ensembles protocol's RMSE and NLL
    (Lakshminarayanan et al. 2017), CRPS, the 95% interval's coverage and width, and the same
    after variance scaling fitted on the validation split."""
    task = _REGRESSION_SPECS if is_regression(rows) else _CLASSIFICATION_SPECS
    return [*task, MetricSpec("Training wall-clock (s)", lambda r: r["wall_s"], 1), MetricSpec("Members", lambda r: r["members"], 0)]


def _confidence_note(over: str, runs: int, splits: bool) -> str:
    """The paragraph under a comparison's title: what a cell and a bold cell mean."""
    if runs == 1:
        return (f"One run ({over}): each cell is the test value with its 95% test-set bootstrap interval (2000 resamples of the "
                "test examples; Efron & Tibshirani 1993) where the metric is a mean over examples; **bold**: the best of its "
                "column and every method a paired bootstrap does not separate from it (p ≥ 0.05). One seed says nothing of "
                "the spread over training runs. Budget kB = k times the cost of one model trained with the shared `train` settings.")
    test = ("paired t-test over the same seeds and splits, with the Nadeau-Bengio correction for overlapping random splits"
            if splits else "paired t-test over the same seeds")
    return (f"Mean ± sample std [95% Student-t interval of the mean] over {over}; **bold**: the best mean of its column and every "
            f"method not significantly different from it ({test}, p ≥ 0.05; docs/comparisons.md). Budget kB = k times the cost "
            "of one model trained with the shared `train` settings.")


def _examples_of(rows: Sequence[Mapping[str, Any]], stat: str | None,
                 examples: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None) -> Examples | None:
    """``(method, budget) -> (per-example array, statistic)`` for single-seed cells of a bootstrapped metric."""
    if examples is None or stat is None:
        return None
    from ..metrics.per_example import STATISTICS, columns

    by_cell: dict[tuple[str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_cell[(r["method"], int(r["budget"]))].append(r)

    def get(method: str, budget: Any) -> Any:
        mine = by_cell.get((method, budget), [])
        if len(mine) != 1:
            return None
        losses = examples(mine[0])
        arr = columns(losses, stat) if losses is not None else None
        return None if arr is None else (arr, STATISTICS[stat][1])

    return get


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


def _budget_miss(cell_rows: Sequence[Mapping[str, Any]]) -> str:
    """`` (+56% of its budget)`` when a ``budget_unit: flops`` cell's training FLOPs miss the budget by more than 5%."""
    pairs = [(r["cost"].get("train_flops"), (r.get("budget_kwargs") or {}).get("budget_flops")) for r in cell_rows]
    pairs = [(f, t) for f, t in pairs if f and t]
    if not pairs:
        return ""
    miss = sum(f for f, _ in pairs) / sum(t for _, t in pairs) - 1.0
    return f" ({100 * miss:+.0f}% of its budget)" if abs(miss) > 0.05 else ""


def _cost_sections(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int], header: list[str]) -> list[str]:
    """Parameters, training FLOPs (a ``budget_unit: flops`` row beyond ±5% of its budget says so) and inference
    FLOPs per example, means over seeds; with ``budget_unit: flops`` the epochs each method got."""
    parts: list[str] = []
    by_cell: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_cell[(r["method"], int(r["budget"]))].append(r)
    present = [m for m in methods if any((m, b) in by_cell for b in budgets)]
    for name, key in (("Parameters", "parameters"), ("Training FLOPs", "train_flops"), ("Inference FLOPs per example", "inference_flops")):
        def cell(m: str, b: int, key: str = key) -> str:
            mine = by_cell.get((m, b))
            if not mine:
                return "—"
            text = _cost_cell([r["cost"].get(key) for r in mine])
            return text + (_budget_miss(mine) if key == "train_flops" else "")

        parts += [f"## {name}", "", markdown_table(header, [[m, *[cell(m, b) for b in budgets]] for m in present]), ""]
    alloc: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in rows:
        kw = r.get("budget_kwargs") or {}
        if "budget_unit" in kw:
            passes = kw.get("passes", kw.get("epochs", "—"))
            alloc[(r["method"], int(r["budget"]))].append(f"{passes:.3g}" if isinstance(passes, float) else f"{passes}" + ("" if kw["budget_unit"] == "flops" else " †"))
    if alloc:
        body = [[m, *[", ".join(sorted(set(alloc.get((m, b), ["—"])))) for b in budgets]] for m in methods if any((m, b) in alloc for b in budgets)]
        parts += ["## Passes over the training data per run (budget_unit: flops)", "",
                  "kB = k times the measured training FLOPs of one single model. Each method gets the optimisation steps that "
                  "fit (its other passes, such as SWAG's BatchNorm recomputation, taken out first), shown as passes over the "
                  "training split; the Training FLOPs table has the exact cost and names every row more than 5% off its budget. "
                  "†: a method without an epoch knob, run as with budget_unit: epochs.", "", markdown_table(header, body), ""]
    return parts


def comparison_markdown(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], budgets: Sequence[int], title: str = "",
                        reference: Callable[[Mapping[str, Any]], bool] | None = None,
                        examples: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None = None) -> str:
    """The comparison report: test error %, NLL, ECE (for regression RMSE, NLL, CRPS, 95% coverage and
    width, raw and variance-scaled: :func:`metric_specs`), training seconds, members, each cell mean ±
    std [95% interval] with the best of each column and its statistical ties in bold
    (:func:`marked_body`), the mean ranks of the headline metric; then the cost: parameters of the
    predicting ensemble, measured training FLOPs and inference FLOPs per example (means over seeds);
    with ``reference`` (which rows are k independently trained members) the deep-ensemble
    equivalent of every method. ``examples(row)``: the row's per-example test losses
    (:mod:`~ensemblekit.metrics.per_example`), for the test-set bootstrap of a single seed."""
    seeds = sorted({r["seed"] for r in rows})
    splits = sorted({r["split"] for r in rows if r.get("split") is not None})
    parts = [f"# {title}".rstrip() if title else "# Comparison", ""]
    over = f"{len(seeds)} seed(s) {seeds}" + (f" x {len(splits)} random train/test splits" if splits else "")
    parts += [_confidence_note(over, len(seeds) * max(1, len(splits)), bool(splits)), ""]
    specs = metric_specs(rows)
    header = ["method", *[f"{b}B" for b in budgets]]
    fraction = _test_fraction(rows)
    for spec in specs:
        g = paired_grid(rows, spec.value)
        body = marked_body(g, methods, budgets, spec.digits, spec.better, test_fraction=fraction,
                           examples=_examples_of(rows, spec.stat, examples))
        parts += [f"## {spec.title}", "", markdown_table(header, body), ""]
        if spec is specs[0]:
            ranks = rank_body(g, methods, budgets, spec.better or "min")
            if ranks:
                parts += [f"## Mean rank, {spec.title[0].lower()}{spec.title[1:]}", "",
                          "Methods ranked within each seed (and split) they share, equal values sharing the mean of their "
                          "places, then averaged (1 = best; Demšar 2006).", "", markdown_table(header, ranks), ""]
    parts += _cost_sections(rows, methods, budgets, header)
    dee = dee_rows(rows, methods, budgets, reference) if reference is not None else []
    if dee:
        parts += ["## Deep-ensemble equivalent (DEE)", "",
                  "How many independently trained members (Ind) match each method's calibrated test NLL (temperature fitted on "
                  "the validation split; Ashukha et al. 2020), interpolated on Ind's size curve of the same seed; "
                  "`> K`: better than the largest Ind ensemble measured.", "", markdown_table(header, dee), ""]
    parts.append("Training FLOPs count every optimisation step (forward and backward, all members; for the search methods "
                 "also the DARTS search and the hypernetwork), measured with torch.utils.flop_counter on the first step of each stage.")
    return "\n".join(parts) + "\n"
