"""Regression uncertainty metrics: normalised split-conformal intervals and selective regression."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblekit.errors import ConfigError, DataError
from ensemblekit.metrics.conformal_regression import normalized_conformal, normalized_scores
from ensemblekit.metrics.selective_regression import (oracle_risk_coverage, regression_risk_coverage,
                                                      selective_regression_summary, squared_errors)

# --------------------------------------------------------------------------- conformal


def test_the_quantile_is_the_finite_sample_rank_of_the_normalised_scores_by_hand():
    mu_v, sd_v, y_v = torch.zeros(4), torch.tensor([1.0, 2.0, 1.0, 4.0]), torch.tensor([1.0, -1.0, 3.0, 2.0])
    assert normalized_scores(mu_v, sd_v, y_v).tolist() == [1.0, 0.5, 3.0, 0.5]
    mu_t, sd_t, y_t = torch.tensor([0.0, 10.0]), torch.tensor([1.0, 0.5]), torch.tensor([2.5, 11.6])
    # alpha 0.2: ceil(5 * 0.8) = 4th smallest of (0.5, 0.5, 1, 3) = 3; intervals [-3, 3] and [8.5, 11.5]
    r = normalized_conformal(mu_v, sd_v, y_v, mu_t, sd_t, y_t, alpha=0.2)
    assert r["qhat"] == 3.0 and r["level"] == 1.0 and r["coverage"] == 0.5
    assert r["mean_width"] == pytest.approx((6.0 + 3.0) / 2) and r["n_cal"] == 4 and r["n_test"] == 2
    # alpha 0.4: ceil(5 * 0.6) = 3rd smallest = 1; intervals [-1, 1] and [9.5, 10.5] cover neither
    r = normalized_conformal(mu_v, sd_v, y_v, mu_t, sd_t, y_t, alpha=0.4)
    assert r["qhat"] == 1.0 and r["level"] == 0.75 and r["coverage"] == 0.0
    # alpha 0.1 needs the 5th smallest of 4: unbounded intervals, which cover everything
    r = normalized_conformal(mu_v, sd_v, y_v, mu_t, sd_t, y_t, alpha=0.1)
    assert r["qhat"] == math.inf and r["coverage"] == 1.0 and r["mean_width"] == math.inf


def test_multi_output_intervals_take_one_quantile_per_output():
    mu = torch.zeros(4, 2)
    sd = torch.ones(4, 2)
    y = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    r = normalized_conformal(mu, sd, y, torch.zeros(2, 2), torch.ones(2, 2), torch.tensor([[2.5, 25.0], [3.5, 45.0]]), alpha=0.4)
    assert r["qhat"] == [3.0, 30.0]  # the 3rd smallest of each output's scores
    assert r["coverage_by_output"] == [0.5, 0.5] and r["coverage"] == 0.5
    assert r["mean_width_by_output"] == [6.0, 60.0] and r["mean_width"] == 33.0


def test_conformal_refuses_bad_inputs_in_one_line():
    ok = torch.ones(3)
    with pytest.raises(DataError, match="`val_std` must be finite and > 0"):
        normalized_conformal(ok, torch.tensor([1.0, 0.0, 1.0]), ok, ok, ok, ok)
    with pytest.raises(DataError, match="`test_std` must have the shape of `test_mean`"):
        normalized_conformal(ok, ok, ok, ok, torch.ones(2), ok)
    with pytest.raises(DataError, match="same outputs"):
        normalized_conformal(ok, ok, ok, torch.ones(3, 2), torch.ones(3, 2), torch.ones(3, 2))
    with pytest.raises(ConfigError, match="alpha"):
        normalized_conformal(ok, ok, ok, ok, ok, ok, alpha=1.5)


def _heteroscedastic(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A known heteroscedastic problem: y = sin(3x) + (0.1 + |x|) eps; the model has the right mean and
    a std that is half the true one (over-confident), so its own intervals under-cover."""
    x = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    true_sd = 0.1 + x.abs()
    y = torch.sin(3 * x) + true_sd * torch.randn(n, generator=g, dtype=torch.float64)
    return x, torch.sin(3 * x), 0.5 * true_sd, y


