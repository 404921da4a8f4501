"""The regression half of the uncertainty evaluation: tabular shift and extrapolation inputs, and
evaluate_uncertainty on a Gaussian predictive (variance scaling, selective, OOD, shift, conformal)."""

from __future__ import annotations

import json

import pytest
import torch

import ensemblekit as ek
from ensemblekit.data.dataset import from_arrays
from ensemblekit.data.scaling import standardize
from ensemblekit.data.tabular_shift import (DROP_SHARES, NOISE_FRACTIONS, SCALE_FACTORS, FeatureStats, extrapolation_split,
                                            tabular_corrupt, uniform_box)
from ensemblekit.ensemble import Ensemble
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.evaluation.config import as_evaluation, evaluation_hash
from ensemblekit.evaluation.forward import predictive
from ensemblekit.evaluation.regression_run import REGRESSION_SCORES, SHIFT_KEYS, regression_scores
from ensemblekit.evaluation.run import EVALUATION_FORMAT, check_evaluation, evaluate_uncertainty
from ensemblekit.metrics.head_outputs import Readout
from ensemblekit.metrics.predictive import Gaussian
from ensemblekit.metrics.regression import mixture_nll, rmse
from ensemblekit.models import model_factory


@pytest.fixture(scope="module")
def features() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 100.0, 0.1, 5.0, 1.0, 2.0, 3.0, 4.0, 50.0])
    x_train = torch.randn(300, 10, generator=g) * scale + 7.0
    x_test = torch.randn(80, 10, generator=g) * scale + 7.0
    return x_train, x_test


# --------------------------------------------------------------------------- tabular shift


def test_feature_noise_grows_with_severity_in_each_feature_s_own_units_and_is_seeded(features):
    x_train, x = features
    stats = FeatureStats.of(x_train)
    assert torch.equal(tabular_corrupt(x, "feature_noise", 0, stats), x)
    deltas = [tabular_corrupt(x, "feature_noise", s, stats, seed=3).double() - x.double() for s in range(1, 6)]
    for s, d in zip(range(1, 6), deltas):  # std of the added noise = fraction * the feature's training std
        ratio = d.std(0) / stats.std
        assert torch.allclose(ratio, torch.full_like(ratio, NOISE_FRACTIONS[s - 1]), rtol=0.25)
    norms = [float(d.norm()) for d in deltas]
    assert norms == sorted(norms) and norms[-1] > 8 * norms[0]  # paired draws: the same noise, scaled up
    assert torch.equal(tabular_corrupt(x, "feature_noise", 4, stats, seed=3), tabular_corrupt(x, "feature_noise", 4, stats, seed=3))
    assert not torch.equal(tabular_corrupt(x, "feature_noise", 4, stats, seed=3), tabular_corrupt(x, "feature_noise", 4, stats, seed=4))


def test_feature_scale_and_dropped_features_at_severity_one_and_five(features):
    x_train, x = features
    stats = FeatureStats.of(x_train)
    assert torch.allclose(tabular_corrupt(x, "feature_scale", 1, stats), x * SCALE_FACTORS[0])
    assert torch.allclose(tabular_corrupt(x, "feature_scale", 5, stats), x * SCALE_FACTORS[4])
    assert torch.equal(tabular_corrupt(x, "dropped_features", 0, stats), x)
    dropped = []
    for s in range(1, 6):
        out = tabular_corrupt(x, "dropped_features", s, stats, seed=1)
        cols = {j for j in range(10) if not torch.equal(out[:, j], x[:, j])}
        for j in cols:  # a dropped feature is its training mean for every example
            assert torch.allclose(out[:, j].double(), stats.mean[j].expand(len(x)), atol=1e-5)
        assert len(cols) == max(1, round(DROP_SHARES[s - 1] * 10))
        dropped.append(cols)
    assert all(a <= b for a, b in zip(dropped, dropped[1:]))  # nested: severity s drops what s - 1 dropped
    assert torch.equal(tabular_corrupt(x, "dropped_features", 5, stats, seed=1), tabular_corrupt(x, "dropped_features", 5, stats, seed=1))
    with pytest.raises(ConfigError, match="unknown tabular corruption 'fog'"):
        tabular_corrupt(x, "fog", 1, stats)
    with pytest.raises(ConfigError, match="severity must be an integer in 0..5"):
        tabular_corrupt(x, "feature_scale", 6, stats)
    with pytest.raises(DataError, match=r"\(N, F\)"):
        tabular_corrupt(x.view(80, 2, 5), "feature_scale", 1, stats)


