"""The ``gaussian`` wrapper: (B, 2D) raw outputs, split_gaussian's floor and D = 1 squeeze, mse
mode, custom modules, errors, and stacked ensemble == per-member modules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ensemblekit import Ensemble
from ensemblekit.errors import ConfigError, DataError
from ensemblekit.models import WRAPPERS, create_model, model_factory
from ensemblekit.models.gaussian_head import apply_gaussian, check_gaussian, final_linear, split_gaussian, split_mean

CASES = [("mlp", {"hidden": [8]}, (6,)), ("cnn1d", {"channels": 4, "layers": 2}, (1, 16))]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_the_registry_finds_the_wrapper_by_itself():
    assert "gaussian" in WRAPPERS.names()
    assert WRAPPERS.get("gaussian").apply is apply_gaussian


@pytest.mark.parametrize("name,kwargs,shape", CASES)
@pytest.mark.parametrize("d", [1, 3])
def test_registered_models_output_2d_and_split_is_positive_above_the_floor(name, kwargs, shape, d):
    factory = model_factory({"name": name, "kwargs": kwargs, "gaussian": True}, input_shape=shape, num_classes=d)
    net = factory()
    out = net(torch.randn(5, *shape))
    assert out.shape == (5, 2 * d)
    assert net.num_classes == 2 * d
    mean, var = split_gaussian(out * 50, min_var=1e-3)  # large negative raw values reach the floor
    assert mean.shape == var.shape == ((5,) if d == 1 else (5, d))
    assert bool((var >= 1e-3).all()) and bool((var > 0).all())
    assert factory.spec["gaussian"] == {"variance": "learned"}


def test_targets_overrides_the_width_and_mse_mode_outputs_means_only():
    net = create_model("mlp", input_shape=(6,), num_classes=10, hidden=(8,))
    assert apply_gaussian(net, {"variance": "learned", "targets": 2})(torch.randn(4, 6)).shape == (4, 4)
    net = create_model("mlp", input_shape=(6,), num_classes=2, hidden=(8,))
    head = net.head
    assert apply_gaussian(net, "none").head is head  # already D outputs: the layer itself is kept
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [8]}, "gaussian": {"variance": "none", "targets": 1}},
                            input_shape=(6,), num_classes=10)
    out = factory()(torch.randn(4, 6))
    assert out.shape == (4, 1) and split_mean(out).shape == (4,)


def test_mean_rows_keep_the_builders_initialisation():
    net = create_model("mlp", input_shape=(6,), num_classes=2, hidden=(8,))
    w, b = net.head.weight.detach().clone(), net.head.bias.detach().clone()
    apply_gaussian(net, True)
    assert net.head.weight.shape == (4, 8)
    assert torch.equal(net.head.weight[:2], w) and torch.equal(net.head.bias[:2], b)


def test_split_gaussian_hand_values():
    out = torch.tensor([[1.0, -2.0, 0.0, math.log(math.e - 1)]])  # D = 2
    mean, var = split_gaussian(out, min_var=0.5)
    torch.testing.assert_close(mean, torch.tensor([[1.0, -2.0]]))
    torch.testing.assert_close(var, torch.tensor([[math.log(2) + 0.5, 1.5]]))
    m, v = split_gaussian(torch.zeros(3, 4, 2))  # stacked (M, B, 2) with D = 1 -> (M, B)
    assert m.shape == v.shape == (3, 4)
    with pytest.raises(DataError, match="even last axis"):
        split_gaussian(torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="min_var must be a number >= 0"):
        split_gaussian(torch.zeros(4, 2), min_var=-1)


def test_user_modules_with_a_final_linear_layer():
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)))
    parent, name, layer = final_linear(seq)
    assert parent is seq[2] and name == "2" and layer.out_features == 2
    assert apply_gaussian(seq, True)(torch.randn(5, 3)).shape == (5, 4)
    lone = apply_gaussian(nn.Linear(3, 1), True)
    assert isinstance(lone, nn.Linear) and lone.out_features == 2


def test_a_model_without_a_final_linear_layer_is_refused_with_its_name():
    class NoHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())

        def forward(self, x):
            return self.body(x)

    with pytest.raises(ConfigError, match="gaussian: model NoHead has no final linear layer"):
        apply_gaussian(NoHead(), True)
    with pytest.raises(ConfigError, match="model Sequential has no final linear layer"):
        apply_gaussian(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten()), True)


@pytest.mark.parametrize("value,match", [
    ("gauss", "variance must be one of learned, none"),
    ({"variance": "learned", "scale": 2}, "unknown key 'scale'; valid: variance, targets"),
    ({"targets": 0}, "targets must be an int >= 1"),
    (3, "gaussian must be true, 'learned', 'none'"),
])
def test_bad_values_name_the_valid_forms(value, match):
    with pytest.raises(ConfigError, match=match):
        check_gaussian(value)
    with pytest.raises(ConfigError, match=match):
        model_factory({"name": "mlp", "gaussian": value}, input_shape=(6,), num_classes=1)


def test_false_values_leave_the_model_unwrapped():
    assert check_gaussian(None) is None and check_gaussian(False) is None
    assert check_gaussian("None") == {"variance": "none"}
    assert model_factory({"name": "mlp", "gaussian": False}, input_shape=(6,), num_classes=1).label == "mlp"


@pytest.mark.parametrize("name,kwargs,shape", CASES)
def test_stacked_ensemble_equals_its_members(name, kwargs, shape, tmp_path):
    factory = model_factory({"name": name, "kwargs": kwargs, "gaussian": True}, input_shape=shape, num_classes=2)
    ens = Ensemble.from_factory(factory, seeds=[0, 1, 2])
    x = torch.randn(5, *shape)
    out = ens.eval()(x)
    ref = torch.stack([m.eval()(x) for m in ens.to_modules()])
    assert out.shape == (3, 5, 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    mean, var = split_gaussian(out)
    assert mean.shape == var.shape == (3, 5, 2) and bool((var > 1e-6).all())
    path = str(tmp_path / "g.safetensors")  # the spec rebuilds the wrapped architecture
    ens.save(path)
    torch.testing.assert_close(Ensemble.load(path).eval()(x), out)
