"""Datasets, splits, validation and index-slicing batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ensemblekit as ek
from ensemblekit.data.batching import TensorBatcher
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.methods.base import check_model_fits
from ensemblekit.models import model_factory


def test_mnist1d_default_sizes_and_shapes():
    data = ek.load_dataset("mnist1d")
    assert (len(data.train), len(data.val), len(data.test)) == (3600, 400, 1000)
    assert data.input_shape == (1, 40) and data.num_classes == 10
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    bigger = ek.load_dataset("mnist1d", num_samples=6000, val_fraction=0.0)
    assert (len(bigger.train), bigger.val, len(bigger.test)) == (4800, None, 1200)


def test_mnist1d_generation_leaves_global_numpy_state_alone():
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    ek.load_dataset("mnist1d", num_samples=200, generator_seed=3)
    assert np.random.rand() == expected


def test_digits_and_recorded_split_seed():
    a, b = ek.load_dataset("digits", seed=1), ek.load_dataset("digits", seed=1)
    assert a.input_shape == (1, 8, 8) and a.split_seed == 1
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.test.y, b.test.y)
    assert float(a.train.x.max()) <= 1.0


def test_from_arrays_infers_classes_and_shapes():
    x, y = np.random.randn(50, 2, 3), np.arange(50) % 4
    data = ek.from_arrays(x, y, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert data.num_classes == 4 and data.input_shape == (2, 3)
    assert len(data.train) + len(data.val) + len(data.test) == 50


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": np.zeros((10, 3)), "y": np.zeros(9)}, "10 examples but y has 9"),
        ({"x": np.zeros((10, 3)), "y": np.arange(10) % 2, "num_classes": 1}, "at least 2 classes"),
        ({"x": np.zeros((10, 3)), "y": np.array([0, 1, 2, 5, 0, 1, 2, 0, 1, 2]), "num_classes": 3}, r"labels must be in 0..2, found values from 0 to 5"),
        ({"x": np.zeros((10, 3)), "y": -(np.arange(10) % 2)}, "labels must be in"),
        ({"x": np.full((10, 3), np.nan), "y": np.arange(10) % 2}, "NaN or infinite"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0)}, "empty"),
        ({"x": np.zeros((10, 3)), "y": np.arange(10) + 0.5, "task": "classification"}, "integer class indices"),
        ({"x": np.zeros((10, 3)), "y": np.arange(10) % 2, "x_test": np.zeros((4, 2)), "y_test": np.zeros(4)}, r"shape \(2,\), expected \(3,\)"),
    ],
)
def test_bad_data_fails_with_one_clear_message(kwargs, match):
    with pytest.raises(DataError, match=match):
        ek.from_arrays(**kwargs)


def test_wrong_dimensionality_for_the_model_is_one_clear_error():
    data = ek.load_dataset("digits")  # (1, 8, 8) images
    with pytest.raises(DataError, match=r"cannot take digits examples of shape \(1, 8, 8\)"):
        check_model_fits(model_factory(lambda: torch.nn.Linear(40, 10)), data)
    with pytest.raises(DataError, match=r"outputs \(2, 3\) for a batch of 2; expected \(2, 10\)"):
        check_model_fits(model_factory(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))), data)
    with pytest.raises(ConfigError, match=r"cnn1d needs input_shape \(channels, length\), got \(1, 8, 8\)"):
        model_factory("cnn1d", input_shape=data.input_shape, num_classes=10)()


def test_npz_round_trip_and_refusals(tmp_path):
    x, y = np.random.randn(40, 5).astype(np.float32), np.arange(40) % 3
    ok = tmp_path / "ok.npz"
    np.savez(ok, x=x, y=y, x_test=x[:10], y_test=y[:10])
    data = ek.load_npz(ok, val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    with pytest.raises(DataError, match="unpickling"):
        ek.load_npz(obj)
    missing = tmp_path / "missing.npz"
    np.savez(missing, features=x)
    with pytest.raises(DataError, match=r"missing array\(s\) \['x', 'y'\]"):
        ek.load_npz(missing)
    with pytest.raises(ConfigError, match="unknown dataset"):
        ek.load_dataset("cifar1000")


@pytest.mark.parametrize("order", ["shared", "per_member", "bootstrap"])
def test_batcher_orders_are_deterministic_and_resumable(order):
    x, y = torch.arange(23).float()[:, None], torch.arange(23) % 2
    b = TensorBatcher(x, y, batch_size=5, members=3, order=order, seed=4)
    assert b.steps_per_epoch == 5
    batches = list(b.epoch(2))
    again = list(b.epoch(2))
    assert all(torch.equal(p.idx, q.idx) for p, q in zip(batches, again))
    assert not torch.equal(torch.cat([p.idx for p in b.epoch(3)], -1), torch.cat([p.idx for p in batches], -1))
    resumed = list(b.epoch(2, start_step=3))
    assert all(torch.equal(p.idx, q.idx) for p, q in zip(batches[3:], resumed))
    idx = torch.cat([p.idx for p in batches], -1)
    if order == "shared":
        assert batches[0].x.shape == (5, 1) and sorted(idx.tolist()) == list(range(23))
    else:
        assert batches[0].x.shape == (3, 5, 1)
        assert torch.equal(batches[0].x[..., 0], batches[0].idx.float())
        if order == "per_member":
            for row in idx:
                assert sorted(row.tolist()) == list(range(23))
            assert not torch.equal(idx[0], idx[1])
        else:  # bootstrap: a fixed resample with repeats, reshuffled per epoch
            assert any(len(set(row.tolist())) < 23 for row in idx)
            nxt = torch.cat([p.idx for p in b.epoch(3)], -1)
            assert torch.equal(idx.sort(1).values, nxt.sort(1).values)


def test_cifar_needs_torchvision_or_its_files(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"needs torchvision: pip install 'ensemblekit\[vision\]'"):
            ek.load_dataset("cifar10", root=str(tmp_path))
    else:  # pragma: no cover - only where torchvision is installed
        with pytest.raises(DataError, match="no dataset files"):
            ek.load_dataset("cifar100", root=str(tmp_path))


class _Listed(torch.utils.data.Dataset):
    """A dataset that is not a TensorDataset: its contents cannot be hashed without reading it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _loaders(x, y, dataset=torch.utils.data.TensorDataset):
    from torch.utils.data import DataLoader

    return DataLoader(dataset(x, y), batch_size=16), DataLoader(dataset(x, y), batch_size=16)


