"""The statistics of the comparison tables: hand-computed t intervals, R's paired t-test on Student's sleep data, the
Nadeau-Bengio correction, the paired bootstrap, fractional ranks, significance marks and the Markdown cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ensemblekit.report.stats import (
    Marks,
    PairedTest,
    bootstrap_interval,
    format_cell,
    paired_bootstrap,
    paired_t_test,
    ranks_with_ties,
    significance_marks,
    t_interval,
)

# Student's sleep data (Cushny & Peebles 1905; R's `sleep`): extra hours of sleep of 10 patients under two drugs
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_t_interval_matches_the_table_value():
    mean, half = t_interval([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * 1.5811388 / math.sqrt(5), abs=1e-5)
    assert half == pytest.approx(1.963243, abs=1e-5)


def test_t_interval_single_empty_nan_and_level():
    assert t_interval([4.2]) == (4.2, None)
    mean, half = t_interval([])
    assert math.isnan(mean) and half is None
    mean, half = t_interval([float("nan")])
    assert math.isnan(mean) and half is None
    assert t_interval([1, float("nan"), 2, 3, 4, 5]) == t_interval([1, 2, 3, 4, 5])
    # 90%: t_{4,0.95} = 2.131847
    assert t_interval([1, 2, 3, 4, 5], level=0.90)[1] == pytest.approx(2.131847 * 1.5811388 / math.sqrt(5), abs=1e-5)


def test_paired_t_test_reproduces_r_on_the_sleep_data():
    r = paired_t_test(DRUG1, DRUG2)
    assert isinstance(r, PairedTest)
    assert r.n == 10 and r.df == 9
    assert r.mean_diff == pytest.approx(-1.58, abs=1e-12)
    assert r.t == pytest.approx(-4.0621, abs=1e-4)
    assert r.p == pytest.approx(0.002833, abs=1e-4)
    # R: 95 percent confidence interval -2.4598858 -0.7001142
    assert r.low == pytest.approx(-2.4598858, abs=1e-6) and r.high == pytest.approx(-0.7001142, abs=1e-6)
    assert r.half_width == pytest.approx((r.high - r.low) / 2)


def test_paired_t_test_agrees_with_scipy_on_random_data():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 20):
        a = rng.normal(size=n)
        b = a + rng.normal(0.3, 1.0, size=n)
        ours, ref = paired_t_test(a, b), sps.ttest_rel(a, b)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
        assert ours.df == n - 1


def test_paired_t_test_edge_cases():
    one = paired_t_test([1.0], [2.0])
    assert one.n == 1 and one.mean_diff == -1.0 and math.isnan(one.p) and math.isnan(one.t)
    assert one.half_width is None and one.df is None and one.low is None
    none = paired_t_test([], [])
    assert none.n == 0 and math.isnan(none.mean_diff) and math.isnan(none.p)
    same = paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.p, same.t, same.mean_diff, same.half_width) == (1.0, 0.0, 0.0, 0.0)
    shifted = paired_t_test([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert shifted.p == 0.0 and shifted.t == math.inf and shifted.mean_diff == 0.5
    assert paired_t_test([1.0, 2.0, 3.0], [1.1, 2.1, 3.1]).t == -math.inf  # 0.1 in floats: still sd = 0
    # a NaN drops its pair
    nan = paired_t_test([1.0, float("nan"), 2.0, 4.0], [0.0, 5.0, 1.5, 2.0])
    assert nan.n == 3 and nan.mean_diff == pytest.approx((1.0 + 0.5 + 2.0) / 3)
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0, 3.0], test_fraction=1.0)


@pytest.mark.parametrize("f", [0.1, 0.2, 0.5])
def test_nadeau_bengio_widens_the_interval_exactly(f):
    plain, corrected = paired_t_test(DRUG1, DRUG2), paired_t_test(DRUG1, DRUG2, test_fraction=f)
    n = 10
    factor = math.sqrt((1 / n + f / (1 - f)) / (1 / n))
    assert corrected.half_width == pytest.approx(plain.half_width * factor, rel=1e-12)
    assert corrected.t == pytest.approx(plain.t / factor, rel=1e-12)
    assert corrected.p > plain.p and corrected.df == plain.df and corrected.mean_diff == plain.mean_diff


def test_bootstrap_of_identical_methods():
    x = np.random.default_rng(0).random(300)
    r = paired_bootstrap(x, x, np.mean)
    assert r.mean_diff == 0.0 and r.p == 1.0 and r.low == 0.0 and r.high == 0.0 and r.half_width == 0.0
    assert r.n == 300 and math.isnan(r.t) and r.df is None


def test_bootstrap_detects_a_clearly_worse_method():
    rng = np.random.default_rng(0)
    u = rng.random(500)  # the same examples: b errs on a subset of a's errors
    a, b = (u < 0.3).astype(float), (u < 0.1).astype(float)
    r = paired_bootstrap(a, b, np.mean)
    assert r.mean_diff == pytest.approx(a.mean() - b.mean())
    assert r.p < 0.01 and r.low > 0.0 and r.low < r.mean_diff < r.high
    assert r.half_width == pytest.approx((r.high - r.low) / 2)
    assert r.mean_diff == pytest.approx(0.2, abs=0.05)


def test_bootstrap_is_deterministic_and_batched_gives_the_same_result():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=200), rng.normal(0.1, 1.0, size=200)
    first = paired_bootstrap(a, b, np.mean, resamples=500, seed=7)
    assert paired_bootstrap(a, b, np.mean, resamples=500, seed=7) == first
    assert paired_bootstrap(a, b, np.mean, resamples=500, seed=8) != first
    batched = paired_bootstrap(a, b, lambda s: s.mean(axis=1), resamples=500, seed=7, batched=True)
    assert batched.mean_diff == pytest.approx(first.mean_diff)
    assert batched.p == first.p and batched.low == pytest.approx(first.low) and batched.high == pytest.approx(first.high)


def test_bootstrap_of_two_column_examples_and_rmse():
    rng = np.random.default_rng(4)
    conf = rng.random(400)
    a = np.stack([conf, (rng.random(400) < conf).astype(float)], axis=1)  # [confidence, correct]
    b = np.stack([conf, (rng.random(400) < 0.5).astype(float)], axis=1)
    gap = lambda e: float(abs(e[:, 0].mean() - e[:, 1].mean()))  # noqa: E731
    r = paired_bootstrap(a, b, gap, resamples=300)
    assert r.mean_diff == pytest.approx(gap(a) - gap(b)) and 0.0 <= r.p <= 1.0 and r.low <= r.high
    sq = rng.random(400) ** 2
    rmse = lambda e: float(np.sqrt(np.mean(e)))  # noqa: E731
    r = paired_bootstrap(sq * 4.0, sq, rmse, resamples=300)
    assert r.mean_diff == pytest.approx(rmse(sq)) and r.p == 0.0  # 2 * rmse(sq) - rmse(sq) > 0 on every resample
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10], gap)


def test_bootstrap_interval_of_a_bernoulli_mean_is_close_to_the_normal_one():
    x = (np.random.default_rng(5).random(10_000) < 0.3).astype(float)
    stat, low, high = bootstrap_interval(x, np.mean)
    p = x.mean()
    se = math.sqrt(p * (1 - p) / x.size)
    assert stat == p
    assert low == pytest.approx(p - 1.959964 * se, abs=0.002) and high == pytest.approx(p + 1.959964 * se, abs=0.002)
    assert bootstrap_interval(x, np.mean) == (stat, low, high)


def test_fractional_ranks():
    assert ranks_with_ties({"a": 1, "b": 2, "c": 2, "d": 3}) == {"a": 1.0, "b": 2.5, "c": 2.5, "d": 4.0}
    assert ranks_with_ties({"a": 1, "b": 2, "c": 2, "d": 3}, lower_is_better=False) == {"a": 4.0, "b": 2.5, "c": 2.5, "d": 1.0}
    assert ranks_with_ties({"a": 1.0, "b": float("nan"), "c": 0.5}) == {"c": 1.0, "a": 2.0}
    assert ranks_with_ties({"a": 5.0, "b": 5.0, "c": 5.0}) == {"a": 2.0, "b": 2.0, "c": 2.0}
    assert ranks_with_ties({}) == {}


def test_ranks_with_tied_groups():
    vals = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert ranks_with_ties(vals, tied=[frozenset({"a", "b"})]) == {"a": 1.5, "b": 1.5, "c": 3.0, "d": 4.0}
    # a group merges with the equal values next to it; unknown names are ignored
    vals = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 3.0}
    assert ranks_with_ties(vals, tied=[frozenset({"b", "c", "zzz"})]) == {"a": 1.0, "b": 3.0, "c": 3.0, "d": 3.0}


def _table() -> dict:
    rng = np.random.default_rng(11)
    keys = [(seed, 0) for seed in range(5)]
    base = {k: 10.0 + v for k, v in zip(keys, rng.normal(0, 1.0, size=5))}  # seed variance shared by all methods
    return {
        "A": dict(base),
        "B": {k: v + 0.3 + e for (k, v), e in zip(base.items(), [0.01, -0.01, 0.02, 0.0, -0.02])},  # consistently worse
        "C": {k: v + e for (k, v), e in zip(base.items(), [0.5, -0.4, 0.3, -0.2, 0.1])},  # noise around A
        "D": {(0, 0): 9.0},  # one seed, better-looking, no per-example arrays
        "E": {(0, 0): float("nan")},  # no finite value: ignored
    }


def test_significance_marks_of_a_synthetic_table():
    table = {**_table(), "D": {(0, 0): 12.0}}  # one seed, worse-looking, no per-example arrays
    marks = significance_marks(table)
    assert isinstance(marks, Marks)
    assert marks.best == "A"
    assert marks.tied == frozenset({"A", "C"})
    assert set(marks.tests) == {"B", "C"}
    assert marks.tests["B"].p < 0.001 and marks.tests["B"].mean_diff == pytest.approx(0.3)
    assert marks.tests["C"].p > 0.5 and marks.tests["C"].mean_diff == pytest.approx(0.06)
    # higher is better: the worst becomes the best
    assert significance_marks(table, lower_is_better=False).best == "D"


def test_significance_marks_single_seed_methods():
    table = {"A": {(0, 0): 1.0}, "B": {(0, 0): 2.0}, "C": {(1, 0): 3.0}}
    marks = significance_marks(table)  # one common key, no per-example arrays: no test, not tied
    assert marks.best == "A" and marks.tied == frozenset({"A"}) and marks.tests == {}
    u = np.random.default_rng(0).random(500)
    per_example = {"A": (u < 0.1).astype(float), "B": (u < 0.11).astype(float)}
    marks = significance_marks(table, per_example=per_example, statistic=np.mean, resamples=500)
    assert set(marks.tests) == {"B"} and math.isnan(marks.tests["B"].t)  # C has no common key with A
    assert marks.tied == frozenset({"A", "B"}) and marks.tests["B"].p >= 0.05
    per_example["B"] = (u < 0.3).astype(float)
    assert significance_marks(table, per_example=per_example, resamples=500).tied == frozenset({"A"})


def test_significance_marks_edge_cases():
    assert significance_marks({}) == Marks(None, frozenset(), {})
    assert significance_marks({"A": {0: float("nan")}}) == Marks(None, frozenset(), {})
    table = _table()
    marks = significance_marks(table)
    assert marks.best == "D"  # the best mean, even over a single seed
    assert marks.tied == frozenset({"D"}) and marks.tests == {}  # nobody shares two keys with D
    marks = significance_marks(table, test_fraction=0.2)
    assert "E" not in marks.tests


def test_format_cell():
    assert format_cell([1.0, 2.0, 3.0], 2) == "2.00 ± 1.00 [-0.48, 4.48]"
    assert format_cell([1.0, 2.0, 3.0], 2, ci=False) == "2.00 ± 1.00"
    assert format_cell([4.77], 2) == "4.77"
    assert "±" not in format_cell([4.77], 2)
    assert format_cell([4.77], 2, interval=(4.1, 5.4)) == "4.77 [4.10, 5.40]"
    assert format_cell([4.77], 2, interval=(4.1, 5.4), ci=False) == "4.77"
    assert format_cell([5, 5, 5], 0) == "5"
    assert format_cell([5], 0) == "5"
    assert format_cell([], 2) == "—" and format_cell([float("nan")], 2) == "—"
    assert format_cell([1.0, float("nan"), 2.0, 3.0], 2) == "2.00 ± 1.00 [-0.48, 4.48]"
    assert format_cell([-0.001, 0.001], 2, ci=False) == "0.00 ± 0.00"  # no "-0.00"