def test_uniform_box_fills_each_feature_s_training_range(features):
    x_train, _ = features
    box = uniform_box(x_train, 500, seed=0)
    assert box.shape == (500, 10) and box.dtype == torch.float32
    assert bool((box >= x_train.min(0).values - 1e-4).all()) and bool((box <= x_train.max(0).values + 1e-4).all())
    assert torch.equal(box, uniform_box(x_train, 500, seed=0)) and not torch.equal(box, uniform_box(x_train, 500, seed=1))


def test_the_extrapolation_split_picks_the_test_examples_beyond_the_training_range_by_hand():
    x_train = torch.tensor([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]])
    x_test = torch.tensor([[0.5, 8.0], [3.0, 6.5], [-1.0, 9.0], [1.0, 6.0], [1.5, 10.0]])
    ex = extrapolation_split(x_train, x_test)  # feature 1 has 3 beyond [5, 7], feature 0 has 2 beyond [0, 2]
    assert (ex.feature, ex.low, ex.high, ex.num_outside) == (1, 5.0, 7.0, 3)
    assert ex.outside.tolist() == [True, False, True, False, True]
    assert extrapolation_split(x_train, x_test, feature=0).outside.tolist() == [False, True, True, False, False]
    assert extrapolation_split(x_train, x_test[:4]).feature == 0  # a tie (2 and 2): the lower index
    with pytest.raises(DataError, match="no test example lies outside the training range of any"):
        extrapolation_split(x_train, x_test[3:4])
    with pytest.raises(DataError, match=r"range \[0, 2\] of feature 0"):
        extrapolation_split(x_train, x_test[[0, 3, 4]], feature=0)
    with pytest.raises(DataError, match="every test example lies outside"):
        extrapolation_split(x_train, x_test[[0, 2, 4]])
    with pytest.raises(ConfigError, match="feature must be an integer index"):
        extrapolation_split(x_train, x_test, feature=2)


# --------------------------------------------------------------------------- end to end


def _diabetes_ensemble():
    data = ek.load_dataset("diabetes")
    f = model_factory({"name": "mlp", "kwargs": {"hidden": (16,)}, "gaussian": True}, input_shape=data.input_shape, num_classes=1)
    ens = Ensemble.from_factory(f, seeds=[0, 1, 2])
    ens.readout = Readout("regression", 1, scaling=standardize(data)[1])
    return data, ens


def test_evaluate_uncertainty_on_a_regression_ensemble_gives_the_whole_schema():
    data, ens = _diabetes_ensemble()
    block = {"ood": ["noise", "permuted"], "shift": {"severities": [1, 5]}, "conformal": True}
    res = evaluate_uncertainty(ens, data, block)
    json.dumps(res, allow_nan=False)
    assert res["format"] == EVALUATION_FORMAT and res["task"] == "regression"
    assert res["hash"] == evaluation_hash(as_evaluation(block))
    assert set(res) == {"format", "task", "config", "hash", "calibration", "selective", "ood", "shift", "conformal"}
    test, y = predictive(ens, data.test), data.test.tensors()[1]
    cal = res["calibration"]
    assert cal["method"] == "variance_scaling" and set(cal) == {"method", "raw", "variance_scaled", "scale_then_pool"}
    assert cal["raw"]["rmse"] == pytest.approx(float(rmse(test, y))) and cal["raw"]["nll"] == pytest.approx(float(mixture_nll(test, y)))
    assert cal["variance_scaled"]["scale"] > 0 and len(cal["scale_then_pool"]["scales"]) == 3
    assert cal["variance_scaled"]["rmse"] == pytest.approx(cal["raw"]["rmse"])  # scaling moves no mean
    assert set(res["selective"]["scores"]) == set(REGRESSION_SCORES) == set(res["ood"]["noise"]["scores"])
    assert res["selective"]["risk"] == "mse" and res["selective"]["oracle"]["aurc"] <= res["selective"]["scores"]["std"]["aurc"]
    assert set(res["ood"]) == {"noise", "permuted"} and res["ood"]["noise"]["size"] == len(data.test)
    assert set(res["ood"]["noise"]["scores"]["std"]) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    shift = res["shift"]
    assert set(shift["corruptions"]) == {"feature_noise", "feature_scale", "dropped_features"}
    rows = shift["corruptions"]["feature_noise"]
    assert rows["severity"] == [1, 5] and set(SHIFT_KEYS) | {"nll_calibrated", "crps_calibrated", "picp95_calibrated"} <= set(rows)
    assert shift["by_severity"]["severity"] == [1, 5] and set(shift["clean"]) == set(SHIFT_KEYS)
    assert shift["clean"]["rmse"] == pytest.approx(cal["raw"]["rmse"])
    conf = res["conformal"]["normalized"]
    assert conf["alpha"] == 0.1 and conf["n_cal"] == len(data.val) and conf["n_test"] == len(data.test)
    assert res["conformal"]["mixture_interval"]["level"] == pytest.approx(0.9)


