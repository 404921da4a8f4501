"""Metrics against values computed by hand on tiny inputs, identities, errors, plots."""

from __future__ import annotations

import json
from math import log

import numpy as np
import pytest
import torch

from ensemblekit.errors import ConfigError, DataError
from ensemblekit.metrics import (
    accuracy,
    ambiguity,
    brier,
    disagreement,
    ece,
    ensemble_mean,
    entropy_decomposition,
    evaluate_probs,
    nll,
    pairwise_kl,
    reliability,
    size_curve,
)
from ensemblekit.report import line_plot, reliability_diagram, size_curve_plot

# The running example: 2 members x 3 examples x 2 classes.
#   member 0: [.8 .2] [.4 .6] [.3 .7]   argmax 0 1 1
#   member 1: [.6 .4] [.7 .3] [.1 .9]   argmax 0 0 1
#   labels y:  0      0      1
#   ensemble: [.7 .3] [.55 .45] [.2 .8] argmax 0 0 1
P = torch.tensor(
    [
        [[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]],
        [[0.6, 0.4], [0.7, 0.3], [0.1, 0.9]],
    ],
    dtype=torch.float64,
)
Y = torch.tensor([0, 0, 1])
ENS = torch.tensor([[0.7, 0.3], [0.55, 0.45], [0.2, 0.8]], dtype=torch.float64)

# NLL: -mean log p_y
NLL_M0 = -(log(0.8) + log(0.4) + log(0.7)) / 3
NLL_M1 = -(log(0.6) + log(0.7) + log(0.9)) / 3
NLL_ENS = -(log(0.7) + log(0.55) + log(0.8)) / 3
# Brier: mean_b sum_c (p - onehot)^2
#   m0: (.2^2+.2^2) + (.6^2+.6^2) + (.3^2+.3^2) = .08 + .72 + .18 = .98
#   m1: (.4^2+.4^2) + (.3^2+.3^2) + (.1^2+.1^2) = .32 + .18 + .02 = .52
#   ens: (.3^2+.3^2) + (.45^2+.45^2) + (.2^2+.2^2) = .18 + .405 + .08 = .665
BRIER_M0, BRIER_M1, BRIER_ENS = 0.98 / 3, 0.52 / 3, 0.665 / 3
# ECE with 5 bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]:
#   m0: conf .8 (ok), .6 (wrong), .7 (ok) -> bin 3 holds .8,.7: |1 - .75| * 2/3; bin 2 holds .6: |0 - .6| * 1/3
#       = .5/3 + .6/3 = 1.1/3   (.8 sits on an edge and belongs to (.6, .8])
#   m1: conf .6, .7, .9 all correct, each alone in bins 2, 3, 4: (.4 + .3 + .1)/3 = .8/3
#   ens: conf .7, .55, .8 all correct -> bin 3 {.7,.8}: .25*2/3; bin 2 {.55}: .45/3 -> .95/3
ECE_M0, ECE_M1, ECE_ENS = 1.1 / 3, 0.8 / 3, 0.95 / 3


def kl2(a: float, b: float) -> float:
    """KL([a, 1-a] || [b, 1-b]) by hand."""
    return a * log(a / b) + (1 - a) * log((1 - a) / (1 - b))


def h2(a: float) -> float:
    """Entropy of [a, 1-a] by hand."""
    return -(a * log(a) + (1 - a) * log(1 - a))


def close(actual, expected, tol=1e-12):
    return torch.as_tensor(actual, dtype=torch.float64).allclose(
        torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0
    )


# ------------------------------------------------------------------ classification

def test_ensemble_mean_by_hand():
    assert close(ensemble_mean(P), ENS)
    assert ensemble_mean(P.float()).dtype == torch.float32


def test_accuracy_by_hand_per_member_and_ensemble():
    assert close(accuracy(P, Y), [2 / 3, 1.0])
    assert close(accuracy(ENS, Y), 1.0)
    assert accuracy(ENS, Y).shape == ()


def test_nll_by_hand():
    assert close(nll(P, Y), [NLL_M0, NLL_M1])
    assert close(nll(ENS, Y), NLL_ENS)


