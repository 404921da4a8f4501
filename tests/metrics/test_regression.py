"""The Gaussian predictive and the regression metrics against values computed by hand, numerical
integrals, scipy.stats.norm and samples from known distributions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ensemblekit.errors import ConfigError, DataError
from ensemblekit.metrics.predictive import Categorical, Gaussian
from ensemblekit.metrics.regression import (crps_gaussian, crps_mixture, gaussian_nll, mae, mean_spread,
                                            mixture_log_prob, mixture_nll, r2, rmse, variance_decomposition)
from ensemblekit.metrics.regression_calibration import (coverage_width, fit_variance_scale, mpiw, picp,
                                                        quantile_calibration, scale_variance)
from ensemblekit.metrics.regression_summary import evaluate_gaussian, gaussian_size_curve

norm = pytest.importorskip("scipy.stats").norm

# The running example: two members at one example, N(0, 1) and N(2, 4), target y = 1.
TWO = Gaussian(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [4.0]]))
Y1 = torch.tensor([1.0])
# densities at y = 1: N(1; 0, 1) = exp(-1/2)/sqrt(2 pi); N(1; 2, 4) = exp(-1/8)/sqrt(8 pi)
DENS0 = math.exp(-0.5) / math.sqrt(2 * math.pi)
DENS1 = math.exp(-1 / 8) / math.sqrt(8 * math.pi)


def _random(M: int, N: int, D: int | None = None, seed: int = 0, spread: float = 1.0) -> Gaussian:
    g = torch.Generator().manual_seed(seed)
    shape = (M, N) if D is None else (M, N, D)
    return Gaussian(spread * torch.randn(shape, generator=g, dtype=torch.float64),
                    0.2 + torch.rand(shape, generator=g, dtype=torch.float64))


def _sample(pd: Gaussian, seed: int, var_factor: float = 1.0) -> torch.Tensor:
    """One target per example drawn from the mixture (a uniform member, then its Gaussian)."""
    g = torch.Generator().manual_seed(seed)
    n = torch.arange(pd.num_examples)
    m = torch.randint(0, pd.num_members, (pd.num_examples,), generator=g)
    mu, var = pd.mean[m, n].double(), pd.var[m, n].double()
    return mu + (var_factor * var).sqrt() * torch.randn(mu.shape, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- the predictive

def test_variance_decomposition_on_hand_numbers():
    # three members at one example: means 0, 1, 5 (mean 2), variances 1, 2, 3
    pd = Gaussian(torch.tensor([[0.0], [1.0], [5.0]]), torch.tensor([[1.0], [2.0], [3.0]]))
    aleatoric, epistemic = 2.0, (4 + 1 + 9) / 3  # population variance of the means: divided by M
    mu, total = pd.pooled()
    assert mu.item() == pytest.approx(2.0, abs=1e-12)
    assert pd.aleatoric().item() == pytest.approx(aleatoric, abs=1e-12)
    assert pd.epistemic().item() == pytest.approx(epistemic, abs=1e-12)
    assert total.item() == pytest.approx(aleatoric + epistemic, abs=1e-12)  # law of total variance
    dec = variance_decomposition(pd)
    assert float(dec["total"]) == pytest.approx(float(dec["aleatoric"] + dec["epistemic"]), abs=1e-12)
    assert float(dec["epistemic_share"]) == pytest.approx(epistemic / (aleatoric + epistemic), abs=1e-12)
    assert float(mean_spread(pd)) == pytest.approx(math.sqrt(epistemic), abs=1e-12)
    sc = pd.scores(["std", "aleatoric_std", "epistemic_std", "var"])
    assert sc["std"].item() == pytest.approx(math.sqrt(aleatoric + epistemic), abs=1e-12)
    assert sc["aleatoric_std"].item() == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert sc["epistemic_std"].item() == pytest.approx(math.sqrt(epistemic), abs=1e-12)
    assert sc["var"].item() == pytest.approx(aleatoric + epistemic, abs=1e-12)
    # two outputs: the stds are summed over D (output 2 is output 1 scaled by 2: stds double)
    pd2 = Gaussian(torch.cat([pd.mean, 2 * pd.mean], 1).unsqueeze(1), torch.cat([pd.var, 4 * pd.var], 1).unsqueeze(1))
    assert pd2.scores("epistemic_std")["epistemic_std"].item() == pytest.approx(3 * math.sqrt(epistemic), abs=1e-12)
    assert pd2.scores("var")["var"].item() == pytest.approx(5 * (aleatoric + epistemic), abs=1e-12)


def test_prefix_members_mean_of_and_kind():
    pd = _random(3, 4)
    assert (pd.kind, pd.num_members, pd.num_examples, pd.num_outputs) == ("gaussian", 3, 4, 1)
    assert Categorical.kind == "categorical"
    assert torch.equal(pd.prefix(2).mean, pd.mean[:2]) and torch.equal(pd.prefix(2).var, pd.var[:2])
    sub = pd.members([2, 0])
    assert torch.equal(sub.mean, pd.mean[[2, 0]]) and torch.equal(sub.var, pd.var[[2, 0]])
    other = _random(3, 4, seed=1)
    avg = Gaussian.mean_of([pd, other])
    assert torch.allclose(avg.mean, (pd.mean + other.mean) / 2) and torch.allclose(avg.var, (pd.var + other.var) / 2)
    assert Gaussian.mean_of([pd]) is pd
    with pytest.raises(ConfigError, match="`k` must be an integer in \\[1, 3\\]"):
        pd.prefix(0)
    with pytest.raises(DataError, match="share one shape"):
        Gaussian.mean_of([pd, _random(3, 5)])


def test_mixture_interval_bounds_have_the_tail_masses():
    pd = _random(4, 300, seed=3, spread=3.0)  # well separated members: a multimodal mixture
    for level in (0.5, 0.9, 0.95, 0.99):
        lo, hi = pd.interval(level)
        assert torch.allclose(pd.cdf(lo), torch.full_like(lo, (1 - level) / 2), atol=1e-12, rtol=0)
        assert torch.allclose(pd.cdf(hi), torch.full_like(hi, (1 + level) / 2), atol=1e-12, rtol=0)
    # the mixture CDF is the mean of the members' normal CDFs (scipy)
    y = torch.linspace(-5, 5, 300, dtype=torch.float64)
    ref = norm.cdf(y.numpy(), pd.mean.numpy(), np.sqrt(pd.var.numpy())).mean(0)
    np.testing.assert_allclose(pd.cdf(y).numpy(), ref, atol=1e-14)
    # the running example, against an independent bisection in numpy
    lo, hi = TWO.interval(0.9)
    F = lambda x: 0.5 * (norm.cdf(x, 0, 1) + norm.cdf(x, 2, 2))  # noqa: E731
    grid = np.linspace(-10, 12, 2_000_001)
    assert lo.item() == pytest.approx(grid[np.searchsorted(F(grid), 0.05)], abs=2e-5)
    assert hi.item() == pytest.approx(grid[np.searchsorted(F(grid), 0.95)], abs=2e-5)
    # one member: the Gaussian's own quantiles; moment-matched: the pooled Gaussian's
    one = Gaussian(torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[4.0]], dtype=torch.float64))
    assert one.interval(0.9)[1].item() == pytest.approx(norm.ppf(0.95, 1, 2), abs=1e-12)
    mm_lo, mm_hi = TWO.moment_matched_interval(0.9)
    assert (mm_lo.item(), mm_hi.item()) == pytest.approx(norm.interval(0.9, 1.0, math.sqrt(3.5)), abs=1e-12)
    with pytest.raises(ConfigError, match="`level` must be a number in \\(0, 1\\)"):
        pd.interval(1.0)


# --------------------------------------------------------------------------- scoring rules

def test_mixture_nll_of_two_components_by_hand():
    expected = -math.log(0.5 * (DENS0 + DENS1))  # = 1.5654...
    assert float(mixture_nll(TWO, Y1)) == pytest.approx(expected, abs=1e-12)
    assert 0.5 * (norm.pdf(1, 0, 1) + norm.pdf(1, 2, 2)) == pytest.approx(0.5 * (DENS0 + DENS1), abs=1e-15)
    # not the moment-matched Gaussian N(1, 3.5): that one would give 0.5 log(2 pi 3.5)
    mu, var = TWO.pooled()
    assert float(gaussian_nll(mu, var, Y1)) == pytest.approx(0.5 * math.log(2 * math.pi * 3.5), abs=1e-12)
    assert abs(float(mixture_nll(TWO, Y1)) - 0.5 * math.log(2 * math.pi * 3.5)) > 0.01
    # members' NLL: 0.5 (log(2 pi var) + (y - mu)^2 / var)
    members = gaussian_nll(TWO.mean, TWO.var, Y1)
    assert members.tolist() == pytest.approx([-math.log(DENS0), -math.log(DENS1)], abs=1e-12)
    # a target far in the tail: both densities underflow, logsumexp keeps it exact
    far = torch.tensor([1000.0])
    lp = [-0.5 * (math.log(2 * math.pi) + 1000.0**2), -0.5 * (math.log(8 * math.pi) + 998.0**2 / 4)]
    assert float(mixture_nll(TWO, far)) == pytest.approx(-(max(lp) + math.log1p(math.exp(min(lp) - max(lp))) - math.log(2)), rel=1e-12)
    # per example, with reduction="none"
    pd, y = _random(3, 6), torch.linspace(-1, 1, 6, dtype=torch.float64)
    per = mixture_nll(pd, y, reduction="none")
    assert per.shape == (6,) and float(per.mean()) == pytest.approx(float(mixture_nll(pd, y)), abs=1e-12)
    assert torch.allclose(-per, mixture_log_prob(pd, y))


def test_multi_output_sums_the_log_likelihoods_and_crps_over_outputs():
    pd, g = _random(1, 5, D=3, seed=4), torch.Generator().manual_seed(5)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    per_output = sum(float(gaussian_nll(pd.mean[..., d], pd.var[..., d], y[:, d])) for d in range(3))
    assert float(mixture_nll(pd, y)) == pytest.approx(per_output, abs=1e-12)  # one member: its diagonal Gaussian
    assert float(gaussian_nll(pd.mean, pd.var, y)) == pytest.approx(per_output, abs=1e-12)
    pd3 = _random(3, 5, D=2, seed=6)
    y2 = y[:, :2]
    # joint NLL: log-densities summed over D inside the mixture
    ref = np.log(np.mean(np.prod(norm.pdf(y2.numpy(), pd3.mean.numpy(), np.sqrt(pd3.var.numpy())), -1), 0))
    assert float(mixture_nll(pd3, y2)) == pytest.approx(-ref.mean(), abs=1e-12)
    marginal = sum(float(crps_mixture(Gaussian(pd3.mean[..., d], pd3.var[..., d]), y2[:, d])) for d in range(2))
    assert float(crps_mixture(pd3, y2)) == pytest.approx(marginal, abs=1e-12)


def test_crps_gaussian_closed_form_at_hand_points():
    one = torch.tensor([1.0], dtype=torch.float64)
    assert float(crps_gaussian(torch.zeros(1), one, torch.zeros(1))) == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi), abs=1e-14)
    # mu = 1, sigma = 2, y = 0: z = -1/2; s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]
    z = -0.5
    hand = 2 * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    assert float(crps_gaussian(one, 4 * one, torch.zeros(1))) == pytest.approx(hand, abs=1e-14)
    # one-member mixture = the Gaussian; members' CRPS along the leading axis
    assert float(crps_mixture(Gaussian(one.view(1, 1), 4 * one.view(1, 1)), torch.zeros(1))) == pytest.approx(hand, abs=1e-14)
    assert crps_gaussian(TWO.mean, TWO.var, Y1).shape == (2,)


def _crps_integral(cdf, y: float) -> float:
    """int (F(x) - 1[x >= y])^2 dx by the trapezoid rule on each side of the step at y (so the jump
    of the integrand sits on a grid end, not inside a cell)."""
    left, right = np.linspace(y - 60.0, y, 1_000_001), np.linspace(y, y + 60.0, 1_000_001)
    return float(np.trapezoid(cdf(left) ** 2, left) + np.trapezoid((1 - cdf(right)) ** 2, right))


def test_crps_mixture_equals_the_integral_of_the_squared_cdf_gap():
    numeric = _crps_integral(lambda x: 0.5 * (norm.cdf(x, 0, 1) + norm.cdf(x, 2, 2)), 1.0)
    assert float(crps_mixture(TWO, Y1)) == pytest.approx(numeric, abs=1e-8)
    # a 4-member mixture at a few targets
    pd = _random(4, 3, seed=7, spread=2.0)
    y = torch.tensor([-1.0, 0.3, 2.5], dtype=torch.float64)
    crps = crps_mixture(pd, y, reduction="none")
    for n in range(3):
        mu, sd = pd.mean[:, n].numpy(), np.sqrt(pd.var[:, n].numpy())
        numeric = _crps_integral(lambda x: norm.cdf(x[:, None], mu, sd).mean(1), y[n].item())
        assert crps[n].item() == pytest.approx(numeric, abs=1e-8)
    # pooling never hurts the CRPS (convexity) nor the log score (Jensen)
    y = _sample(pd, seed=8)
    assert float(crps_mixture(pd, y)) <= float(crps_gaussian(pd.mean, pd.var, y).mean())
    assert float(mixture_nll(pd, y)) <= float(gaussian_nll(pd.mean, pd.var, y).mean())


def test_point_metrics_by_hand():
    # two members' means per example: (1, 3) and (2, 6): the ensemble's means 2 and 4; targets 1 and 5
    pd = Gaussian(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), torch.ones(2, 2))
    y = torch.tensor([1.0, 5.0])
    assert float(rmse(pd, y)) == pytest.approx(1.0)  # errors 1, -1
    assert float(mae(pd, y)) == pytest.approx(1.0)
    assert float(r2(pd, y)) == pytest.approx(1 - 2 / 8)  # ss_tot = 4 + 4
    assert rmse(pd.mean, y).tolist() == pytest.approx([math.sqrt(9 / 2), math.sqrt(5 / 2)])  # members
    assert math.isnan(float(r2(pd, torch.tensor([2.0, 2.0]))))  # constant targets: no R²


# --------------------------------------------------------------------------- calibration

def test_picp_of_samples_from_a_known_gaussian():
    g = torch.Generator().manual_seed(0)
    N = 200_000
    mu = torch.randn(N, generator=g, dtype=torch.float64)
    sigma = 0.5 + torch.rand(N, generator=g, dtype=torch.float64)
    y = mu + sigma * torch.randn(N, generator=g, dtype=torch.float64)
    pd = Gaussian(mu.expand(3, N), sigma.square().expand(3, N))  # 3 identical members: the mixture is the Gaussian
    cov = picp(pd, y, (0.5, 0.9, 0.95))
    # binomial std at 90%: sqrt(.9 * .1 / 2e5) = 6.7e-4
    assert cov.tolist() == pytest.approx([0.5, 0.9, 0.95], abs=0.004)
    width = mpiw(pd, 0.9)
    assert float(width) == pytest.approx(2 * norm.ppf(0.95) * float(sigma.mean()), rel=1e-10)
    both = coverage_width(pd, y, 0.9)
    assert float(both["picp"]) == float(cov[1]) and float(both["mpiw"]) == float(width)


def test_quantile_calibration_error_near_zero_when_calibrated_positive_when_over_confident():
    pd = _random(3, 40_000, seed=9, spread=0.5)  # members' noise dominates their disagreement
    y = _sample(pd, seed=10)
    calibrated = quantile_calibration(pd, y)
    assert calibrated["levels"].shape == calibrated["observed"].shape == (99,)
    assert float(calibrated["error"]) < 0.005  # measured 0.0016 (sampling noise only)
    over = quantile_calibration(scale_variance(pd, 0.25), y)  # stds halved: over-confident (measured 0.072)
    assert float(over["error"]) > 0.05 and float(over["squared_error"]) > 10 * float(calibrated["squared_error"])
    # over-confident: the tails hold too much, observed(0.05) > 0.05 and observed(0.95) < 0.95
    assert float(over["observed"][4]) > 0.1 and float(over["observed"][94]) < 0.9
    # observed frequencies on a hand example: PIT values of N(0, 1) at y = -1, 0, 2
    one = Gaussian(torch.zeros(1, 3), torch.ones(1, 3))
    qc = quantile_calibration(one, torch.tensor([-1.0, 0.0, 2.0]), levels=[0.1, 0.5, 0.9])
    # Phi(-1) = .159, Phi(0) = .5, Phi(2) = .977: <= .1: none; <= .5: two; <= .9: two
    assert qc["observed"].tolist() == pytest.approx([0.0, 2 / 3, 2 / 3])
    assert float(qc["error"]) == pytest.approx((0.1 + 1 / 6 + (0.9 - 2 / 3)) / 3)


def test_fit_variance_scale_recovers_a_known_scale():
    pd = _random(2, 20_000, seed=11, spread=2.0)
    y = _sample(pd, seed=12, var_factor=4.0)  # stds twice the predicted ones: variances 4x
    c = fit_variance_scale(pd, y)
    assert c == pytest.approx(4.0, rel=0.04)
    assert float(mixture_nll(scale_variance(pd, c), y)) < float(mixture_nll(scale_variance(pd, 4.0 * 1.2), y))
    assert float(mixture_nll(scale_variance(pd, c), y)) < float(mixture_nll(pd, y))
    # one member: the closed form, the mean squared z-score
    one = pd.prefix(1)
    z2 = float(((y - one.mean[0]).square() / one.var[0]).mean())
    assert fit_variance_scale(one, y) == pytest.approx(z2, rel=1e-8)
    assert torch.equal(scale_variance(pd, 2.0).var, pd.var * 2.0)
    with pytest.raises(ConfigError, match="`c` must be a finite number > 0"):
        scale_variance(pd, 0.0)
    with pytest.raises(ConfigError, match="`bounds`"):
        fit_variance_scale(pd, y, bounds=(1.0, 0.5))


# --------------------------------------------------------------------------- summary

def test_evaluate_gaussian_size_curve_last_entry_equals_the_full_ensemble():
    pd = _random(4, 500, seed=13, spread=1.0)
    y = _sample(pd, seed=14, var_factor=1.5)
    res = evaluate_gaussian(pd, y)
    json.dumps(res, allow_nan=False)  # JSON-able, plain numbers
    curve = res["size_curve"]
    assert curve["members"] == [1, 2, 3, 4] and (res["num_members"], res["num_examples"], res["num_outputs"]) == (4, 500, 1)
    full = {"rmse": float(rmse(pd, y)), "mae": float(mae(pd, y)), "r2": float(r2(pd, y)),
            "nll": float(mixture_nll(pd, y)), "crps": float(crps_mixture(pd, y)),
            "quantile_calibration_error": float(quantile_calibration(pd, y)["error"])}
    cw = coverage_width(pd, y, (0.5, 0.9, 0.95))
    for name, value in full.items():
        assert res[name] == value and curve[name][-1] == value, name  # exactly
    for i, level in enumerate(("0.5", "0.9", "0.95")):
        assert res["picp"][level] == curve["picp"][level][-1] == float(cw["picp"][i])
        assert res["mpiw"][level] == curve["mpiw"][level][-1] == float(cw["mpiw"][i])
    # the first entry is member 0 alone
    assert curve["nll"][0] == pytest.approx(res["members"]["nll"][0], abs=1e-12)
    assert curve["crps"][0] == pytest.approx(res["members"]["crps"][0], abs=1e-12)
    assert res["member_mean"]["rmse"] == pytest.approx(float(np.mean(res["members"]["rmse"])))
    div = res["diversity"]
    assert div["total"] == pytest.approx(div["aleatoric"] + div["epistemic"], abs=1e-12)
    assert div["nll_gain"] >= 0 and div["crps_gain"] >= 0
    assert div["nll_gain"] == pytest.approx(res["member_mean"]["nll"] - res["nll"], abs=1e-12)
    assert gaussian_size_curve(pd, y) == curve
    # a (mean, var) pair works as the predictive
    assert evaluate_gaussian((pd.mean, pd.var), y, levels=[0.9])["picp"]["0.9"] == res["picp"]["0.9"]


# --------------------------------------------------------------------------- bad inputs

_M, _V = torch.zeros(2, 3), torch.ones(2, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: Gaussian(_M, -_V), "`var` must be finite and > 0"),
    (lambda: Gaussian(_M, 0 * _V), "`var` must be finite and > 0"),
    (lambda: Gaussian(_M, _V * math.nan), "`var` must be finite and > 0"),
    (lambda: Gaussian(_M * math.nan, _V), "`mean` must be finite"),
    (lambda: Gaussian(_M, torch.ones(2, 4)), "`var` must have the shape of `mean`"),
    (lambda: Gaussian(torch.zeros(3), torch.ones(3)), "`mean` must have shape \\(M, N\\) or \\(M, N, D\\)"),
    (lambda: Gaussian(torch.zeros(2, 3, dtype=torch.long), _V), "`mean` must be a floating-point tensor"),
    (lambda: mixture_nll(Gaussian(_M, _V), torch.zeros(4)), "`y` must have shape \\(3,\\)"),
    (lambda: mixture_nll(Gaussian(_M, _V), torch.zeros(3, 1)), "not \\(N, 1\\)"),
    (lambda: crps_mixture(Gaussian(_M, _V), torch.tensor([0.0, math.nan, 1.0])), "`y` must be finite, got 1 NaN"),
    (lambda: picp(Gaussian(_M, _V), torch.tensor([0.0, math.inf, 1.0])), "`y` must be finite"),
    (lambda: gaussian_nll(_M, _V, torch.zeros(4)), "`mean` must end in the shape of `y`"),
    (lambda: gaussian_nll(_M, -_V, torch.zeros(3)), "`var` must be finite and > 0"),
    (lambda: rmse("predictions", torch.zeros(3)), "`pred` must be a tensor or array"),
    (lambda: evaluate_gaussian(object(), torch.zeros(3)), "`pred` must be a Gaussian predictive"),
    (lambda: fit_variance_scale(Gaussian(_M, _V), torch.full((3,), math.nan)), "`y_val` must be finite"),
])
def test_bad_inputs_raise_one_line_data_errors(make, match):
    with pytest.raises(DataError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make, match", [
    (lambda: picp(Gaussian(_M, _V), torch.zeros(3), 1.5), "`levels` must hold"),
    (lambda: quantile_calibration(Gaussian(_M, _V), torch.zeros(3), levels=[0.0, 0.5]), "`levels` must hold"),
    (lambda: Gaussian(_M, _V).scores(["msp"]), "`names` must name scores from"),
    (lambda: mixture_nll(Gaussian(_M, _V), torch.zeros(3), reduction="sum"), "`reduction` must be one of"),
])
def test_bad_settings_raise_one_line_config_errors(make, match):
    with pytest.raises(ConfigError, match=match) as err:
        make()
    assert "\n" not in str(err.value)