def test_loader_data_is_hashed_by_its_tensors_or_keyed_by_name_never_by_its_size(tmp_path):
    from ensemblekit.data.registry import from_loaders

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.arange(64) % 3
    same_size = torch.randn(64, 5, generator=g)
    a, b = from_loaders(*_loaders(x, y), num_classes=3), from_loaders(*_loaders(same_size, y), num_classes=3)
    assert a.digest() != b.digest()  # TensorDataset loaders: their tensors are hashed
    assert a.digest() == from_loaders(*_loaders(x.clone(), y.clone()), num_classes=3).digest()
    listed = from_loaders(*_loaders(x, y, _Listed), num_classes=3)
    with pytest.raises(DataError, match="train split is a DataLoader over _Listed.*name the data"):
        listed.digest()
    k1 = from_loaders(*_loaders(x, y, _Listed), num_classes=3, key="v1")
    k2 = from_loaders(*_loaders(same_size, y, _Listed), num_classes=3, key="v2")
    assert k1.digest() != k2.digest() and k1.describe()["key"] == "v1"
    # a comparison over unhashable data refuses before anything is written
    from ensemblekit.config import CompareConfig
    from ensemblekit.experiments.compare import run_compare

    cfg = CompareConfig(data="digits", model={"name": "mlp", "kwargs": {"hidden": [4]}}, budgets=[1], seeds=[0],
                        train={"epochs": 1, "progress": False}, methods=[{"name": "independent"}])
    with pytest.raises(DataError, match="name the data"):
        run_compare(cfg, str(tmp_path / "cmp"), data=listed)
    assert not (tmp_path / "cmp").exists()
