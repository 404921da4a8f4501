"""Regression data: the task and its inference, float targets through splits and batches,
the classification digest unchanged, standardisation, and the offline regression sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ensemblekit as ek
from ensemblekit.data import Standardizer, TensorBatcher, infer_task, standardize
from ensemblekit.errors import ConfigError, DataError


def _xy(n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(2 * n, dtype=np.float32).reshape(n, 2) / 10, np.arange(n) % 3


# --- the task ---------------------------------------------------------------------------


def test_integer_targets_are_classification_and_fractional_floats_regression():
    x, y = _xy()
    cls = ek.from_arrays(x, y)
    assert cls.task == "classification" and cls.num_classes == 3 and cls.num_outputs == 3 and cls.target_shape == ()
    assert cls.train.y.dtype == torch.int64
    reg = ek.from_arrays(x, y + 0.25)
    assert reg.task == "regression" and reg.is_regression and reg.num_classes == 0 and reg.num_outputs == 1
    assert reg.train.y.dtype == torch.float32 and reg.target_shape == ()
    assert sorted(torch.cat([reg.train.y, reg.val.y, reg.test.y]).tolist()) == sorted((y + 0.25).tolist())


def test_whole_valued_floats_need_the_task_stated():
    x, y = _xy()
    with pytest.raises(DataError, match=r"all whole numbers .*state the task"):
        ek.from_arrays(x, y.astype(np.float64))
    assert ek.from_arrays(x, y.astype(np.float64), task="classification").num_classes == 3
    reg = ek.from_arrays(x, y.astype(np.float64), task="regression")
    assert reg.task == "regression" and reg.train.y.dtype == torch.float32
    # a fractional value in another split settles it
    assert infer_task(np.zeros(4), ("y_test", np.array([0.5]))) == "regression"
    assert infer_task(np.array([0, 1, 2])) == "classification"


def test_multi_output_targets_keep_their_shape():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = np.stack([x[:, 0] * 2.0, x[:, 1] - 0.5], axis=1)
    data = ek.from_arrays(x, y)
    assert data.task == "regression" and data.target_shape == (2,) and data.num_outputs == 2
    assert data.train.y.shape == (len(data.train), 2) and data.describe()["num_outputs"] == 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"y": np.r_[np.nan, np.linspace(0.1, 3.0, 29)]}, DataError, r"^y: 1 target value\(s\) are NaN or infinite$"),
        ({"y": np.r_[np.inf, np.linspace(0.1, 3.0, 29)], "task": "regression"}, DataError, r"^y: 1 regression target value\(s\) are NaN"),
        ({"y": np.full((30, 1, 2), 0.5)}, DataError, r"^y: regression targets must have shape \(N,\) or \(N, D\) with D >= 1, got \(30, 1, 2\)$"),
        ({"y": np.linspace(0.1, 3.0, 30), "task": "classification"}, DataError, r"^y must hold integer class indices, got non-integer values"),
        ({"y": np.linspace(0.1, 3.0, 30), "task": "ordinal"}, ConfigError, r"^task must be one of classification, regression, got 'ordinal'$"),
        ({"y": np.linspace(0.1, 3.0, 30), "num_classes": 3}, ConfigError, r"^num_classes is not meaningful for regression"),
        ({"y": np.linspace(0.1, 3.0, 30), "x_test": np.zeros((4, 2)), "y_test": np.zeros((4, 2)) + 0.5}, DataError,
         r"^test: targets have shape \(2,\) per example, expected \(\)$"),
    ],
)
def test_bad_regression_targets_are_one_line_errors(kwargs, error, match):
    x, _ = _xy()
    with pytest.raises(error, match=match) as info:
        ek.from_arrays(x, **kwargs)
    assert "\n" not in str(info.value)


def test_too_few_regression_examples_are_refused():
    with pytest.raises(DataError, match=r"^regression needs at least 2 training examples .*got 1$"):
        ek.from_arrays(np.zeros((1, 2)), np.array([0.5]), np.zeros((3, 2)), np.array([0.1, 0.2, 0.3]), val_fraction=0.0)


def test_npz_takes_float_targets_and_the_task(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "reg.npz", x=x, y=y * 1.5 + 0.1)
    np.savez(tmp_path / "whole.npz", x=x, y=y.astype(np.float32))
    assert ek.load_npz(tmp_path / "reg.npz").task == "regression"
    with pytest.raises(DataError, match="state the task"):
        ek.load_npz(tmp_path / "whole.npz")
    assert ek.load_npz(tmp_path / "whole.npz", task="regression").task == "regression"
    from ensemblekit.config import DataConfig

    assert DataConfig.model_validate({"npz": str(tmp_path / "whole.npz"), "task": "regression"}).load().task == "regression"


# --- float targets through splits and batches --------------------------------------------


def test_split_batches_tensors_and_batcher_keep_float_targets():
    x = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    data = ek.from_arrays(x, x[:, 0] * 0.5 + 0.1, val_fraction=0.0)
    batches = list(data.train.batches(batch_size=16))
    assert [tuple(yb.shape) for _, yb in batches] == [(16,), (16,), (8,)]
    assert all(yb.dtype == torch.float32 for _, yb in batches)
    assert torch.equal(torch.cat([yb for _, yb in batches]), data.train.y)
    xs, ys = data.train.tensors()
    assert ys.dtype == torch.float32 and torch.equal(ys, data.train.y)
    batcher = TensorBatcher(data.train.x, data.train.y, batch_size=8, members=3, order="per_member")
    b = next(batcher.epoch(0))
    assert b.y.dtype == torch.float32 and b.y.shape == (3, 8) and b.per_member
    assert torch.equal(b.y, data.train.y[b.idx])
    multi = ek.from_arrays(x, x[:, :2] + 0.5, val_fraction=0.0)
    shared = next(TensorBatcher(multi.train.x, multi.train.y, batch_size=8).epoch(0))
    assert shared.y.shape == (8, 2) and shared.y.dtype == torch.float32 and not shared.per_member
    per = next(TensorBatcher(multi.train.x, multi.train.y, batch_size=8, members=2, order="per_member").epoch(0))
    assert per.y.shape == (2, 8, 2) and per.per_member


def test_regression_loaders_keep_float_targets():
    from torch.utils.data import DataLoader, TensorDataset

    from ensemblekit.data.batching import LoaderBatcher

    x, y = torch.randn(20, 3), torch.randn(20) + 0.5
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    data = ek.from_loaders(loader, loader, task="regression")
    assert data.task == "regression" and data.num_classes == 0 and data.train.tensors()[1].dtype == torch.float32
    assert next(LoaderBatcher(loader, task="regression").epoch(0)).y.dtype == torch.float32
    with pytest.raises(ConfigError, match="needs num_classes"):
        ek.from_loaders(loader, loader)


# --- digests -------------------------------------------------------------------------------


def test_classification_digest_is_pinned():
    # Values given by the code before regression existed: cache keys of classification data must not move.
    x, y = _xy()
    assert ek.from_arrays(x, y, seed=0).digest() == "6d41e7d25cd1f711"
    assert ek.from_arrays(x, y, x[:6], y[:6], val_fraction=0.0, name="other").digest() == "069ff7fa04ea9679"
    assert ek.load_dataset("digits").digest() == "639499aa4b572956"


def test_the_task_is_part_of_a_regression_digest():
    x, y = _xy()
    a = ek.from_arrays(x, y.astype(np.float32), task="classification")
    b = ek.from_arrays(x, y.astype(np.float32), task="regression")
    assert a.digest() == ek.from_arrays(x, y, seed=0).digest()  # whole-valued float labels become the same int64 labels
    assert a.digest() != b.digest()
    assert b.digest() == ek.from_arrays(x, y.astype(np.float64), task="regression").digest()


# --- standardisation -------------------------------------------------------------------------


def test_standardize_round_trip_and_training_statistics_only():
    data = ek.load_dataset("diabetes", seed=3)
    scaled, s = standardize(data)
    assert scaled.task == "regression" and scaled.info["standardized"] and scaled.digest() != data.digest()
    tx, ty = scaled.train.x.double(), scaled.train.y.double()
    assert torch.allclose(tx.mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(tx.std(0, unbiased=False), torch.ones(10, dtype=torch.float64), atol=1e-5)
    assert abs(float(ty.mean())) < 1e-6 and abs(float(ty.std(unbiased=False)) - 1.0) < 1e-5
    assert abs(float(scaled.test.y.mean())) > 1e-3  # the test split is scaled by training statistics, not its own
    assert not torch.allclose(scaled.test.x.mean(0), torch.zeros(10), atol=1e-3)
    for split, orig in ((scaled.train, data.train), (scaled.val, data.val), (scaled.test, data.test)):
        rel_x = (s.inverse_x(split.x) - orig.x).abs() / orig.x.abs().clamp_min(1.0)
        rel_y = (s.inverse_y(split.y) - orig.y).abs() / orig.y.abs().clamp_min(1.0)
        assert float(rel_x.max()) < 1e-6 and float(rel_y.max()) < 1e-6
    # the statistics are those of the training split, by hand
    assert torch.allclose(s.y_mean, data.train.y.double().mean(), atol=1e-9)
    assert torch.allclose(s.y_std, data.train.y.double().std(unbiased=False), atol=1e-9)


def test_inverse_gaussian_on_hand_numbers():
    s = Standardizer.fit(torch.tensor([[1.0], [3.0], [5.0], [7.0]]), torch.tensor([10.0, 14.0, 10.0, 14.0]))
    assert float(s.y_mean) == 12.0 and float(s.y_std) == 2.0
    mean, var = s.inverse_gaussian(torch.tensor([[0.0, 1.0, -0.5]]), torch.tensor([[1.0, 0.25, 4.0]]))
    assert mean.tolist() == [[12.0, 14.0, 11.0]] and var.tolist() == [[4.0, 1.0, 16.0]]
    assert s.transform_x(torch.tensor([[4.0]])).tolist() == [[0.0]]
    assert abs(float(s.x_std) - 5.0**0.5) < 1e-12  # population std of 1, 3, 5, 7


def test_constant_features_have_a_floor_and_state_round_trips_through_json():
    x = torch.stack([torch.linspace(0, 1, 10), torch.full((10,), 3.0)], dim=1)
    y = torch.stack([torch.linspace(-1, 1, 10), torch.linspace(5, 7, 10)], dim=1)
    s = Standardizer.fit(x, y)
    assert s.x_std[1] == 1.0 and torch.equal(s.transform_x(x)[:, 1], torch.zeros(10))
    back = Standardizer.from_state(json.loads(json.dumps(s.state())))
    for a, b in ((s.x_mean, back.x_mean), (s.x_std, back.x_std), (s.y_mean, back.y_mean), (s.y_std, back.y_std)):
        assert torch.equal(a, b)
    assert back.y_mean.shape == (2,)
    with pytest.raises(DataError, match="not a standardiser state"):
        Standardizer.from_state({"format": "other"})


def test_classification_inputs_are_scaled_and_labels_kept():
    x, y = _xy()
    data = ek.from_arrays(x, y)
    scaled, s = standardize(data)
    assert not s.scales_targets and torch.equal(scaled.train.y, data.train.y) and scaled.num_classes == 3
    with pytest.raises(DataError, match="only regression targets can be standardised"):
        standardize(data, targets=True)


# --- the regression datasets ----------------------------------------------------------------


def test_diabetes_sizes_and_determinism():
    data = ek.load_dataset("diabetes", val_fraction=0.0)
    assert data.task == "regression" and data.input_shape == (10,) and data.target_shape == ()
    assert (len(data.train), len(data.test)) == (398, 44)  # 442 with a 90/10 split
    d = ek.load_dataset("diabetes")  # val_fraction 0.1 of the 398
    assert (len(d.train), len(d.val), len(d.test)) == (358, 40, 44)
    assert len(d.train) + len(d.val) + len(d.test) == 442
    assert ek.load_dataset("diabetes", seed=0).digest() == d.digest()
    other = ek.load_dataset("diabetes", seed=1)
    assert other.digest() != d.digest() and not torch.equal(other.test.y, d.test.y)
    assert float(torch.cat([d.train.y, d.val.y, d.test.y]).sum()) == 67243.0  # sklearn's target total


def test_toy_cubic_matches_the_paper_setup():
    data = ek.load_dataset("toy_cubic")
    assert (len(data.train), len(data.test), data.val) == (20, 200, None) and data.input_shape == (1,)
    assert float(data.train.x.abs().max()) <= 4.0
    assert torch.allclose(data.test.x[:, 0], torch.linspace(-6, 6, 200), atol=1e-6)
    assert ek.load_dataset("toy_cubic", seed=0).digest() == data.digest() != ek.load_dataset("toy_cubic", seed=1).digest()
    big = ek.load_dataset("toy_cubic", num_train=20000, seed=5)
    residual = big.train.y.double() - big.train.x[:, 0].double() ** 3
    assert abs(float(residual.std()) - 3.0) < 0.06 and abs(float(residual.mean())) < 0.06
    with pytest.raises(ConfigError, match="toy_cubic noise_std must be a finite number > 0, got -1"):
        ek.load_dataset("toy_cubic", noise_std=-1)


def test_heteroscedastic_noise_grows_with_x():
    data = ek.load_dataset("heteroscedastic", num_train=20000, val_fraction=0.0, seed=2)
    x, y = data.train.x[:, 0].double(), data.train.y.double()
    residual = y - x * torch.sin(x)
    near, far = residual[x.abs() < 0.5].std(), residual[x.abs() > 3.5].std()
    assert abs(float(near) - (0.1 + 0.2 * 0.25)) < 0.02  # mean |x| ~ 0.25 near 0
    assert abs(float(far) - (0.1 + 0.2 * 3.75)) < 0.05 and float(far) > 4 * float(near)
    small = ek.load_dataset("heteroscedastic")
    assert (len(small.train), len(small.val), len(small.test)) == (450, 50, 500)
    assert float(small.test.x.abs().max()) <= 4.0 and ek.load_dataset("heteroscedastic").digest() == small.digest()
