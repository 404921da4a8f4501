"""``seeds: {auto: ...}``: seeds are added until the two best methods separate, or the maximum is reached."""

from __future__ import annotations

import pytest

from ensemblekit.config import CompareConfig
from ensemblekit.experiments.seeds import decide, decision_markdown, more_seeds


def _row(method, seed, error):
    return {"method": method, "budget": 1, "seed": seed, "test": {"accuracy": 1.0 - error / 100.0, "nll": 0.1}}


def _cfg(max_seeds=6):
    return CompareConfig(budgets=[1], seeds={"auto": {"min": 3, "max": max_seeds}},
                         methods=[{"name": "independent", "label": "A"}, {"name": "fge", "label": "B"}])


# per seed: A's error, B's error
CLEAR = {0: (4.0, 5.0), 1: (4.2, 5.1), 2: (3.9, 5.0), 3: (4.1, 5.2)}
NOISE = {s: (4.0 + d, 4.0 - d) for s, d in enumerate([0.3, -0.2, 0.1, -0.3, 0.2, -0.1, 0.25, -0.15])}


def _runner(table, ran):
    def run_more(seeds):
        ran.extend(seeds)
        return [_row(m, s, table[s][i]) for s in seeds for i, m in enumerate("AB")]
    return run_more


def test_stops_at_the_minimum_when_the_top_two_separate():
    ran = []
    first = _runner(CLEAR, ran)([0, 1, 2])
    rows, decision = more_seeds(_cfg(), first, _runner(CLEAR, ran))
    assert ran == [0, 1, 2] and decision["stopped"] == "separated" and decision["seeds"] == 3
    # B - A per seed: 1.0, 0.9, 1.1: mean 1.0, sd 0.1, t(2, 0.975) = 4.3027 -> 1.0 ± 0.2484
    assert decision["best"] == "A" and decision["mean_diff"] == pytest.approx(1.0)
    assert (decision["low"], decision["high"]) == (pytest.approx(1.0 - 0.248414, abs=1e-5), pytest.approx(1.0 + 0.248414, abs=1e-5))
    assert "Decided at 3 seeds" in decision_markdown(decision)


def test_adds_seeds_up_to_the_maximum_while_undecided():
    ran = []
    first = _runner(NOISE, ran)([0, 1, 2])
    rows, decision = more_seeds(_cfg(max_seeds=6), first, _runner(NOISE, ran))
    assert ran == [0, 1, 2, 3, 4, 5] and decision["seeds"] == 6 and decision["stopped"] == "max"
    assert decision["low"] < 0 < decision["high"]
    assert [(r["method"], r["seed"]) for r in rows][:3] == [("A", 0), ("A", 1), ("A", 2)]  # table order
    assert "Undecided at the maximum of 6 seeds" in decision_markdown(decision)


def test_one_method_has_nothing_to_separate():
    assert decide([_row("A", 0, 4.0)], "error", 1)["best"] is None


def test_auto_seeds_are_validated():
    with pytest.raises(Exception, match="max .* must be >= min"):
        CompareConfig(seeds={"auto": {"min": 5, "max": 3}})
    with pytest.raises(Exception, match="list of ints or"):
        CompareConfig(seeds={"outo": {}})
    assert _cfg().seed_list == [0, 1, 2]
