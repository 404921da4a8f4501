"""OOD scores and detection, selective prediction and split conformal sets: hand values."""

from __future__ import annotations

import itertools
import math
from math import exp, log

import numpy as np
import pytest
import torch

from ensemblekit.errors import ConfigError, DataError
from ensemblekit.metrics.conformal import (
    CONFORMAL_SCORES,
    class_scores,
    conformal_quantile,
    prediction_sets,
    split_conformal,
)
from ensemblekit.metrics.ood import PROB_SCORES, SCORES, detection_curves, detection_metrics, uncertainty_scores
from ensemblekit.metrics.selective import aurc, augrc, excess_aurc, risk_coverage, selective_summary


def close(actual, expected, tol=1e-12):
    return torch.as_tensor(actual, dtype=torch.float64).allclose(
        torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0
    )


def H(*p: float) -> float:
    """Entropy by hand (natural log)."""
    return -sum(x * log(x) for x in p if x > 0)


# ===================================================================== OOD scores
# 2 members x 2 examples x 3 classes.
#   member 0: [.7 .2 .1]  [.2 .3 .5]
#   member 1: [.5 .3 .2]  [.6 .2 .2]
#   mean:     [.6 .25 .15] [.4 .25 .35]
P = torch.tensor(
    [[[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]], [[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]]], dtype=torch.float64
)
# logits: example 0 -> mean [2, 0, 0]; example 1 -> mean [0, 1, 2]
Z = torch.tensor(
    [[[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]], [[3.0, 0.0, 1.0], [0.0, 2.0, 4.0]]], dtype=torch.float64
)


def test_uncertainty_scores_by_hand():
    s = uncertainty_scores(P, Z)
    assert list(s) == list(SCORES)
    assert close(s["msp"], [-0.6, -0.4])
    h_bar = [H(0.6, 0.25, 0.15), H(0.4, 0.25, 0.35)]
    assert close(s["entropy"], h_bar)
    expected = [(H(0.7, 0.2, 0.1) + H(0.5, 0.3, 0.2)) / 2, (H(0.2, 0.3, 0.5) + H(0.6, 0.2, 0.2)) / 2]
    assert close(s["mi"], [h_bar[0] - expected[0], h_bar[1] - expected[1]])
    assert bool((s["mi"] > 0).all())
    assert close(s["energy"], [-log(exp(2) + 2), -log(1 + exp(1) + exp(2))])
    assert close(s["max_logit"], [-2.0, -2.0])
    assert all(v.dtype == torch.float64 and v.shape == (2,) for v in s.values())


