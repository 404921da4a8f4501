"""Statistics of the comparison tables: confidence intervals, paired tests, ranks and "not worse than the best" marks.

Every metric of a comparison is measured over a few seeds (and random train/test splits), so a cell is reported as
mean ± std with its 95% Student-t interval (:func:`t_interval`, :func:`format_cell`). Per column (one budget) the best
method and every method not significantly different from it are marked (:func:`significance_marks`): with two or more
shared seeds/splits by a paired t-test (:func:`paired_t_test`), with a single seed by a paired test-set bootstrap
(:func:`paired_bootstrap`). :func:`ranks_with_ties` ranks methods with fractional ranks for ties.

Pure numpy/scipy (no torch); the distributions come from :mod:`scipy.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Hashable, Iterable, Mapping

import numpy as np
from scipy import stats as sps

__all__ = ["PairedTest", "Marks", "t_interval", "paired_t_test", "paired_bootstrap", "bootstrap_interval",
           "ranks_with_ties", "significance_marks", "format_cell"]

Statistic = Callable[[np.ndarray], float]
_CHUNK_ELEMENTS = 1 << 20  # at most ~1M resampled entries (8 MB of float64) per array held at once


@dataclass(frozen=True)
class PairedTest:
    """The result of a paired comparison of ``a`` against ``b``.

    Attributes:
        n: the number of pairs (seeds/splits for the t-test, examples for the bootstrap).
        mean_diff: the difference a - b (mean over pairs; the statistic on the full set for the bootstrap).
        half_width: half the width of the 95% interval of the difference (None where it was not measured, n < 2).
        t: the t statistic (nan for the bootstrap and for n < 2).
        p: the two-sided p-value (nan for n < 2).
        df: degrees of freedom of the t-test (None for the bootstrap and for n < 2).
        low: the lower end of the interval of the difference (None where ``half_width`` is None).
        high: the upper end of the interval of the difference (None where ``half_width`` is None).
    """

    n: int
    mean_diff: float
    half_width: float | None
    t: float
    p: float
    df: int | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Marks:
    """The marks of one column: the best method, those not significantly different from it, and the tests.

    Attributes:
        best: the method with the best mean (None when no method has a finite value).
        tied: the best and every method whose paired test against it has p >= alpha.
        tests: ``{method: test of method against best}`` (a = method, b = best) for the methods that could be tested.
    """

    best: str | None
    tied: frozenset[str]
    tests: dict[str, PairedTest]


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float).ravel()
    return x[~np.isnan(x)]


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and half-width ``t_{n-1,(1+level)/2} * s / sqrt(n)`` of the Student-t interval (s with ddof=1).

    Args:
        values: the per-seed values; NaNs are dropped.
        level: the confidence level.

    Returns:
        ``(mean, half_width)``; half_width is None for a single value (the spread was not measured, never 0), and
        ``(nan, None)`` for no value.
    """
    x = _finite(values)
    if x.size == 0:
        return math.nan, None
    if x.size == 1:
        return float(x[0]), None
    s = float(np.std(x, ddof=1))
    return float(np.mean(x)), float(sps.t.ppf((1.0 + level) / 2.0, x.size - 1)) * s / math.sqrt(x.size)


def _t_from_diffs(d: np.ndarray, level: float, factor: float) -> PairedTest:
    """The t-test of mean(d) = 0 with the variance of the mean ``s^2 * factor`` (factor 1/n: the plain test)."""
    n, mean = d.size, float(np.mean(d))
    df = n - 1
    scale = float(np.max(np.abs(d)))
    if float(np.ptp(d)) <= 4.0 * np.finfo(float).eps * scale:  # identical differences: sd = 0
        t, p = (0.0, 1.0) if scale == 0.0 else (math.copysign(math.inf, mean), 0.0)
        return PairedTest(n, mean, 0.0, t, p, df, mean, mean)
    se = float(np.std(d, ddof=1)) * math.sqrt(factor)
    t = mean / se
    half = float(sps.t.ppf((1.0 + level) / 2.0, df)) * se
    return PairedTest(n, mean, half, t, float(2.0 * sps.t.sf(abs(t), df)), df, mean - half, mean + half)