def test_nll_clamps_at_eps():
    # p_y = 0 on one of two examples: (-log 1e-12 + -log 1) / 2
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert close(nll(p, torch.tensor([0, 0])), -log(1e-12) / 2, tol=1e-9)


def test_brier_by_hand():
    assert close(brier(P, Y), [BRIER_M0, BRIER_M1])
    assert close(brier(ENS, Y), BRIER_ENS)


def test_ece_by_hand_with_values_on_bin_edges():
    assert close(ece(P, Y, n_bins=5), [ECE_M0, ECE_M1])
    assert close(ece(ENS, Y, n_bins=5), ECE_ENS)
    # float32 input: 0.8f is 0.800000012 in float64 but must still fall in (.6, .8]
    assert close(ece(P.float(), Y, n_bins=5), [ECE_M0, ECE_M1], tol=1e-6)


def test_ece_first_bin_includes_zero_and_last_includes_one():
    # 3 classes, confidence 1.0 correct; and a C=1 degenerate case is avoided.
    # conf 1.0 (correct) -> last bin, gap 0; conf 1/3 (wrong, label 1 vs argmax 0) -> bin (.2,.4]
    p = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert close(ece(p, y, n_bins=5), (0 + 1 / 3) / 2)
    rel = reliability(p, y, n_bins=5)
    assert rel["counts"].tolist() == [0, 1, 0, 0, 1]
    # With one bin everything is pooled: |mean acc - mean conf| = |1/2 - 2/3|
    assert close(ece(p, y, n_bins=1), 1 / 6)


