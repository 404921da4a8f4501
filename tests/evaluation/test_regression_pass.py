"""The one prediction pass for regression: a learned-variance head's stacked outputs become the
members' Gaussian predictive, test-time transforms average it, and evaluate scores it."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblekit import Ensemble
from ensemblekit.data.dataset import Split
from ensemblekit.errors import ConfigError
from ensemblekit.evaluation.evaluate import evaluate
from ensemblekit.evaluation.forward import predictive
from ensemblekit.metrics.head_outputs import Readout
from ensemblekit.metrics.predictive import Gaussian
from ensemblekit.metrics.regression import mixture_nll, rmse
from ensemblekit.models import model_factory


def _ensemble(d: int = 1) -> Ensemble:
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [8]}, "gaussian": True}, input_shape=(6,), num_classes=d)
    ens = Ensemble.from_factory(factory, seeds=[0, 1, 2])
    ens.readout = Readout("regression", d)
    return ens


def test_the_pass_reads_means_then_softplus_variances_member_by_member():
    ens = _ensemble()
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    pd = predictive(ens, x, batch_size=16)
    assert isinstance(pd, Gaussian) and pd.num_members == 3 and pd.num_examples == 50
    with torch.no_grad():
        raw = ens.eval()(x)  # (M, N, 2): the mean, then the raw variance
    torch.testing.assert_close(pd.mean.double(), raw[..., 0].double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(pd.var.double(), (torch.nn.functional.softplus(raw[..., 1]) + 1e-6).double(), atol=1e-6, rtol=0)
    flips = [lambda v: v, lambda v: -v]
    both = predictive(ens, x, flips)
    minus = predictive(ens, -x)
    torch.testing.assert_close(both.mean.double(), ((pd.mean + minus.mean) / 2).double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(both.var.double(), ((pd.var + minus.var) / 2).double(), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="task must be one of classification, regression"):
        Readout("ranking")


def test_evaluate_scores_the_regression_predictive_of_a_split():
    ens = _ensemble(d=2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 2, generator=g)
    res = evaluate(ens, Split(x, y))
    pd = predictive(ens, x)
    assert res["num_members"] == 3 and res["num_examples"] == 40
    assert res["rmse"] == pytest.approx(float(rmse(pd, y)))
    assert res["nll"] == pytest.approx(float(mixture_nll(pd, y)))
    assert math.isfinite(res["crps"]) and res["size_curve"]["rmse"][-1] == res["rmse"]


def test_a_standardised_readout_scales_inputs_in_and_the_gaussian_back_out():
    """The readout a method attaches: inputs standardised before the forward pass, the Gaussian
    mapped back to the targets' units (mean * s + m, var * s^2), equal to doing it by hand."""
    from ensemblekit.data.scaling import Standardizer

    ens = _ensemble()
    g = torch.Generator().manual_seed(2)
    x, y = 3.0 + 5.0 * torch.randn(60, 6, generator=g), 100.0 + 20.0 * torch.randn(60, generator=g)
    s = Standardizer.fit(x, y)
    plain = predictive(ens, s.transform_x(x))  # the network in standard units
    ens.readout = Readout("regression", 1, scaling=s)
    pd = predictive(ens, x, batch_size=7)
    torch.testing.assert_close(pd.mean, plain.mean * s.y_std.float() + s.y_mean.float(), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(pd.var, plain.var * s.y_std.float() ** 2, atol=1e-3, rtol=1e-5)
    back = Readout.from_state(ens.readout.state())
    assert back.scaling is not None and torch.equal(back.scaling.y_std, s.y_std) and back.num_outputs == 1