def paired_t_test(a: Iterable[float], b: Iterable[float], *, test_fraction: float | None = None,
                  level: float = 0.95) -> PairedTest:
    """Paired Student-t test of mean(a - b) = 0, the pairs being the same seeds/splits.

    With 3-20 seeds a rank test is useless: the exact Wilcoxon signed-rank test cannot reach p < 0.05 below n = 6.
    Pairing removes the seed/split variance both methods share (Dietterich, "Approximate Statistical Tests for
    Comparing Supervised Classification Learning Algorithms", 1998). Over repeated random splits the differences are
    dependent (the training sets overlap), so the plain interval is optimistic and the test too liberal (Bouckaert &
    Frank, "Evaluating the Replicability of Significance Tests for Comparing Learning Algorithms", 2004). Pass
    ``test_fraction`` for the corrected resampled t-test of Nadeau & Bengio ("Inference for the Generalization
    Error", 2003): the variance of the mean is ``s^2 (1/n + n_test/n_train)`` instead of ``s^2 / n``.

    Args:
        a: the per-pair values of one method (NaN pairs, in a or b, are dropped).
        b: the per-pair values of the other, in the same order.
        test_fraction: ``n_test / (n_train + n_test)`` of the random splits (so n_test/n_train = f / (1 - f)), or None
            for the uncorrected test (independent seeds on a fixed split).
        level: the level of the interval of the mean difference.

    Returns:
        The test; for n < 2, p = t = nan and no interval. Identical zero differences give p = 1, t = 0; identical
        non-zero ones (sd = 0) give p = 0, t = ±inf.
    """
    x, y = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values must be two 1-D sequences of one length, got shapes {x.shape} and {y.shape}")
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = (x - y)[~(np.isnan(x) | np.isnan(y))]
    if d.size < 2:
        return PairedTest(int(d.size), float(d[0]) if d.size else math.nan, None, math.nan, math.nan, None)
    factor = 1.0 / d.size + (0.0 if test_fraction is None else test_fraction / (1.0 - test_fraction))
    return _t_from_diffs(d, level, factor)


def _bootstrap_stats(arrays: list[np.ndarray], statistic: Statistic, resamples: int, seed: int,
                     batched: bool) -> list[np.ndarray]:
    """The statistic of each array on the same ``resamples`` resamples of the examples (axis 0), in chunks."""
    n = arrays[0].shape[0]
    width = max(1, int(np.prod(arrays[0].shape[1:])))
    chunk = max(1, _CHUNK_ELEMENTS // (n * width))
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in arrays]
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for o, arr in zip(out, arrays):
            stacked = arr[idx]  # (m, n, ...)
            vals = statistic(stacked) if batched else [statistic(s) for s in stacked]
            o.append(np.asarray(vals, dtype=float).reshape(-1))
    return [np.concatenate(o) for o in out]


def _on_full_set(arr: np.ndarray, statistic: Statistic, batched: bool) -> float:
    return float(np.asarray(statistic(arr[None]), dtype=float).reshape(-1)[0]) if batched else float(statistic(arr))


def _examples(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"per-example values need at least one example on axis 0, got shape {arr.shape}")
    return arr


def paired_bootstrap(a: Any, b: Any, statistic: Statistic, *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95, batched: bool = False) -> PairedTest:
    """Paired test-set bootstrap of statistic(a) - statistic(b) for a single seed (Efron & Tibshirani, "An
    Introduction to the Bootstrap", 1993).

    The examples (axis 0) are resampled with replacement, the same indices for a and b (paired), and the difference
    of the statistic is computed on each resample. The interval is the percentile interval; the two-sided p-value is
    ``min(1, 2 * min(P(diff* <= 0), P(diff* >= 0)))``.

    Args:
        a: per-example values of one method, 1-D or 2-D with examples on axis 0 (e.g. columns [confidence, correct]).
        b: the same of the other method, on the same examples.
        statistic: maps such an array to a float (``np.mean`` for error or NLL, ``lambda e: np.sqrt(np.mean(e))`` for
            RMSE from squared errors); with ``batched`` it maps a stack ``(m, n, ...)`` to m floats.
        resamples: the number of bootstrap resamples.
        seed: the seed of the numpy Generator (the result is deterministic for a seed).
        level: the level of the percentile interval.
        batched: whether ``statistic`` takes a stack of resamples at once (faster; same result).

    Returns:
        The test with n = the number of examples, mean_diff on the full set, t = nan and df = None.
    """
    x, y = _examples(a), _examples(b)
    if x.shape != y.shape:
        raise ValueError(f"a and b must hold the same examples, got shapes {x.shape} and {y.shape}")
    diff = _on_full_set(x, statistic, batched) - _on_full_set(y, statistic, batched)
    sa, sb = _bootstrap_stats([x, y], statistic, resamples, seed, batched)
    d = sa - sb
    low, high = (float(q) for q in np.quantile(d, [(1.0 - level) / 2.0, (1.0 + level) / 2.0]))
    p = min(1.0, 2.0 * min(float(np.mean(d <= 0.0)), float(np.mean(d >= 0.0))))
    return PairedTest(int(x.shape[0]), diff, (high - low) / 2.0, math.nan, p, None, low, high)


