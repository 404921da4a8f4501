"""Every method that regresses, on one surface: a Gaussian predictive in the targets' own units,
better than the constant predictor, read back from its file, resumed from a kill, refused where
the method is for class labels only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ensemblekit as ek
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.methods import METHODS
from ensemblekit.metrics.predictive import Gaussian
from ensemblekit.metrics.regression import mixture_nll, rmse
from ensemblekit.predictors import load_predictor
from ensemblekit.training import Callback

REGRESSING = [n for n in METHODS.names() if "regression" in METHODS.get(n).tasks]
CLASSIFYING_ONLY = [n for n in METHODS.names() if "regression" not in METHODS.get(n).tasks]
SMALL = {"model": {"name": "mlp", "kwargs": {"hidden": [32]}}, "epochs": 12, "batch_size": 32, "progress": False,
         "optimizer": {"name": "adam", "lr": 0.01}}


def _regression_data(n: int = 300, seed: int = 0) -> ek.Data:
    """y = 1000 + 50 (x.w + 0.5 sin 3 x_0) + heteroscedastic noise: targets far from standard units."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    w = rng.normal(size=6)
    f = x @ w + 0.5 * np.sin(3 * x[:, 0])
    y = (1000.0 + 50.0 * (f + (0.1 + 0.2 * np.abs(x[:, 1])) * rng.normal(size=n))).astype("float32")
    k = int(0.8 * n)
    return ek.from_arrays(x[:k], y[:k], x[k:], y[k:], val_fraction=0.2, seed=seed, name="synthetic", task="regression")


@pytest.fixture(scope="module")
def data() -> ek.Data:
    return _regression_data()


def _make(name: str, **kw) -> ek.Method:
    return ek.create_method(name, **{**SMALL, **getattr(METHODS.get(name), "test_params", {}), **kw})


class Kill(Callback):
    def __init__(self, at: int | None = None) -> None:
        self.steps, self.at = 0, at

    def on_step_end(self, trainer, step, batch):
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt


def test_the_methods_that_regress_are_the_ones_that_do_not_need_class_probabilities():
    assert set(REGRESSING) == {"independent", "snapshot", "fge", "swa", "swag", "mc_dropout", "batch_ensemble", "packed",
                               "mimo", "masksembles", "curve_ensemble", "laplace", "laplace_ensemble", "distill"}


@pytest.mark.parametrize("name", REGRESSING)
def test_a_regressing_method_predicts_a_gaussian_in_the_targets_units_and_beats_the_constant(name, data, tmp_path):
    method = _make(name).fit(data)
    x, y = data.test.tensors()
    pd = method.predictive(x)
    assert isinstance(pd, Gaussian) and pd.example_shape == (len(data.test),)
    # in original units: the trivial predictor (the training mean) has RMSE ~ std(y) ~ 50 * 2.5
    baseline = float((y - data.train.y.mean()).square().mean().sqrt())
    assert baseline > 60
    assert float(rmse(pd, y)) < 0.6 * baseline, (name, float(rmse(pd, y)), baseline)
    const_nll = 0.5 * math.log(2 * math.pi * baseline**2) + 0.5
    assert float(mixture_nll(pd, y)) < const_nll - 0.3
    with pytest.raises(DataError, match="no class probabilities"):
        method.predict_proba(x)
    path = str(tmp_path / "e.safetensors")
    method.ensemble_.save(path)  # the scaling travels with the file: the same Gaussian from it
    back = ek.predictive(load_predictor(path), x)
    torch.testing.assert_close(back.mean, pd.mean, rtol=0, atol=0)
    torch.testing.assert_close(back.var, pd.var, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["independent", "fge", "swag"])
def test_a_killed_regression_run_resumes_to_the_same_ensemble(name, data, tmp_path):
    # 192 training examples / 32 = 6 steps per epoch: a kill at step 9 is in the second epoch,
    # after the first epoch's checkpoint; ignoring the checkpoint would rerun 6 more steps
    full_count = Kill()
    full = _make(name, epochs=4).fit(data, run_dir=str(tmp_path / "full"), callbacks=[full_count])
    with pytest.raises(KeyboardInterrupt):
        _make(name, epochs=4).fit(data, run_dir=str(tmp_path / "killed"), callbacks=[Kill(at=9)])
    resumed_count = Kill()
    resumed = _make(name, epochs=4).fit(data, run_dir=str(tmp_path / "killed"), callbacks=[resumed_count])
    x = data.test.tensors()[0]
    a, b = full.predictive(x), resumed.predictive(x)
    torch.testing.assert_close(b.mean, a.mean, rtol=0, atol=0)
    torch.testing.assert_close(b.var, a.var, rtol=0, atol=0)
    assert resumed_count.steps == full_count.steps - 6


def test_losses_nll_beta_nll_and_mse_train_different_heads(data):
    x, y = data.test.tensors()
    fits = {loss: _make("independent", members=3, loss=loss).fit(data) for loss in ("nll", "beta_nll", "mse")}
    # mse: a means-only head, each member's noise variance its mean squared training residual (standard units)
    mse = fits["mse"]
    assert mse.ensemble_.readout.noise_var is not None and 0 < mse.ensemble_.readout.noise_var[0] < 1
    for loss, m in fits.items():
        pd = m.predictive(x)
        assert float(rmse(pd, y)) < 70, loss
    assert fits["nll"].ensemble_.readout.noise_var is None
    # the two heads are different networks: the mse one has one output, the others two
    assert mse.ensemble_.member(0)(torch.zeros(1, 6)).shape == (1, 1)
    assert fits["nll"].ensemble_.member(0)(torch.zeros(1, 6)).shape == (1, 2)


def test_standardisation_is_on_by_default_and_its_statistics_are_the_training_splits(data):
    m = _make("independent", members=2, epochs=2).fit(data)
    s = m.ensemble_.readout.scaling
    torch.testing.assert_close(s.y_mean.float(), data.train.y.double().mean().float())
    torch.testing.assert_close(s.x_mean.float(), data.train.x.double().mean(0).float())
    raw = _make("independent", members=2, epochs=2, standardize=False).fit(data)
    assert raw.ensemble_.readout.scaling is None and raw.ensemble_.readout.is_regression


@pytest.mark.parametrize("bad, match", [
    ({"loss": "cross_entropy"}, "cross_entropy is a classification loss"),
    ({"early_stopping": {"metric": "val_acc"}}, "val_acc is a classification metric"),
    ({"mixup": 0.2}, "mixup mixes class labels"),
])
def test_training_options_of_the_other_task_are_one_line_errors(bad, match, data):
    with pytest.raises(ConfigError, match=match) as info:
        _make("independent", **bad).check(data)
    assert "\n" not in str(info.value)


def test_a_regression_loss_on_class_labels_is_refused(blobs):
    with pytest.raises(ConfigError, match="nll is a regression loss"):
        ek.create_method("independent", epochs=1, loss="nll", model={"name": "mlp"}).check(blobs)


@pytest.mark.parametrize("name", CLASSIFYING_ONLY)
def test_a_method_for_class_labels_refuses_regression_data_in_one_line(name, data):
    with pytest.raises(ConfigError, match=rf"^{name} trains on classification data, and this data is regression") as info:
        ek.create_method(name, epochs=1, progress=False).check(data)
    assert "\n" not in str(info.value) and "independent" in str(info.value)  # it names the methods that do regress
