"""The regression uncertainty sections of a comparison's results.md and its regression figures: exact cells from
hand-chosen values written into a real evaluation dict, parts no row has left out, classification output unchanged."""

from __future__ import annotations

import copy
import hashlib
import re

import matplotlib.image as mpimg
import pytest

import ensemblekit as ek
from ensemblekit.data.scaling import standardize
from ensemblekit.ensemble import Ensemble
from ensemblekit.evaluation.regression_run import SHIFT_KEYS
from ensemblekit.evaluation.run import evaluate_uncertainty
from ensemblekit.experiments.compare import _comparison_plots
from ensemblekit.metrics.head_outputs import Readout
from ensemblekit.models import model_factory
from ensemblekit.report.regression_uncertainty_plots import regression_uncertainty_plots
from ensemblekit.report.regression_uncertainty_tables import regression_uncertainty_markdown
from ensemblekit.report.uncertainty_tables import uncertainty_markdown

METHODS, BUDGETS = ["Ind", "SSE"], [1, 2]
CORRUPTIONS = ("feature_noise", "feature_scale", "dropped_features")
SCORES = ("std", "epistemic_std", "aleatoric_std")


@pytest.fixture(scope="module")
def evaluation() -> dict:
    """One real regression evaluation (an untrained 2-member ensemble on diabetes): the schema the rows copy."""
    data = ek.load_dataset("diabetes")
    f = model_factory({"name": "mlp", "kwargs": {"hidden": (4,)}, "gaussian": True}, input_shape=data.input_shape, num_classes=1)
    ens = Ensemble.from_factory(f, seeds=[0, 1])
    ens.readout = Readout("regression", 1, scaling=standardize(data)[1])
    res = evaluate_uncertainty(ens, data, {"ood": ["noise", "permuted"], "shift": {"severities": [1, 5]}, "conformal": True})
    assert list(res["shift"]["corruptions"]) == list(CORRUPTIONS) and list(res["selective"]["scores"]) == list(SCORES)
    assert {"rmse", "nll", "picp95", "mean_std"} <= set(SHIFT_KEYS) and set(res["ood"]) == {"noise", "permuted"}
    return res


def _fill(ev: dict, o: float) -> None:
    """Hand-chosen values, every one ``base + o`` (o = 0.1 * method + 0.01 * budget + 0.02 * seed)."""
    cal = ev["calibration"]
    cal["variance_scaled"].update(nll=1.0 + o, crps=0.5 + o, picp95=0.8 + o, picp90=0.7 + o, scale=1.5 + o)
    cal["scale_then_pool"].update(nll=2.0 + o, crps=0.6 + o)
    sh = ev["shift"]
    for j, name in enumerate(CORRUPTIONS):  # severity index k: 0 (severity 1), 1 (severity 5)
        sh["corruptions"][name].update(rmse=[10 + j + 2 * k + o for k in (0, 1)], nll=[3 + 0.1 * j + 0.5 * k + o for k in (0, 1)],
                                       picp95=[0.8 - 0.1 * k - 0.02 * j + o for k in (0, 1)], mean_std=[5 + k + o for k in (0, 1)])
    for key in ("rmse", "nll", "picp95", "mean_std"):  # as evaluate_uncertainty forms them: means over corruptions, then severities
        sh["by_severity"][key] = [sum(sh["corruptions"][n][key][k] for n in CORRUPTIONS) / 3 for k in (0, 1)]
        sh["mean"][key] = sum(sh["by_severity"][key]) / 2
    sh["clean"].update(rmse=9 + o, nll=2.5 + o, picp95=0.75 + o, mean_std=4 + o)
    for c, score in enumerate(SCORES):
        ev["ood"]["noise"]["scores"][score]["auroc"] = 0.6 + 0.1 * c + o
        ev["ood"]["permuted"]["scores"][score]["auroc"] = 0.5 + 0.1 * c + o
        ev["selective"]["scores"][score].update(aurc=100 + 10 * c + 100 * o, oracle_aurc=50.0, random_aurc=200.0)
    ev["selective"]["oracle"]["aurc"] = 50.0
    ev["conformal"]["normalized"].update(coverage=0.8 + o, mean_width=200 + 100 * o)
    ev["conformal"]["mixture_interval"].update(coverage=0.7 + o, mean_width=150 + 100 * o)


