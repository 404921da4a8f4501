"""Enough seeds to decide: ``seeds: {auto: {min, max}}`` in a comparison.

After the first ``min`` seeds (0, 1, ...), the two methods with the best mean of the deciding
metric at the deciding budget are compared with a paired t-test over the seeds (and random
splits) both have (:func:`~ensemblekit.report.stats.paired_t_test`). While the 95% interval of
their difference contains zero, one more seed is run for every cell, up to ``max`` seeds. The
report says which happened: the top two separated at n seeds, or ``max`` was reached with
their difference still undecided (then more seeds, not a ranking, is the honest conclusion).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

from ..config import CompareConfig
from ..report.stats import paired_t_test
from ..report.tables import is_regression

__all__ = ["metric_value", "decide", "more_seeds", "decision_markdown"]

_LABELS = {"error": "test error (%)", "nll": "test NLL", "rmse": "test RMSE"}


def metric_value(row: Mapping[str, Any], metric: str) -> float:
    """The row's test ``error`` (%), ``nll`` or ``rmse`` (lower is better for all three)."""
    test = row["test"]
    if metric == "error":
        return 100.0 * (1.0 - float(test["accuracy"])) if "accuracy" in test else math.nan
    return float(test.get(metric, math.nan))


def decide(rows: Sequence[Mapping[str, Any]], metric: str, budget: int) -> dict[str, Any]:
    """Whether the two best methods at ``budget`` differ on ``metric`` with 95% confidence.

    Returns:
        ``{"metric", "budget", "best", "second", "n", "mean_diff", "low", "high", "p",
        "separated"}`` (the difference is second minus best: positive when the best is better);
        ``best``/``second`` are None when fewer than two methods have values.
    """
    values: dict[str, dict[tuple[Any, Any], float]] = defaultdict(dict)
    for r in rows:
        if "failed" in r or "skipped" in r or int(r["budget"]) != budget:
            continue
        v = metric_value(r, metric)
        if math.isfinite(v):
            values[r["method"]][(r["seed"], r.get("split"))] = v
    out: dict[str, Any] = {"metric": metric, "budget": budget, "best": None, "second": None, "n": 0, "mean_diff": None,
                           "low": None, "high": None, "p": None, "separated": False}
    ranked = sorted(values, key=lambda m: sum(values[m].values()) / len(values[m]))
    if len(ranked) < 2:
        return out
    best, second = ranked[0], ranked[1]
    keys = sorted(set(values[best]) & set(values[second]), key=str)
    test = paired_t_test([values[second][k] for k in keys], [values[best][k] for k in keys])
    out.update(best=best, second=second, n=len(keys), mean_diff=test.mean_diff, low=test.low, high=test.high, p=test.p)
    out["separated"] = test.half_width is not None and test.low is not None and (test.low > 0 or test.high < 0)
    return out


def more_seeds(cfg: CompareConfig, rows: list[dict[str, Any]],
               run_more: Callable[[Sequence[int]], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add one seed at a time (``run_more([seed])`` runs its cells) until :func:`decide` separates the
    top two or ``max`` seeds ran; returns every row (in table order) and the last decision with
    ``seeds`` (how many ran) and ``stopped`` (``separated`` | ``max`` | ``one method``)."""
    auto = cfg.auto_seeds
    assert auto is not None
    metric = auto.metric or ("nll" if is_regression(rows) else "error")
    budget = auto.budget if auto.budget is not None else max(cfg.budgets)
    seeds = list(cfg.seed_list)
    while True:
        decision = decide(rows, metric, budget)
        if decision["best"] is None or decision["separated"] or len(seeds) >= auto.max:
            stopped = "one method" if decision["best"] is None else ("separated" if decision["separated"] else "max")
            break
        seeds.append(max(seeds) + 1)
        rows = rows + run_more([seeds[-1]])
    order = {m.display: i for i, m in enumerate(cfg.methods)}
    rows = sorted(rows, key=lambda r: (order.get(r["method"], len(order)), int(r["budget"]), r.get("split") or 0, int(r["seed"])))
    return rows, {**decision, "seeds": len(seeds), "min": auto.min, "max": auto.max, "stopped": stopped}


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """The report's paragraph on how many seeds ran and why."""
    what = f"{_LABELS.get(decision['metric'], decision['metric'])} at {decision['budget']}B"
    head = f"## Seeds\n\nSeeds were added one at a time from {decision['min']} (at most {decision['max']}) until the two best methods on {what} differed with 95% confidence (paired t-test over seeds). "
    if decision["stopped"] == "one method":
        return head + f"Only one method has values there: {decision['seeds']} seeds ran.\n"
    diff = (f"{decision['second']} − {decision['best']} = {decision['mean_diff']:+.3g}, 95% interval "
            f"[{decision['low']:.3g}, {decision['high']:.3g}], p = {decision['p']:.3g}, over {decision['n']} paired runs")
    if decision["stopped"] == "separated":
        return head + f"**Decided at {decision['seeds']} seeds**: {decision['best']} is ahead ({diff}).\n"
    return head + f"**Undecided at the maximum of {decision['seeds']} seeds**: {decision['best']} and {decision['second']} are not separated ({diff}).\n"