def bootstrap_interval(x: Any, statistic: Statistic, *, resamples: int = 2000, seed: int = 0, level: float = 0.95,
                       batched: bool = False) -> tuple[float, float, float]:
    """The statistic on the full set and its percentile bootstrap interval (Efron & Tibshirani, "An Introduction to
    the Bootstrap", 1993): the own interval of a single-seed cell.

    Args:
        x: per-example values, examples on axis 0; the other arguments are those of :func:`paired_bootstrap`.

    Returns:
        ``(statistic(x), low, high)``.
    """
    arr = _examples(x)
    (s,) = _bootstrap_stats([arr], statistic, resamples, seed, batched)
    low, high = np.quantile(s, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return _on_full_set(arr, statistic, batched), float(low), float(high)


def ranks_with_ties(values: Mapping[str, float], *, lower_is_better: bool = True,
                    tied: Collection[frozenset] | None = None) -> dict[str, float]:
    """Fractional ranks (1 = best): methods of equal value share the mean of their positions (1, 2.5, 2.5, 4).

    Args:
        values: ``{method: value}``; NaN values get no rank (omitted from the result).
        lower_is_better: whether a lower value is better (error, NLL) or a higher one (accuracy).
        tied: groups of methods to treat as equal too (e.g. ``{marks.tied}``): the members of a group (merged with
            any method of equal value) share the mean of the positions they occupy.

    Returns:
        ``{method: rank}``.
    """
    names = [m for m, v in values.items() if not math.isnan(v)]
    order = sorted(names, key=lambda m: values[m] if lower_is_better else -values[m])
    group = {m: m for m in order}  # union-find of the tie classes

    def root(m: str) -> str:
        while group[m] != m:
            m = group[m]
        return m

    links = [(u, w) for u, w in zip(order, order[1:]) if values[u] == values[w]]
    for g in tied or ():
        members = [m for m in g if m in group]
        links += [(members[0], m) for m in members[1:]]
    for u, w in links:
        group[root(w)] = root(u)
    positions: dict[str, list[int]] = {}
    for pos, m in enumerate(order, start=1):
        positions.setdefault(root(m), []).append(pos)
    return {m: float(np.mean(positions[root(m)])) for m in names}


def significance_marks(cells: Mapping[str, Mapping[Hashable, float]], *, lower_is_better: bool = True,
                       alpha: float = 0.05, test_fraction: float | None = None,
                       per_example: Mapping[str, Any] | None = None, statistic: Statistic | None = None,
                       resamples: int = 2000, seed: int = 0) -> Marks:
    """The best method of one column and the methods not significantly different from it.

    Each method is tested against the best on the pair keys (seed, split) both have: by :func:`paired_t_test` with
    two or more common keys; with exactly one, by :func:`paired_bootstrap` when ``per_example`` holds arrays of both
    methods; otherwise not at all (the method is then not marked as tied and has no test).

    Args:
        cells: ``{method: {pair_key: value}}``; non-finite values are dropped, methods left without one ignored.
        lower_is_better: whether lower values are better.
        alpha: the significance level: a method is tied with the best when p >= alpha.
        test_fraction: the Nadeau-Bengio correction of the t-test for random splits (see :func:`paired_t_test`).
        per_example: ``{method: per-example array}`` of a single seed, for the bootstrap.
        statistic: the statistic of the per-example arrays (default ``np.mean``).
        resamples: the resamples of the bootstrap.
        seed: the seed of the bootstrap.

    Returns:
        The marks; the tests compare a = method against b = best.
    """
    finite = {m: {k: float(v) for k, v in c.items() if math.isfinite(v)} for m, c in cells.items()}
    finite = {m: c for m, c in finite.items() if c}
    if not finite:
        return Marks(None, frozenset(), {})
    sign = 1.0 if lower_is_better else -1.0
    best = min(finite, key=lambda m: sign * float(np.mean(list(finite[m].values()))))
    tests: dict[str, PairedTest] = {}
    for m, c in finite.items():
        if m == best:
            continue
        common = [k for k in finite[best] if k in c]
        if len(common) >= 2:
            tests[m] = paired_t_test([c[k] for k in common], [finite[best][k] for k in common], test_fraction=test_fraction)
        elif len(common) == 1 and per_example is not None and per_example.get(m) is not None \
                and per_example.get(best) is not None:
            tests[m] = paired_bootstrap(per_example[m], per_example[best], statistic or np.mean, resamples=resamples,
                                        seed=seed)
    tied = frozenset({best} | {m for m, t in tests.items() if t.p >= alpha})
    return Marks(best, tied, tests)


def _num(x: float, digits: int) -> str:
    s = f"{x:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0.0 else s  # no "-0.00"


def format_cell(values: Iterable[float], digits: int, *, ci: bool = True,
                interval: tuple[float, float] | None = None) -> str:
    """A Markdown cell: ``"4.77 ± 0.31 [4.00, 5.54]"`` (mean ± std [95% t interval]) for two or more values.

    Args:
        values: the per-seed values (NaNs dropped).
        digits: the decimals; with 0 (counts) a zero std gives the bare value (``"5"``).
        ci: whether to append the interval.
        interval: a bootstrap interval ``(low, high)`` of a single seed: ``"4.77 [4.10, 5.40]"`` (used for n = 1 only).

    Returns:
        The cell; ``"4.77"`` for a single value without interval (no "± 0.00"), ``"—"`` for none.
    """
    x = _finite(values)
    if x.size == 0:
        return "—"
    if x.size == 1:
        cell = _num(float(x[0]), digits)
        return f"{cell} [{_num(interval[0], digits)}, {_num(interval[1], digits)}]" if ci and interval else cell
    mean, half = t_interval(x)
    s = float(np.std(x, ddof=1))
    if s == 0.0 and digits == 0:
        return _num(mean, 0)
    cell = f"{_num(mean, digits)} ± {_num(s, digits)}"
    return f"{cell} [{_num(mean - half, digits)}, {_num(mean + half, digits)}]" if ci and half is not None else cell
