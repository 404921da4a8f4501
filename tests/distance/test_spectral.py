"""The spectral bound: the effective weight's true norm against the coefficient, layers below the
bound untouched, convolutions by their reshaped kernel, the wrapper's choices and refusals, and
the bound surviving stacked training (vmap over members, buffers updated per member)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import ensemblekit as ek
from ensemblekit import Ensemble
from ensemblekit.distance.spectral import SpectralBound, apply_spectral_norm, check_spectral_norm, spectral_bound
from ensemblekit.errors import ConfigError
from ensemblekit.models import model_factory
from ensemblekit.training.engine import Trainer


def _norm(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1).double(), 2))


def _scaled(layer: nn.Module, norm: float) -> nn.Module:
    with torch.no_grad():
        layer.weight.mul_(norm / _norm(layer.weight))
    return layer


@pytest.mark.parametrize("make", [lambda: nn.Linear(20, 30), lambda: nn.Conv1d(3, 6, 5), lambda: nn.Conv2d(3, 8, 3)],
                         ids=["linear", "conv1d", "conv2d"])
def test_the_effective_weight_is_bounded_after_power_iterations(make):
    c = 0.8
    torch.manual_seed(0)  # built here, not at collection: the same weights whatever ran before
    layer = make()
    spectral_bound(_scaled(layer, 5.0), coeff=c)
    for _ in range(100):  # training-mode forwards, one power iteration each
        layer.weight
    layer.eval()
    assert _norm(layer.weight) <= c * (1 + 1e-3)
    assert _norm(layer.weight) >= c * (1 - 1e-3)  # scaled to the bound, not below it
    u = layer.parametrizations.weight[0].u.clone()
    first = layer.weight.detach().clone()
    torch.testing.assert_close(layer.weight, first, rtol=0, atol=0)  # eval: the stored u, no update
    assert torch.equal(layer.parametrizations.weight[0].u, u)


def test_a_layer_below_the_bound_is_unchanged():
    layer = _scaled(nn.Linear(10, 7), 0.5)
    before = layer.weight.detach().clone()
    spectral_bound(layer, coeff=1.0)
    assert torch.equal(layer.weight, before)
    layer.eval()
    assert torch.equal(layer.weight, before)
    x = torch.randn(4, 10)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, before, layer.bias))


def test_a_conv_kernel_is_bounded_as_its_reshaped_matrix():
    conv = spectral_bound(_scaled(nn.Conv2d(4, 5, 3), 3.0), coeff=1.5, power_iterations=5)
    for _ in range(10):
        conv(torch.randn(2, 4, 6, 6))
    conv.eval()
    assert _norm(conv.weight.reshape(5, 4 * 9)) == pytest.approx(1.5, rel=1e-3)


def test_the_gradient_flows_through_the_bound():
    layer = spectral_bound(_scaled(nn.Linear(6, 4), 4.0), coeff=1.0)
    layer(torch.randn(3, 6)).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_the_spec_values():
    assert check_spectral_norm(True) == {"coeff": 0.95, "power_iterations": 1}
    assert check_spectral_norm({}) == {"coeff": 0.95, "power_iterations": 1}
    assert check_spectral_norm(3) == {"coeff": 3.0, "power_iterations": 1}
    assert check_spectral_norm({"coeff": 6, "power_iterations": 2}) == {"coeff": 6.0, "power_iterations": 2}
    assert check_spectral_norm(None) is None and check_spectral_norm(False) is None and check_spectral_norm(0) is None
    for bad in (-1, "x", {"coeff": 0}, {"power_iterations": 0}, {"bound": 2}):
        with pytest.raises(ConfigError):
            check_spectral_norm(bad)


def test_the_wrapper_bounds_hidden_layers_only():
    net = ek.create_model("cnn1d", input_shape=(1, 20), num_classes=3, channels=4, layers=2)
    apply_spectral_norm(net, {"coeff": 2.0})
    bounded = [n for n, m in net.named_modules() if parametrize.is_parametrized(m)]
    assert bounded == ["features.0", "features.3"]  # the convolutions; BatchNorm and the head are left
    assert not parametrize.is_parametrized(net.head)
    assert isinstance(net.features[1], nn.BatchNorm1d) and not parametrize.is_parametrized(net.features[1])
    apply_spectral_norm(net, 2.0)  # a second application changes nothing
    assert len(net.features[0].parametrizations.weight) == 1


def test_the_wrapper_names_every_layer_it_cannot_convert_in_one_error():
    net = nn.Sequential(nn.Linear(4, 8), nn.LSTM(8, 8), nn.LayerNorm(8), nn.PReLU(), nn.Embedding(3, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError) as err:
        apply_spectral_norm(net, True)
    msg = str(err.value)
    assert msg.startswith("spectral_norm cannot convert: 1 (LSTM), 3 (PReLU), 4 (Embedding);")
    assert "\n" not in msg and "LayerNorm" not in msg
    assert not parametrize.is_parametrized(net[0])  # nothing converted when refused


def test_the_bound_survives_stacked_training_and_each_member_keeps_its_vector(blobs):
    c = 0.7
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [16, 16]}, "spectral_norm": c}, input_shape=(8,), num_classes=3)
    ens = Ensemble.from_factory(factory, members=2)
    assert ens.num_members == 2 and len(ens.groups) == 1  # stacked, one group
    key = "features.1.parametrizations.weight.0.u"
    u0 = ens.groups[0].buffers[key].clone()
    assert not torch.allclose(u0[0], u0[1])
    trained = Trainer(ens, blobs, {"epochs": 3, "progress": False, "optimizer": {"name": "adam", "lr": 0.05}}).fit()
    group = trained.groups[0]
    assert not torch.allclose(group.buffers[key], u0)  # updated in training mode, in the stacked storage
    for i in range(2):
        member = trained.member(i).eval()
        # one power iteration per step lags a fast-moving weight (lr 0.05; up to ~10% here, as Miyato et al.'s
        # estimate does); it converges once the weight stops moving (forwards in training mode, no step)
        member.train()
        for _ in range(30):
            member(blobs.train.x[:4])
        member.eval()
        for name in ("1", "3"):
            w = member.features[int(name)].weight
            assert _norm(w) <= c * (1 + 1e-3), (i, name, _norm(w))
        assert _norm(member.head.weight) > 0  # the head is free


def test_a_stacked_training_forward_updates_each_member_like_its_own_module():
    factory = model_factory({"name": "cnn1d", "kwargs": {"channels": 4, "layers": 2, "batchnorm": False}, "spectral_norm": 0.5},
                            input_shape=(1, 20), num_classes=3)
    ens = Ensemble.from_factory(factory, members=3)
    alone = [ens.member(i).train() for i in range(3)]
    x = torch.randn(5, 1, 20)
    out = ens.train()(x)
    for i, module in enumerate(alone):
        torch.testing.assert_close(out[i], module(x), rtol=1e-5, atol=1e-6)
        for name, buf in module.named_buffers():
            torch.testing.assert_close(ens.groups[0].buffers[name][i], buf)


def test_a_method_trains_a_bounded_model(blobs):
    spec = {"name": "mlp", "kwargs": {"hidden": [16], "batchnorm": True}, "spectral_norm": {"coeff": 1.0}}
    method = ek.create_method("independent", model=spec, members=2, epochs=2, progress=False).fit(blobs)
    for i in range(2):
        assert _norm(method.ensemble_.member(i).eval().features[1].weight) <= 1.0 + 1e-3
    assert isinstance(SpectralBound(2.0).coeff, float)


@pytest.mark.parametrize("members", [1, 2])
def test_flops_are_counted_through_a_spectral_bound(members):
    """FlopCounterMode (the cost columns) hooks every module's inputs; a one-member ensemble's parameter
    views taken under no_grad must not reach a parametrisation as tensors that want a graph."""
    from ensemblekit.training.flops import inference_flops

    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [16]}, "spectral_norm": 1.0}, input_shape=(8,), num_classes=3)
    plain = model_factory({"name": "mlp", "kwargs": {"hidden": [16]}}, input_shape=(8,), num_classes=3)
    x = torch.randn(4, 8)
    sn, ref = inference_flops(Ensemble.from_factory(factory, members=members), x), inference_flops(Ensemble.from_factory(plain, members=members), x)
    assert sn >= ref > 0  # the same layers (plus the bound's matrix-vector product where the counter sees it, under vmap)