def test_reliability_by_hand():
    rel = reliability(P[0], Y, n_bins=5)
    assert np.allclose(rel["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert rel["counts"].tolist() == [0, 0, 1, 2, 0]
    assert np.allclose(rel["confidence"][2:4], [0.6, 0.75])
    assert np.allclose(rel["accuracy"][2:4], [0.0, 1.0])
    assert np.isnan(rel["accuracy"][0]) and np.isnan(rel["confidence"][4])
    assert rel["ece"] == pytest.approx(ECE_M0)


def test_leading_batch_dims_are_kept():
    p = P.expand(4, 2, 3, 2)  # (4, M, B, C)
    for fn in (accuracy, nll, brier, ece):
        assert fn(p, Y).shape == (4, 2)


# ------------------------------------------------------------------ diversity

def test_disagreement_by_hand():
    # argmax m0 = 0 1 1, m1 = 0 0 1: they differ on 1 of 3 examples
    assert close(disagreement(P), 1 / 3)
    # add m2 predicting 1 1 1: pairs (0,1) 1/3, (0,2) 1/3, (1,2) 2/3 -> mean 4/9
    m2 = torch.tensor([[[0.1, 0.9], [0.2, 0.8], [0.4, 0.6]]], dtype=torch.float64)
    assert close(disagreement(torch.cat([P, m2])), 4 / 9)


def test_disagreement_zero_for_identical_members_and_single_member():
    assert close(disagreement(P[:1].expand(4, 3, 2)), 0.0)
    assert close(disagreement(P[:1]), 0.0)


def test_pairwise_kl_by_hand():
    kl01 = (kl2(0.8, 0.6) + kl2(0.4, 0.7) + kl2(0.3, 0.1)) / 3
    kl10 = (kl2(0.6, 0.8) + kl2(0.7, 0.4) + kl2(0.1, 0.3)) / 3
    assert close(pairwise_kl(P), (kl01 + kl10) / 2)
    assert close(pairwise_kl(P[:1]), 0.0)
    assert close(pairwise_kl(P[:1].expand(3, 3, 2)), 0.0)


def test_pairwise_kl_matches_a_loop_over_pairs():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 7, 5, generator=g, dtype=torch.float64).softmax(-1)
    expected = np.mean(
        [(p[m] * (p[m].log() - p[n].log())).sum(-1).mean().item() for m in range(4) for n in range(4) if m != n]
    )
    assert close(pairwise_kl(p), expected)


def test_ambiguity_by_hand_and_nonnegative():
    assert close(ambiguity(P, Y), (NLL_M0 + NLL_M1) / 2 - NLL_ENS)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        p = (3 * torch.randn(5, 20, 4, generator=g)).softmax(-1)
        y = torch.randint(0, 4, (20,), generator=g)
        assert ambiguity(p, y) >= 0
    assert close(ambiguity(P[:1].expand(3, 3, 2), Y), 0.0)


def test_entropy_decomposition_by_hand():
    out = entropy_decomposition(P)
    total = (h2(0.7) + h2(0.55) + h2(0.2)) / 3
    expected = (h2(0.8) + h2(0.4) + h2(0.3) + h2(0.6) + h2(0.7) + h2(0.1)) / 6
    assert close(out["total"], total)
    assert close(out["expected"], expected)
    assert close(out["mutual_information"], total - expected)


def test_entropy_decomposition_identities():
    # identical members: no mutual information
    same = entropy_decomposition(P[:1].expand(3, 3, 2))
    assert close(same["mutual_information"], 0.0) and close(same["total"], same["expected"])
    # confident members that disagree completely: expected 0 (0 log 0 = 0), total = MI = log 2
    split = entropy_decomposition(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
    assert close(split["expected"], 0.0)
    assert close(split["total"], log(2)) and close(split["mutual_information"], log(2))
    p = torch.randn(6, 10, 3, generator=torch.Generator().manual_seed(2)).softmax(-1)
    rand = entropy_decomposition(p)
    assert rand["mutual_information"] >= 0
    assert close(rand["total"] - rand["expected"], rand["mutual_information"])


# ------------------------------------------------------------------ summary

def test_size_curve_ends_match_member0_and_full_ensemble():
    p = torch.randn(4, 30, 3, generator=torch.Generator().manual_seed(3)).softmax(-1)
    y = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(4))
    curve = size_curve(p, y)
    assert curve["members"] == [1, 2, 3, 4]
    ens = ensemble_mean(p.double())
    for name, fn in (("accuracy", accuracy), ("nll", nll), ("brier", brier), ("ece", ece)):
        assert len(curve[name]) == 4
        assert curve[name][0] == pytest.approx(float(fn(p[0], y)), abs=1e-6)
        assert curve[name][-1] == pytest.approx(float(fn(ens, y)), abs=1e-12)
        assert curve[name][1] == pytest.approx(float(fn(p[:2].double().mean(0), y)), abs=1e-12)
    assert curve["error"][-1] == pytest.approx(100 * (1 - curve["accuracy"][-1]))


def test_evaluate_probs_by_hand_and_json_able():
    res = evaluate_probs(P, Y, n_bins=5)
    json.dumps(res)  # plain Python values only
    assert res["num_members"] == 2 and res["num_examples"] == 3 and res["num_classes"] == 2
    assert res["accuracy"] == pytest.approx(1.0) and res["error"] == pytest.approx(0.0)
    assert res["nll"] == pytest.approx(NLL_ENS)
    assert res["brier"] == pytest.approx(BRIER_ENS)
    assert res["ece"] == pytest.approx(ECE_ENS)
    assert res["members"]["accuracy"] == pytest.approx([2 / 3, 1.0])
    assert res["members"]["nll"] == pytest.approx([NLL_M0, NLL_M1])
    assert res["members"]["brier"] == pytest.approx([BRIER_M0, BRIER_M1])
    assert res["members"]["ece"] == pytest.approx([ECE_M0, ECE_M1])
    assert res["member_mean"]["accuracy"] == pytest.approx(5 / 6)
    assert res["member_mean"]["error"] == pytest.approx(100 / 6)
    assert res["member_mean"]["nll"] == pytest.approx((NLL_M0 + NLL_M1) / 2)
    div = res["diversity"]
    assert div["disagreement"] == pytest.approx(1 / 3)
    assert div["ambiguity"] == pytest.approx((NLL_M0 + NLL_M1) / 2 - NLL_ENS)
    assert div["mutual_information"] == pytest.approx(div["entropy_total"] - div["entropy_expected"])
    assert res["size_curve"]["members"] == [1, 2]
    assert res["size_curve"]["nll"] == pytest.approx([NLL_M0, NLL_ENS])


def test_evaluate_probs_accepts_float32_and_numpy():
    a = evaluate_probs(P.float(), Y, n_bins=5)
    b = evaluate_probs(P.numpy(), Y.numpy(), n_bins=5)
    assert a["nll"] == pytest.approx(b["nll"], abs=1e-6)
    assert a["ece"] == pytest.approx(ECE_ENS, abs=1e-6)


@pytest.mark.parametrize(
    ("probs", "y", "match"),
    [
        (P[0], Y, r"`probs` must have shape \(M, B, C\), got shape \(3, 2\)"),
        (P, torch.tensor([0, 1]), r"`y` must have shape \(B,\) = \(3,\).*got shape \(2,\)"),
        (P, torch.tensor([0, 2, 1]), r"`y` must hold class indices in \[0, 1\].*got values in \[0, 2\]"),
        (P, torch.tensor([-1, 0, 1]), r"`y` must hold class indices in \[0, 1\].*\[-1, 1\]"),
        (P, Y.float(), r"`y` must be an integer tensor.*float32"),
        (torch.randn(2, 3, 2), Y, r"`probs` must be probabilities.*not logits"),
        (P * float("nan"), Y, r"`probs` must be finite"),
        (P.long(), Y, r"`probs` must be a floating-point tensor"),
        (P[:0], Y, r"`probs` must hold at least one member"),
    ],
)
def test_evaluate_probs_rejects_bad_data(probs, y, match):
    with pytest.raises(DataError, match=match):
        evaluate_probs(probs, y)


def test_metric_functions_reject_bad_arguments():
    with pytest.raises(DataError, match=r"`y` must have shape"):
        accuracy(P, torch.tensor([0, 1, 1, 0]))
    with pytest.raises(DataError, match=r"`probs` must have shape \(B, C\)"):
        reliability(P, Y)
    with pytest.raises(DataError, match=r"`probs` must have shape \(M, B, C\)"):
        disagreement(P[0])
    with pytest.raises(ConfigError, match=r"`n_bins` must be an integer >= 1, got 0"):
        ece(P, Y, n_bins=0)
    with pytest.raises(ConfigError, match=r"`eps` must be a number in \(0, 1\)"):
        nll(P, Y, eps=0)


# ------------------------------------------------------------------ plots

def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_writes_png(tmp_path):
    p = torch.randn(200, 4, generator=torch.Generator().manual_seed(5)).softmax(-1)
    y = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(6))
    out = reliability_diagram(p, y, tmp_path / "sub" / "rel.png", n_bins=10, title="test")
    assert out == tmp_path / "sub" / "rel.png"
    _assert_png(out)