def _known(n: int, seed: int, over_confidence: float = 4.0):
    """A 1-D problem and the predictive of 3 members that know its mean and noise, but divide its variance by
    ``over_confidence``; the noise grows with |x|, and the members' means spread apart beyond |x| > 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 6 - 3
    sd = 0.2 + 0.3 * x[:, 0].abs()
    y = x[:, 0] + sd * torch.randn(n, generator=g)
    spread = (x[:, 0].abs() - 2).clamp_min(0) * torch.tensor([[-1.0], [0.0], [1.0]])
    return x, y, Gaussian(x[:, 0] + spread, (sd.square() / over_confidence).expand(3, n).clone())


def test_variance_scaling_conformal_selective_and_extrapolation_values_on_a_known_predictive():
    (xtr, ytr, _), (xv, yv, val), (xt, yt, test) = _known(400, 0), _known(2000, 1), _known(2000, 2)
    inside = xtr[:, 0].abs() < 2  # training inputs cover (-2, 2): the test split extrapolates beyond
    data = from_arrays(xtr[inside], ytr[inside], xt, yt, x_val=xv, y_val=yv, task="regression", name="known")
    res = evaluate_uncertainty(None, data, {"ood": ["extrapolation"], "conformal": {"alpha": 0.1}}, test=test, val=val)
    vs = res["calibration"]["variance_scaled"]
    assert 3.0 < vs["scale"] < 5.5  # the members' variances are a quarter of the truth (inflated by the outer spread)
    assert vs["nll"] < res["calibration"]["raw"]["nll"] and abs(vs["picp90"] - 0.9) < 0.03 < abs(res["calibration"]["raw"]["picp90"] - 0.9)
    conf = res["conformal"]["normalized"]
    assert abs(conf["coverage"] - 0.9) < 0.03 and res["conformal"]["mixture_interval"]["coverage"] < 0.75
    sel = res["selective"]["scores"]
    assert sel["std"]["rmse@0.5"] < sel["std"]["rmse"] and sel["std"]["aurc"] < 0.8 * sel["std"]["random_aurc"]
    ex = res["ood"]["extrapolation"]
    lo, hi = float(xtr[inside].min()), float(xtr[inside].max())
    assert (ex["feature"], ex["low"], ex["high"]) == (0, lo, hi)
    assert ex["size"] == int(((xt[:, 0] < lo) | (xt[:, 0] > hi)).sum()) and ex["in_size"] == 2000 - ex["size"]
    assert ex["scores"]["epistemic_std"]["auroc"] > 0.99  # the members disagree only beyond |x| = 2 (the range, nearly)
    assert ex["scores"]["std"]["auroc"] > 0.85


def test_regression_blocks_refuse_classification_only_settings_in_one_line():
    data, _ = _diabetes_ensemble()
    assert regression_scores(as_evaluation({})) == list(REGRESSION_SCORES)
    assert regression_scores(as_evaluation({"scores": ["epistemic_std"]})) == ["epistemic_std"]
    assert check_evaluation({"shift": {"corruptions": ["feature_noise", "gaussian_noise"]}}, data).shift is not None
    cases = [({"scores": ["msp", "std"]}, ConfigError, r"\['msp'\] score class probabilities"),
             ({"calibration": "vector"}, ConfigError, "vector scaling rescales class logits"),
             ({"ood": [{"held_out_classes": [1, 2]}]}, ConfigError, "regression data has none"),
             ({"ood": ["extrapolation"]}, DataError, "evaluation.ood: extrapolation: no test example"),
             ({"shift": {"corruptions": ["rotation"]}}, ConfigError, "does not apply to regression inputs")]
    for block, error, message in cases:
        with pytest.raises(error, match=message):
            check_evaluation(block, data)
    no_val = ek.load_dataset("diabetes", val_fraction=0.0)
    with pytest.raises(ConfigError, match="conformal: the intervals are calibrated on the validation split"):
        check_evaluation({"conformal": True}, no_val)
    assert "calibration" not in evaluate_uncertainty(_diabetes_ensemble()[1], no_val, {"selective": False})
    digits = from_arrays(torch.randn(40, 6), torch.arange(40) % 3, task="classification")
    with pytest.raises(ConfigError, match=r"\['std'\] score a Gaussian predictive"):
        check_evaluation({"scores": ["std"]}, digits)
    with pytest.raises(ConfigError, match="extrapolation .* regression data only"):
        check_evaluation({"ood": ["extrapolation"]}, digits)
    with pytest.raises(ConfigError, match="'feature_noise' does not apply"):
        check_evaluation({"shift": {"corruptions": ["feature_noise"]}}, digits)