def test_uncertainty_scores_orientation_and_identical_members():
    # identical members: no epistemic uncertainty
    same = torch.tensor([[[0.5, 0.3, 0.2]], [[0.5, 0.3, 0.2]]], dtype=torch.float32)
    assert uncertainty_scores(same, scores=PROB_SCORES)["mi"].tolist() == [0.0]
    # higher = more uncertain: a uniform, disagreeing ensemble beats a confident, agreeing one
    p = torch.tensor([[[0.98, 0.01, 0.01], [1.0, 0.0, 0.0]], [[0.98, 0.01, 0.01], [0.0, 0.0, 1.0]]])
    z = torch.tensor([[[9.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [[9.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    s = uncertainty_scores(p, z)
    for name in SCORES:
        assert s[name][1] > s[name][0], name
    # a single name as a string, and numpy input
    assert list(uncertainty_scores(P.numpy(), scores="entropy")) == ["entropy"]


def test_uncertainty_scores_errors():
    with pytest.raises(ConfigError, match="logits"):
        uncertainty_scores(P)  # the default asks for energy / max_logit
    with pytest.raises(ConfigError, match="logits"):
        uncertainty_scores(P, scores=("msp", "energy"))
    with pytest.raises(ConfigError, match="max_logit"):
        uncertainty_scores(P, Z, scores=("odin",))
    with pytest.raises(ConfigError):
        uncertainty_scores(P, Z, scores=())
    with pytest.raises(DataError, match="shape"):
        uncertainty_scores(P, Z[:, :1])
    with pytest.raises(DataError, match="finite"):
        uncertainty_scores(P, Z.clone().fill_(float("nan")))
    with pytest.raises(DataError):
        uncertainty_scores(P[0], scores=PROB_SCORES)  # (N, C): not members
    with pytest.raises(DataError):
        uncertainty_scores(P * 3, scores=PROB_SCORES)  # not probabilities


# ===================================================================== detection

def test_detection_metrics_extremes():
    s_in, s_out = torch.arange(10.0), torch.arange(10.0) + 100
    perfect = detection_metrics(s_in, s_out)
    assert perfect["auroc"] == 1.0 and perfect["fpr95"] == 0.0
    assert perfect["aupr_in"] == pytest.approx(1.0, abs=1e-12) and perfect["aupr_out"] == pytest.approx(1.0, abs=1e-12)
    reversed_ = detection_metrics(s_out, s_in)
    assert reversed_["auroc"] == 0.0 and reversed_["fpr95"] == 1.0
    tied = detection_metrics(torch.zeros(7), torch.zeros(5))
    assert tied["auroc"] == 0.5
    assert tied["fpr95"] == 1.0  # accepting any in-distribution example accepts all OOD ones


def test_fpr95_by_hand():
    # In-distribution scores 0..99. An example is accepted (called in-distribution) when its
    # score is <= the threshold t. At least 95% = 95 of the 100 must be accepted, and the
    # strictest such threshold is t = 94 (accepting 0..94). OOD scores <= 94 are then
    # accepted: -5, 50.5 and the ties 93.0, 94.0 -> 4 of the 10 OOD examples -> FPR = 0.4.
    # (95 is just above the threshold and rejected.) The ties at 93, 94, 95 make three
    # collinear ROC points, so a curve with "intermediate" points dropped would skip
    # t = 94 and wrongly report 0.5.
    s_in = torch.arange(100.0)
    s_out = torch.tensor([-5.0, 50.5, 93.0, 94.0, 95.0, 99.5, 100.0, 150.0, 200.0, 250.0])
    m = detection_metrics(s_in, s_out)
    assert m["fpr95"] == pytest.approx(0.4, abs=1e-15)
    # AUROC by hand: pairs (out > in) + half the ties, over 100 * 10 pairs.
    #   -5: 0, 50.5: 51, 93: 93 + .5, 94: 94 + .5, 95: 95 + .5, 99.5: 100, then 4 x 100
    wins = 0 + 51 + 93.5 + 94.5 + 95.5 + 100 + 400
    assert m["auroc"] == pytest.approx(wins / 1000, abs=1e-15)


def test_detection_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    s_in = rng.integers(0, 30, size=157).astype(float)  # many ties
    s_out = rng.integers(10, 40, size=83).astype(float)
    m = detection_metrics(torch.from_numpy(s_in), s_out)
    diff = s_out[:, None] - s_in[None, :]
    assert m["auroc"] == pytest.approx((diff > 0).mean() + 0.5 * (diff == 0).mean(), abs=1e-12)
    # fpr95: the strictest threshold accepting >= 95% of in-distribution is their
    # ceil(0.95 * N1)-th smallest score; OOD scores <= it are accepted.
    t = np.sort(s_in)[math.ceil(0.95 * s_in.size) - 1]
    assert m["fpr95"] == pytest.approx((s_out <= t).mean(), abs=1e-12)
    from sklearn.metrics import average_precision_score

    assert m["aupr_in"] == pytest.approx(
        average_precision_score(np.r_[np.ones(157), np.zeros(83)], -np.r_[s_in, s_out]), abs=1e-12
    )
    assert 0 < m["aupr_out"] < 1


def test_detection_curves_and_errors():
    rng = np.random.default_rng(1)
    s_in, s_out = rng.normal(size=1000), rng.normal(1.0, size=700)
    c = detection_curves(s_in, s_out)
    assert 2 <= len(c["fpr"]) == len(c["tpr"]) <= 200
    assert c["fpr"][0] == 0.0 and c["tpr"][0] == 0.0 and c["fpr"][-1] == 1.0 and c["tpr"][-1] == 1.0
    assert np.all(np.diff(c["fpr"]) >= 0) and np.all(np.diff(c["tpr"]) >= 0)
    assert c["auroc"] == detection_metrics(s_in, s_out)["auroc"]
    assert isinstance(c["fpr"], list) and isinstance(c["fpr"][1], float)
    with pytest.raises(DataError, match="score_in"):
        detection_metrics(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(DataError, match="score_out"):
        detection_metrics(torch.tensor([1.0]), torch.tensor([0.0, float("nan")]))
    with pytest.raises(DataError, match="1-D"):
        detection_metrics(torch.zeros(2, 2), torch.ones(3))
    with pytest.raises(ConfigError, match="max_points"):
        detection_curves(s_in, s_out, max_points=1)


# ===================================================================== selective
# N = 10, 3 errors; a perfect ranking puts the 7 correct examples first.
CORRECT = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
CONF_PERFECT = torch.linspace(1.0, 0.1, 10)
AURC_PERFECT = sum((k - 7) / k for k in range(8, 11)) / 10  # risk is 0 for k <= 7
AUGRC_PERFECT = (1 + 2 + 3) / 100  # errors_k / N is 1, 2, 3 tenths for k = 8, 9, 10


def test_risk_coverage_perfect_ranking_by_hand():
    rc = risk_coverage(CONF_PERFECT, CORRECT)
    assert close(rc["coverage"], torch.arange(1, 11, dtype=torch.float64) / 10)
    assert close(rc["risk"], [0] * 7 + [1 / 8, 2 / 9, 3 / 10])
    assert close(rc["generalized_risk"], [0] * 7 + [0.1, 0.2, 0.3])
    assert aurc(CONF_PERFECT, CORRECT) == pytest.approx(AURC_PERFECT, abs=1e-15)
    assert augrc(CONF_PERFECT, CORRECT) == pytest.approx(AUGRC_PERFECT, abs=1e-15)
    assert excess_aurc(CONF_PERFECT, CORRECT) == pytest.approx(0.0, abs=1e-15)
    # the worst ranking: all errors first -> risk 1, 1, 1, 3/4, 3/5, ..., 3/10
    worst = -CONF_PERFECT
    assert aurc(worst, CORRECT) == pytest.approx((3 + sum(3 / k for k in range(4, 11))) / 10, abs=1e-15)
    assert excess_aurc(worst, CORRECT) > 0.3
    assert float(rc["risk"][-1]) == pytest.approx(0.3)  # full coverage = error rate


def test_constant_confidence_is_error_rate():
    rc = risk_coverage(torch.full((10,), 0.7), CORRECT)
    assert close(rc["risk"], [0.3] * 10)
    assert aurc(torch.full((10,), 0.7), CORRECT) == pytest.approx(0.3, abs=1e-15)
    # generalized risk: 0.3 k / N -> mean 0.3 * 11 / 20
    assert augrc(np.full(10, 0.7), CORRECT.numpy()) == pytest.approx(0.3 * 11 / 20, abs=1e-15)


def test_ties_equal_expectation_over_random_order():
    conf = torch.tensor([0.9, 0.5, 0.9, 0.5, 0.5, 0.1, 0.9])
    correct = torch.tensor([1, 0, 0, 1, 0, 1, 1])
    curves = []
    for perm in itertools.permutations(range(7)):
        c = conf[list(perm)]
        if bool((c[:-1] >= c[1:]).all()):  # an order consistent with descending confidence
            err = 1 - correct[list(perm)].double()
            curves.append(err.cumsum(0) / torch.arange(1, 8))
    expected = torch.stack(curves).mean(0)
    assert close(risk_coverage(conf, correct)["risk"], expected)
    # invariant to the input order of tied examples
    shuffled = torch.tensor([6, 0, 2, 1, 4, 3, 5])
    assert close(risk_coverage(conf[shuffled], correct[shuffled])["risk"], expected)


def test_selective_summary_and_errors():
    s = selective_summary(CONF_PERFECT, CORRECT)
    assert s["aurc"] == pytest.approx(AURC_PERFECT) and s["augrc"] == pytest.approx(AUGRC_PERFECT)
    assert s["e_aurc"] == pytest.approx(0.0, abs=1e-15) and s["error_rate"] == pytest.approx(0.3)
    # coverage 0.5 -> k = 5: 0 errors; 0.8 -> k = 8: 1/8; 0.9 -> k = 9: 2/9; 0.95 -> k = 10: 3/10
    assert s["risk@0.5"] == 0.0 and s["risk@0.8"] == pytest.approx(1 / 8)
    assert s["risk@0.9"] == pytest.approx(2 / 9) and s["risk@0.95"] == pytest.approx(3 / 10)
    assert all(isinstance(v, (int, float)) for v in s.values())
    # coverage 0.7 of N = 90 is k = 63 (0.7 * 90 = 63.00000000000001 in floats): the 63
    # most confident are right, the 64th wrong -> risk 0 at 0.7
    conf90, correct90 = torch.linspace(1, 0, 90), torch.arange(90) < 63
    assert selective_summary(conf90, correct90, coverages=(0.7,))["risk@0.7"] == 0.0
    with pytest.raises(ConfigError, match="coverages"):
        selective_summary(CONF_PERFECT, CORRECT, coverages=(0.0,))
    with pytest.raises(DataError, match="same length"):
        aurc(torch.ones(3), torch.ones(4))
    with pytest.raises(DataError, match="1-D"):
        aurc(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(DataError, match="at least one"):
        aurc(torch.ones(0), torch.ones(0))
    with pytest.raises(DataError, match="0/1"):
        aurc(torch.ones(3), torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="finite"):
        augrc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))


# ===================================================================== conformal
# One example, probabilities [.2 .5 .3]; sorted: class 1 (.5, rank 0), class 2 (.3, rank 1),
# class 0 (.2, rank 2). With u = 0.5:
#   thr  = 1 - p                       = [.8, .5, .7]
#   aps  = mass above + u p            : class 1: 0 + .25, class 2: .5 + .15, class 0: .8 + .1
#   raps = aps + lam max(0, rank1 - k) : lam = .1, k_reg = 1 -> penalties 0, .1, .2 for ranks 1, 2, 3
PC = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)


def test_class_scores_by_hand():
    u = torch.tensor([0.5])
    assert close(class_scores(PC, "thr"), [[0.8, 0.5, 0.7]])
    assert close(class_scores(PC, "aps", u=u), [[0.9, 0.25, 0.65]])
    assert close(class_scores(PC, "raps", u=u, lam=0.1, k_reg=1), [[1.1, 0.25, 0.75]])
    assert close(class_scores(PC, "raps", u=u, lam=0.1, k_reg=0), [[1.2, 0.35, 0.85]])
    assert close(class_scores(PC, "aps"), [[1.0, 0.5, 0.8]])  # u = None: non-randomised
    assert close(class_scores(PC, "aps", u=0.0), [[0.8, 0.0, 0.5]])


def test_class_scores_match_a_loop():
    g = torch.Generator().manual_seed(3)
    p = torch.rand(40, 6, generator=g, dtype=torch.float64).pow(3)
    p = p / p.sum(1, keepdim=True)
    u = torch.rand(40, generator=g, dtype=torch.float64)
    got = class_scores(p, "raps", u=u, lam=0.05, k_reg=2)
    for i in range(40):
        order = sorted(range(6), key=lambda c: -float(p[i, c]))
        mass = 0.0
        for r, c in enumerate(order):
            want = mass + float(u[i] * p[i, c]) + 0.05 * max(0, r + 1 - 2)
            assert abs(float(got[i, c]) - want) < 1e-12
            mass += float(p[i, c])


def test_conformal_quantile_by_hand():
    s = torch.arange(1.0, 10.0)  # n = 9
    assert conformal_quantile(s, 0.2) == 8.0  # ceil(10 * 0.8) = 8 -> 8th smallest
    assert conformal_quantile(s[torch.randperm(9)], 0.2) == 8.0
    assert conformal_quantile(s, 0.5) == 5.0  # ceil(10 * 0.5) = 5
    assert conformal_quantile(s, 0.1) == 9.0  # ceil(10 * 0.9) = 9
    assert conformal_quantile(s, 0.7) == 3.0  # 10 * (1 - 0.7) = 3.0000000000000004 in floats: still 3
    assert conformal_quantile(s, 0.05) == math.inf  # ceil(9.5) = 10 > 9
    assert conformal_quantile(torch.arange(1.0, 5.0), 0.1) == math.inf  # n = 4 < 1/alpha - 1
    assert prediction_sets(PC, math.inf, "aps").all()
    assert prediction_sets(PC, 0.75, "thr").tolist() == [[False, True, True]]


def _synthetic(reps: int, n: int, c: int = 10, seed: int = 0):
    """``reps`` independent draws of n (probs, label) pairs: a Dirichlet "model" whose
    labels come from a slightly different (tempered, smoothed) distribution."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.3), size=(reps, n))
    q = p**0.7
    q = 0.9 * q / q.sum(-1, keepdims=True) + 0.1 / c
    cdf = q.cumsum(-1)
    y = (rng.random((reps, n, 1)) > cdf).sum(-1).clip(max=c - 1)
    return torch.from_numpy(p), torch.from_numpy(y)


def test_coverage_on_exchangeable_data():
    reps, n = 200, 500
    p, y = _synthetic(reps, 2 * n)
    for score in CONFORMAL_SCORES:
        cov = [
            split_conformal(p[r, :n], y[r, :n], p[r, n:], y[r, n:], alpha=0.1, score=score, seed=r)["coverage"]
            for r in range(reps)
        ]
        mean = float(np.mean(cov))
        # the exact expectation is ceil(501 * 0.9) / 501 = 0.9002; the sd of the mean is ~0.0013
        assert abs(mean - 0.9) < 0.02, (score, mean)
        assert abs(mean - 451 / 501) < 0.006, (score, mean)


def test_split_conformal_result_and_set_sizes():
    p, y = _synthetic(1, 4000, seed=1)
    p, y = p[0], y[0]
    args = (p[:2000], y[:2000], p[2000:], y[2000:])
    res = split_conformal(*args, alpha=0.1, score="aps")
    assert res["n_cal"] == 2000 and res["n_test"] == 2000 and res["score"] == "aps" and res["alpha"] == 0.1
    assert len(res["size_histogram"]) == 11 and sum(res["size_histogram"]) == 2000
    sizes = np.repeat(np.arange(11), res["size_histogram"])
    assert res["mean_size"] == pytest.approx(sizes.mean()) and res["median_size"] == float(np.median(sizes))
    assert res["empty_fraction"] == pytest.approx(res["size_histogram"][0] / 2000)
    by_size = [(c, m) for c, m in zip(res["coverage_by_size"], res["size_histogram"]) if m]
    assert res["coverage"] == pytest.approx(sum(c * m for c, m in by_size) / 2000)
    assert res == split_conformal(*args, alpha=0.1, score="aps")  # reproducible from the seed
    for score in CONFORMAL_SCORES:
        loose = split_conformal(*args, alpha=0.5, score=score)["mean_size"]
        strict = split_conformal(*args, alpha=0.05, score=score)["mean_size"]
        assert loose < strict, score
    aps = split_conformal(*args, alpha=0.1, score="aps")["mean_size"]
    raps = split_conformal(*args, alpha=0.1, score="raps", lam=1.0, k_reg=1)["mean_size"]
    assert raps <= aps + 0.2  # a generic model: the penalty changes little
    # the threshold is the calibration scores' conformal quantile
    u_cal = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cal = class_scores(p[:2000], "aps", u=u_cal).gather(1, y[:2000].view(-1, 1)).squeeze(1)
    assert res["qhat"] == conformal_quantile(cal, 0.1)


def test_conformal_errors():
    p, y = _synthetic(1, 20)
    args = (p[0, :10], y[0, :10], p[0, 10:], y[0, 10:])
    for alpha in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="alpha"):
            split_conformal(*args, alpha=alpha)
        with pytest.raises(ConfigError, match="alpha"):
            conformal_quantile(torch.ones(3), alpha)
    with pytest.raises(ConfigError, match="thr"):
        split_conformal(*args, score="lac")
    with pytest.raises(ConfigError, match="score"):
        class_scores(PC, "softmax")
    with pytest.raises(ConfigError, match="lam"):
        class_scores(PC, "raps", lam=-0.1)
    with pytest.raises(ConfigError, match="k_reg"):
        split_conformal(*args, score="raps", k_reg=-1)
    with pytest.raises(DataError, match="probs"):
        class_scores(PC * 2, "thr")
    with pytest.raises(DataError):
        class_scores(PC[None], "thr")  # (M, N, C): pass the ensemble mean
    with pytest.raises(DataError, match="u"):
        class_scores(PC, "aps", u=torch.tensor([1.5]))
    with pytest.raises(DataError, match="y_test"):
        split_conformal(p[0, :10], y[0, :10], p[0, 10:], y[0, 10:] + 10)
    with pytest.raises(DataError, match="classes"):
        split_conformal(p[0, :10], y[0, :10], PC, torch.tensor([0]))
    with pytest.raises(DataError, match="cal_scores"):
        conformal_quantile(torch.tensor([]), 0.1)
    with pytest.raises(ConfigError, match="qhat"):
        prediction_sets(PC, float("nan"), "thr")


def _half_flat(n: int, c: int = 10, seed: int = 0):
    """Half the examples confident (top class .91, the rest .01 each), half flat (top .28,
    the rest .08 each); the label is the top class with probability .96, else uniform
    among the other nine. Class order is shuffled per example."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.arange(n) % 2 == 1
    top = torch.where(flat, 0.28, 0.91).to(torch.float64)
    sorted_p = torch.cat([top[:, None], ((1 - top) / (c - 1))[:, None].expand(n, c - 1)], 1)
    perm = torch.argsort(torch.rand(n, c, generator=g), dim=1)
    p = torch.empty_like(sorted_p).scatter_(1, perm, sorted_p)
    rank = torch.where(torch.rand(n, generator=g) < 0.96, 0, torch.randint(1, c, (n,), generator=g))
    return p, perm.gather(1, rank[:, None]).squeeze(1)


def test_raps_with_a_large_penalty_gives_smaller_sets_than_aps():
    # RAPS with lam = 1: the true label is the top class for ~96% > 90% of the calibration
    # examples, whose scores u * p_top are < 1, while any other rank scores >= 1 + p_top.
    # So qhat < 1 and a test set holds at most its top class: mean size <= 1.
    # APS: ~4% of calibration labels are not top (scores > p_top), so qhat sits near the
    # upper tail of u * p_top, about .77 here. A flat example's class at rank k >= 2 scores
    # .28 + .08 (k - 2) + .08 u, so ranks 1..7 (<= .76) are always in its set: the flat
    # half alone makes the mean size > 3.5, far above RAPS's <= 1.
    p, y = _half_flat(4000)
    args = (p[:2000], y[:2000], p[2000:], y[2000:])
    aps = split_conformal(*args, alpha=0.1, score="aps")
    raps = split_conformal(*args, alpha=0.1, score="raps", lam=1.0, k_reg=1)
    assert raps["qhat"] < 1 and raps["mean_size"] <= 1.0
    assert aps["mean_size"] > 2.0
    assert raps["mean_size"] <= aps["mean_size"]
    assert raps["coverage"] >= 0.87 and aps["coverage"] >= 0.87
