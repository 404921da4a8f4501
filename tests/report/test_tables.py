"""The comparison tables: 95% intervals, bold ties with the best, mean ranks, and no unmeasured spread."""

from __future__ import annotations

import re

import numpy as np

from ensemblekit.report.tables import comparison_markdown, marked_body, paired_grid, rank_body


def _row(method, seed, error, budget=1):
    return {"method": method, "name": "independent", "budget": budget, "seed": seed, "members": 1, "wall_s": 1.0,
            "test": {"accuracy": 1.0 - error / 100.0, "nll": error / 10.0, "ece": 0.01},
            "cost": {"parameters": 10, "train_flops": 1e6, "inference_flops": 100}}


def _section(md, title):
    block = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return {c[0]: c[1:] for line in block.splitlines() if line.startswith("| ") and not line.startswith("| method")
            for c in [[x.strip() for x in line.strip("|").split("|")]]}


def test_best_and_its_ties_are_bold_and_a_consistently_worse_method_is_not():
    # A: 4, 5, 6; B = A + 1 exactly (paired t: p = 0, separated); C = A + noise that averages 0.2 (p = 0.759)
    errors = {"A": [4.0, 5.0, 6.0], "B": [5.0, 6.0, 7.0], "C": [5.0, 4.1, 6.5]}
    rows = [_row(m, s, e) for m, es in errors.items() for s, e in enumerate(es)]
    table = _section(comparison_markdown(rows, ["A", "B", "C"], [1]), "Test error (%)")
    # A: mean 5, sd 1, t(2, 0.975) = 4.3027: 5 ± 2.4841 -> [2.52, 7.48]
    assert table["A"] == ["**5.00 ± 1.00 [2.52, 7.48]**"]
    assert not table["B"][0].startswith("**")
    assert table["C"][0].startswith("**")


def test_mean_ranks_share_places_on_ties():
    # seed 0: A 1, B 2, C 2 -> ranks 1, 2.5, 2.5; seed 1: A 3, B 1, C 2 -> 3, 1, 2
    g = paired_grid([_row("A", 0, 1.0), _row("B", 0, 2.0), _row("C", 0, 2.0), _row("A", 1, 3.0), _row("B", 1, 1.0), _row("C", 1, 2.0)],
                    lambda r: 100.0 * (1.0 - r["test"]["accuracy"]))
    assert rank_body(g, ["A", "B", "C"], [1]) == [["A", "2.00"], ["B", "1.75"], ["C", "2.25"]]


def test_one_seed_prints_no_unmeasured_spread_and_bootstraps_the_test_set():
    rows = [_row("A", 0, 10.0), _row("B", 0, 30.0)]
    md = comparison_markdown(rows, ["A", "B"], [1])
    assert "± 0.00" not in md and "± 0.0 " not in md
    assert _section(md, "Test error (%)") == {"A": ["10.00"], "B": ["30.00"]}  # no per-example losses: no interval, no marks
    rng = np.random.default_rng(0)
    n = 400
    err_a = (rng.random(n) < 0.1).astype(float)
    err_b = np.maximum(err_a, (rng.random(n) < 0.25).astype(float))  # B wrong wherever A is, and more
    losses = {"A": {"error": err_a, "nll": err_a, "confidence": np.full(n, 0.9)},
              "B": {"error": err_b, "nll": err_b, "confidence": np.full(n, 0.9)}}
    rows = [_row("A", 0, 100 * err_a.mean()), _row("B", 0, 100 * err_b.mean())]
    table = _section(comparison_markdown(rows, ["A", "B"], [1], examples=lambda r: losses[r["method"]]), "Test error (%)")
    a_cell = re.fullmatch(r"\*\*(\d+\.\d+) \[(\d+\.\d+), (\d+\.\d+)\]\*\*", table["A"][0])
    assert a_cell, table  # A bold, with its bootstrap interval
    mean, low, high = map(float, a_cell.groups())
    se = 100 * np.sqrt(err_a.mean() * (1 - err_a.mean()) / n)
    assert abs((high - low) / 2 - 1.96 * se) < 0.5  # close to the normal approximation
    assert not table["B"][0].startswith("**")  # the paired bootstrap separates them


def test_marked_body_leaves_a_lone_method_unmarked():
    g = {("A", 1): {(0, None): 1.0, (1, None): 2.0}}
    assert marked_body(g, ["A"], [1], 2, "min") == [["A", "1.50 ± 0.71 [-4.85, 7.85]"]]


def test_a_flops_budget_row_beyond_five_percent_says_so():
    rows = []
    for method, flops in (("SWAG", 535e9), ("Ind", 345e9)):  # 342 G budget: +56% and +0.9%
        r = _row(method, 0, 5.0)
        r["cost"]["train_flops"] = flops
        r["budget_kwargs"] = {"budget_unit": "flops", "epochs": 3, "budget_flops": 342e9}
        rows.append(r)
    table = _section(comparison_markdown(rows, ["SWAG", "Ind"], [1]), "Training FLOPs")
    assert table == {"SWAG": ["535 G (+56% of its budget)"], "Ind": ["345 G"]}