def _coverages(n_cal: int, reps: int = 200, n_test: int = 1000, alpha: float = 0.1) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(n_cal)
    cov, high, low, raw = [], [], [], []
    for _ in range(reps):
        _, mu_c, sd_c, y_c = _heteroscedastic(g, n_cal)
        x, mu, sd, y = _heteroscedastic(g, n_test)
        r = normalized_conformal(mu_c, sd_c, y_c, mu, sd, y, alpha=alpha)
        cov.append(r["coverage"])
        inside = ((y - mu).abs() <= r["qhat"] * sd).double()
        high.append(float(inside[x.abs() > 1].mean()))
        low.append(float(inside[x.abs() <= 1].mean()))
        raw.append(float(((y - mu).abs() <= 1.6449 * sd).double().mean()))  # the model's own 90% interval
    return torch.tensor(cov, dtype=torch.float64), {"high": sum(high) / reps, "low": sum(low) / reps, "raw": sum(raw) / reps}


def test_normalised_conformal_coverage_is_within_two_points_of_the_target_over_200_repetitions():
    cov, parts = _coverages(n_cal=500)
    assert abs(float(cov.mean()) - 0.9) <= 0.02
    assert float(cov.mean()) >= 0.9 - 3 * float(cov.std()) / math.sqrt(len(cov))  # >= 1 - alpha up to its standard error
    # the normalised score adapts the width: noisy and quiet halves of the inputs are both covered
    assert abs(parts["high"] - 0.9) <= 0.02 and abs(parts["low"] - 0.9) <= 0.02
    assert parts["raw"] < 0.7  # while the over-confident model's own interval is far below 90%


def test_small_calibration_sets_keep_the_finite_sample_guarantee_on_average():
    # n = 28, alpha = 0.1: the 27th smallest of 28 scores, expected coverage 27/29 = 0.931 >= 0.9
    cov, _ = _coverages(n_cal=28)
    assert float(cov.mean()) >= 0.9
    assert abs(float(cov.mean()) - 27 / 29) <= 0.015
    assert float(cov.mean()) <= 0.9 + 1 / 29 + 0.01  # and not much above 1 - alpha + 1/(n+1)


# --------------------------------------------------------------------------- selective


def test_the_mse_coverage_curve_by_hand_ties_in_expectation_and_the_oracle():
    u, e = torch.tensor([0.1, 0.5, 0.3]), torch.tensor([1.0, 9.0, 4.0])
    rc = regression_risk_coverage(u, e)
    assert rc["coverage"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rc["risk"].tolist() == pytest.approx([1.0, 2.5, 14 / 3])
    worst = regression_risk_coverage(-u, e)["risk"].tolist()
    assert worst == pytest.approx([9.0, 6.5, 14 / 3])
    assert oracle_risk_coverage(e)["risk"].tolist() == pytest.approx([1.0, 2.5, 14 / 3])
    assert regression_risk_coverage(torch.ones(3), e)["risk"].tolist() == pytest.approx([14 / 3] * 3)  # all tied
    assert squared_errors(torch.zeros(2, 2), torch.tensor([[1.0, 3.0], [2.0, 0.0]])).tolist() == [5.0, 2.0]
    with pytest.raises(DataError, match="`errors` must be finite and >= 0"):
        regression_risk_coverage(u, -e)


def test_selective_risk_falls_when_the_predicted_std_tracks_the_error():
    g = torch.Generator().manual_seed(0)
    sd = torch.rand(2000, generator=g, dtype=torch.float64) * 2 + 0.05
    mu = torch.zeros(2000, dtype=torch.float64)
    y = sd * torch.randn(2000, generator=g, dtype=torch.float64)
    s = selective_regression_summary(sd, mu, y)
    assert s["risk"] == "mse" and s["n"] == 2000
    assert s["rmse@0.5"] < s["rmse@0.8"] < s["rmse@0.9"] < s["rmse@0.95"] < s["rmse"]
    assert s["mse"] == pytest.approx(float(y.square().mean())) and s["rmse"] == pytest.approx(math.sqrt(s["mse"]))
    assert s["oracle_aurc"] < s["aurc"] < 0.6 * s["random_aurc"] and s["e_aurc"] == pytest.approx(s["aurc"] - s["oracle_aurc"])
    curve = regression_risk_coverage(sd, squared_errors(mu, y))["risk"][99::100]  # from coverage 5% on
    assert bool((curve[1:] >= curve[:-1]).all())  # risk rises with coverage: falls as the model abstains
    flipped = selective_regression_summary(-sd, mu, y)
    assert flipped["aurc"] > flipped["random_aurc"] > s["aurc"]
    with pytest.raises(ConfigError, match="coverages"):
        selective_regression_summary(sd, mu, y, coverages=(0.0,))