def test_size_curve_plot_and_line_plot_write_png(tmp_path):
    curves = {"Ind": size_curve(P, Y), "other": {"members": [1, 2, 3], "accuracy": [0.5, 0.6, 0.7]}}
    _assert_png(size_curve_plot(curves, tmp_path / "size.png", title="size"))
    _assert_png(size_curve_plot({"Ind": curves["Ind"]}, tmp_path / "size_nll.png", metric="nll"))
    series = {"a": ([1, 10, 100], [3.0, 2.0, 1.5]), "b": (torch.tensor([1, 10, 100]), np.array([2.5, 2.0, 1.0]))}
    out = line_plot(series, tmp_path / "lines.png", "budget", "error (%)", yerr={"a": [0.1, 0.2, 0.1]}, logx=True)
    _assert_png(out)


def test_plots_reject_bad_input_and_leave_pyplot_empty(tmp_path):
    import matplotlib.pyplot as plt

    with pytest.raises(ConfigError, match=r"`metric` must be one of"):
        size_curve_plot({"x": size_curve(P, Y)}, tmp_path / "x.png", metric="f1")
    with pytest.raises(DataError, match=r"`yerr` has labels \['c'\]"):
        line_plot({"a": ([1], [1])}, tmp_path / "x.png", "x", "y", yerr={"c": [1]})
    with pytest.raises(DataError, match=r"equal length, got 2 and 3"):
        line_plot({"a": ([1, 2], [1, 2, 3])}, tmp_path / "x.png", "x", "y")
    assert plt.get_fignums() == []