def _rows(evaluation: dict) -> list[dict]:
    """2 methods x 2 budgets x 2 seeds of regression rows, each with its own copy of the evaluation."""
    rows = []
    for i, m in enumerate(METHODS):
        for b in BUDGETS:
            for s in (0, 1):
                o = 0.1 * i + 0.01 * b + 0.02 * s
                ev = copy.deepcopy(evaluation)
                _fill(ev, o)
                rows.append({"method": m, "budget": b, "seed": s, "members": b, "evaluation": ev,
                             "test": {"rmse": 9 + o, "nll": 2.5 + o, "size_curve": {"members": list(range(1, b + 1)), "nll": [2.5 + o] * b}},
                             "cost": {"parameters": 100 * b, "train_flops": 1e6 * b, "inference_flops": 1e3 * b}})
    return rows


def _table(md: str, heading: str, raw: bool = False) -> dict[str, list[str]]:
    """The table under ``## heading``: method -> its cells (without the 95% intervals and bold marks
    unless ``raw``: tests/report/test_stats.py checks those)."""
    block = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    table = {cells[0]: cells[1:] for line in block.splitlines() if line.startswith("| ") and not line.startswith("| method")
             for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    if raw:
        return table
    return {m: [re.sub(r" \[[^\]]*\]", "", c).replace("**", "") for c in cells] for m, cells in table.items()}


def test_variance_scaled_nll_crps_and_coverage_cells(evaluation):
    md = regression_uncertainty_markdown(_rows(evaluation), METHODS, BUDGETS)
    # Ind 1B: o = 0.01, 0.03 (mean 0.02, sample std 0.0141); Ind 2B: 0.02, 0.04; SSE: 0.1 more
    # pool-then-scale NLL, CRPS, PICP95 are the comparison's own tables (report/tables.py), not repeated here
    assert "## Test NLL, variance-scaled (pool, then scale)" not in md and "PICP at 95% (%), variance-scaled" not in md
    assert _table(md, "Test NLL, members variance-scaled, then pooled")["SSE"] == ["2.120 ± 0.014", "2.130 ± 0.014"]
    # two seeds: t(1, 0.975) = 12.7062, half-width 12.7062 * 0.014142 / sqrt(2) = 0.1271; Ind (0.1 lower everywhere) is best
    # and separated from SSE by the paired t-test (two pairs with the same difference: p = 0), so SSE is not bold
    raw = _table(md, "Test NLL, members variance-scaled, then pooled", raw=True)
    assert raw["SSE"][0] == "2.120 ± 0.014 [1.993, 2.247]" and raw["Ind"][0].startswith("**2.020 ± 0.014 [1.893, 2.147]**")
    assert _table(md, "Test CRPS, members variance-scaled, then pooled")["Ind"] == ["0.620 ± 0.014", "0.630 ± 0.014"]
    assert _table(md, "Test PICP at 90% (%), variance-scaled (pool, then scale)")["SSE"] == ["82.0 ± 1.4", "83.0 ± 1.4"]
    assert _table(md, "Variance scale fitted on the validation split (pool, then scale)")["Ind"] == ["1.520 ± 0.014", "1.530 ± 0.014"]
    assert "Lakshminarayanan et al. (2017)" in md and "Kuleshov et al. (2018)" in md and "Lei et al. 2018" in md
    assert "| method | 1B | 2B |" in md


def test_shift_cells_per_severity_and_per_corruption_at_the_largest_budget(evaluation):
    md = regression_uncertainty_markdown(_rows(evaluation), METHODS, BUDGETS)
    assert _table(md, "Shift: RMSE, mean over corruptions and severities") == {"Ind": ["12.020 ± 0.014", "12.030 ± 0.014"],
                                                                              "SSE": ["12.120 ± 0.014", "12.130 ± 0.014"]}
    assert _table(md, "Shift: NLL, mean over corruptions and severities")["Ind"] == ["3.370 ± 0.014", "3.380 ± 0.014"]
    assert "| method | clean | 1 | 5 |" in md
    assert _table(md, "Shift at 2B: RMSE by severity (mean over corruptions)") == {
        "Ind": ["9.030 ± 0.014", "11.030 ± 0.014", "13.030 ± 0.014"], "SSE": ["9.130 ± 0.014", "11.130 ± 0.014", "13.130 ± 0.014"]}
    assert _table(md, "Shift at 2B: NLL by severity (mean over corruptions)")["Ind"] == ["2.530 ± 0.014", "3.130 ± 0.014", "3.630 ± 0.014"]
    assert _table(md, "Shift at 2B: PICP at 95% (%) by severity (mean over corruptions)")["Ind"] == ["78.0 ± 1.4", "81.0 ± 1.4", "71.0 ± 1.4"]
    assert _table(md, "Shift at 2B: mean predicted std by severity (mean over corruptions)")["SSE"] == [
        "4.130 ± 0.014", "5.130 ± 0.014", "6.130 ± 0.014"]
    assert "| method | feature_noise | feature_scale | dropped_features |" in md
    assert _table(md, "Shift at 2B: RMSE per corruption (mean over severities)")["Ind"] == ["11.030 ± 0.014", "12.030 ± 0.014", "13.030 ± 0.014"]
    assert _table(md, "Shift at 2B: NLL per corruption (mean over severities)")["SSE"] == ["3.380 ± 0.014", "3.480 ± 0.014", "3.580 ± 0.014"]
    assert _table(md, "Shift at 2B: PICP at 95% (%) per corruption (mean over severities)")["Ind"] == ["78.0 ± 1.4", "76.0 ± 1.4", "74.0 ± 1.4"]


def test_ood_selective_and_conformal_cells(evaluation):
    md = regression_uncertainty_markdown(_rows(evaluation), METHODS, BUDGETS)
    assert "| method | std | epistemic_std | aleatoric_std |" in md
    assert _table(md, "OOD detection at 2B, noise: AUROC (%)") == {"Ind": ["63.0 ± 1.4", "73.0 ± 1.4", "83.0 ± 1.4"],
                                                                  "SSE": ["73.0 ± 1.4", "83.0 ± 1.4", "93.0 ± 1.4"]}
    assert _table(md, "OOD detection at 2B, permuted: AUROC (%)")["SSE"] == ["63.0 ± 1.4", "73.0 ± 1.4", "83.0 ± 1.4"]
    # AURC = 100 + 10 * score + 100 * o over an oracle of 50: Ind 1B std 101, 103 -> 2.02, 2.06
    assert _table(md, "Selective regression: AURC / oracle AURC, score = std") == {"Ind": ["2.04 ± 0.03", "2.06 ± 0.03"],
                                                                                  "SSE": ["2.24 ± 0.03", "2.26 ± 0.03"]}
    assert "| method | std | epistemic_std | aleatoric_std | oracle |" in md
    assert _table(md, "Selective regression at 2B: AURC (MSE risk) per score")["Ind"] == [
        "103.000 ± 1.414", "113.000 ± 1.414", "123.000 ± 1.414", "50.000 ± 0.000"]
    assert _table(md, "Selective regression at 2B: AURC / oracle AURC per score")["SSE"] == [
        "2.26 ± 0.03", "2.46 ± 0.03", "2.66 ± 0.03", "4.00 ± 0.00"]
    assert _table(md, "Normalised split-conformal intervals (alpha = 0.1): test coverage (%) / mean width") == {
        "Ind": ["82.0 ± 1.4 / 202.000 ± 1.414", "83.0 ± 1.4 / 203.000 ± 1.414"],
        "SSE": ["92.0 ± 1.4 / 212.000 ± 1.414", "93.0 ± 1.4 / 213.000 ± 1.414"]}
    assert "coverage ≥ 90% on exchangeable data" in md
    assert _table(md, "The mixture's own central 90% interval: test coverage (%) / mean width")["Ind"] == [
        "72.0 ± 1.4 / 152.000 ± 1.414", "73.0 ± 1.4 / 153.000 ± 1.414"]


def _without(rows: list[dict], *parts: str) -> list[dict]:
    rows = copy.deepcopy(rows)
    for r in rows:
        for p in parts:
            r["evaluation"].pop(p, None)
    return rows


def test_sections_of_parts_no_row_has_are_left_out(evaluation):
    rows = _rows(evaluation)
    headings = lambda md: re.findall(r"^## (.+)$", md, flags=re.M)  # noqa: E731
    full = headings(regression_uncertainty_markdown(rows, METHODS, BUDGETS))
    assert len(full) == 4 + 2 + 4 + 3 + 2 + 3 + 2  # calibration, shift overall / by severity / per corruption, OOD, selective, conformal
    only_cal = headings(regression_uncertainty_markdown(_without(rows, "shift", "ood", "selective", "conformal"), METHODS, BUDGETS))
    assert only_cal == full[:4] and all("variance" in h.lower() for h in only_cal)
    no_cal = headings(regression_uncertainty_markdown(_without(rows, "calibration"), METHODS, BUDGETS))
    assert no_cal == full[4:]
    for part, word in (("shift", "Shift"), ("ood", "OOD"), ("selective", "Selective"), ("conformal", "interval")):
        left = headings(regression_uncertainty_markdown(_without(rows, part), METHODS, BUDGETS))
        assert not any(word in h for h in left) and len(left) < len(full), part
    assert regression_uncertainty_markdown(_without(rows, "calibration", "shift", "ood", "selective", "conformal"), METHODS, BUDGETS) == ""
    assert regression_uncertainty_markdown([{**r, "evaluation": None} for r in rows], METHODS, BUDGETS) == ""
    at_one = [r for r in rows if r["budget"] == 1] + _without([r for r in rows if r["budget"] == 2], "ood")
    assert "OOD" not in regression_uncertainty_markdown(at_one, METHODS, BUDGETS)  # OOD tables are of the largest budget only


def test_a_method_budget_without_the_part_reads_a_dash(evaluation):
    rows = _rows(evaluation)
    for r in rows:
        if (r["method"], r["budget"]) == ("SSE", 1):
            del r["evaluation"]["conformal"]["normalized"]
    md = regression_uncertainty_markdown(rows, METHODS, BUDGETS)
    assert _table(md, "Normalised split-conformal intervals (alpha = 0.1): test coverage (%) / mean width")["SSE"] == [
        "—", "93.0 ± 1.4 / 213.000 ± 1.414"]


def test_uncertainty_markdown_hands_regression_rows_over(evaluation):
    rows = _rows(evaluation)
    assert uncertainty_markdown(rows, METHODS, BUDGETS) == regression_uncertainty_markdown(rows, METHODS, BUDGETS)


def _classification_rows() -> list[dict]:
    """2 methods x 2 budgets x 2 seeds of a classification evaluation, every part the classification tables read."""
    rows = []
    for i, m in enumerate(METHODS):
        for b in BUDGETS:
            for s in (0, 1):
                d = 0.01 * i + 0.002 * b + 0.001 * s
                ev = {
                    "calibration": {"pool_then_calibrate": {"nll": 0.3 + d, "ece": 0.02 + d},
                                    "calibrate_then_pool": {"nll": 0.31 + d, "ece": 0.03 + d}},
                    "shift": {"corruptions": {"gaussian_noise": {"severity": [1, 3], "accuracy": [0.8 - d, 0.6 - d]},
                                              "contrast": {"severity": [1, 3], "accuracy": [0.85 - d, 0.7 - d]}},
                              "by_severity": {"severity": [1, 3], "accuracy": [0.825 - d, 0.65 - d], "ece": [0.05 + d, 0.1 + d],
                                              "nll": [0.6 + d, 1.1 + d]},
                              "mean": {"accuracy": 0.7375 - d, "ece": 0.075 + d},
                              "clean": {"accuracy": 0.9 - d, "ece": 0.02 + d, "nll": 0.3 + d}},
                    "ood": {"noise": {"scores": {"msp": {"auroc": 0.8 + d, "fpr95": 0.5 - d}, "mi": {"auroc": 0.9 + d, "fpr95": 0.3 - d}}}},
                    "selective": {"scores": {"msp": {"aurc": 0.05 + d, "augrc": 0.02 + d}, "mi": {"aurc": 0.06 + d, "augrc": 0.03 + d}}},
                    "conformal": {"aps": {"coverage": 0.9 + d, "mean_size": 1.5 + d, "alpha": 0.1}},
                }
                rows.append({"method": m, "budget": b, "seed": s, "test": {"accuracy": 0.9 - d, "nll": 0.3 + d}, "evaluation": ev})
    return rows


def test_classification_output_is_unchanged():
    md = uncertainty_markdown(_classification_rows(), METHODS, BUDGETS)
    # the SHA-256 of this output (the whole text, byte for byte; last changed when the OOD note named DDU's density score)
    assert hashlib.sha256(md.encode()).hexdigest() == "f331be5fc946d6df9ca6a13a388240e3ef274dcd8728d66287be5605e4587b00"
    assert re.findall(r"^## (.+)$", md, flags=re.M)[:2] == ["Test NLL, temperature-scaled (pool, then calibrate)",
                                                            "Test NLL, members temperature-scaled, then pooled"]
    assert _table(md, "Test NLL, temperature-scaled (pool, then calibrate)")["Ind"] == ["0.302 ± 0.001", "0.304 ± 0.001"]
    assert _table(md, "Conformal sets (APS, alpha = 0.1): test coverage (%) / mean set size")["SSE"] == [
        "91.2 ± 0.1 / 1.51 ± 0.00", "91.5 ± 0.1 / 1.51 ± 0.00"]
    assert "variance" not in md


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(path, format="png").ndim == 3


def test_regression_plots_at_the_largest_budget(evaluation, tmp_path):
    rows = _rows(evaluation)
    written = regression_uncertainty_plots(rows, METHODS, 2, tmp_path / "all", "t")
    assert [p.name for p in written] == ["shift.png", "ood_auroc.png", "risk_coverage.png", "conformal.png"]
    assert all(_png(p) for p in written)
    no_curves = copy.deepcopy(rows)
    for r in no_curves:
        r["evaluation"]["selective"].pop("curves")
    assert [p.name for p in regression_uncertainty_plots(no_curves, METHODS, 2, tmp_path / "nc", "t")] == [
        "shift.png", "ood_auroc.png", "conformal.png"]
    bare = _without(rows, "shift", "ood", "selective", "conformal")
    assert regression_uncertainty_plots(bare, METHODS, 2, tmp_path / "none", "t") == []
    assert not (tmp_path / "none").exists()


def test_compare_draws_the_regression_plots(evaluation, tmp_path):
    _comparison_plots(_rows(evaluation), METHODS, BUDGETS, str(tmp_path), "t")
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"shift.png", "ood_auroc.png", "risk_coverage.png", "conformal.png"} <= set(names)
    assert all(_png(tmp_path / n) for n in names)
