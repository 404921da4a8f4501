"""DropConnect: eval == wrapped layer, masks in training, per-member masks under vmap, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from ensemblekit.errors import ConfigError
from ensemblekit.models.dropconnect import DropConnect, apply_dropconnect


def small_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8, 3))


def test_eval_mode_equals_wrapped_module():
    for layer, x in [(nn.Linear(6, 3), torch.randn(5, 6)), (nn.Conv1d(2, 3, 3), torch.randn(5, 2, 9)),
                     (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), torch.randn(5, 2, 6, 6))]:
        wrapped = DropConnect(copy.deepcopy(layer), p=0.5).eval()
        assert torch.equal(wrapped(x), layer(x))


def test_training_masks_about_half_and_rescales():
    n = 64
    linear = nn.Linear(n, n, bias=False)
    layer = DropConnect(linear, p=0.5).train()
    effective = layer(torch.eye(n)).T  # row i of eye(n) @ W_eff^T is column i: W_eff itself
    dropped = effective == 0
    assert 0.45 < dropped.float().mean() < 0.55
    assert torch.allclose(effective[~dropped], 2 * linear.weight[~dropped])
    assert not torch.equal(layer(torch.eye(n)), layer(torch.eye(n)))  # a new mask every forward
    mean = torch.stack([layer(torch.eye(n)).T for _ in range(400)]).mean(0)
    assert (mean - linear.weight).abs().mean() < 0.1 * linear.weight.abs().mean()


def test_training_with_conv_keeps_parameters():
    conv = nn.Conv2d(2, 3, 3)
    before = conv.weight.detach().clone()
    layer = DropConnect(conv, p=0.3).train()
    out = layer(torch.randn(2, 2, 5, 5))
    out.sum().backward()
    assert out.shape == (2, 3, 3, 3)
    assert torch.equal(conv.weight, before) and conv.weight.grad is not None


def test_parameter_names_and_recursion():
    net = apply_dropconnect(small_net(), p=0.2)
    assert [n for n, _ in net.named_parameters()] == ["0.module.weight", "0.module.bias", "3.module.weight", "3.module.bias"]
    assert apply_dropconnect(net, p=0.2) is net  # already wrapped layers are left alone
    assert [n for n, _ in net.named_parameters()][0] == "0.module.weight"
    only_linear = apply_dropconnect(small_net(), p=0.2, types=nn.Linear)
    assert isinstance(only_linear[0], nn.Conv1d) and isinstance(only_linear[3], DropConnect)
    assert isinstance(apply_dropconnect(nn.Linear(2, 2), p=0.1), DropConnect)


def test_vmap_members_get_their_own_masks():
    net = apply_dropconnect(small_net(), p=0.5)
    params, buffers = stack_module_state([net, copy.deepcopy(net)])  # two identical members
    base = copy.deepcopy(net).to("meta")
    x = torch.randn(5, 1, 8)

    def run(p, b):
        return functional_call(base, (p, b), (x,))

    out = torch.vmap(run, randomness="different")(params, buffers)
    assert out.shape == (2, 5, 3)
    assert not torch.allclose(out[0], out[1])
    base.eval()
    out = torch.vmap(run, randomness="different")(params, buffers)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], net.eval()(x), atol=1e-6)


def test_errors():
    with pytest.raises(ConfigError, match=r"p must be a number in \[0, 1\), got 1.0"):
        apply_dropconnect(small_net(), p=1.0)
    with pytest.raises(ConfigError, match=r"got -0.1"):
        DropConnect(nn.Linear(2, 2), p=-0.1)
    with pytest.raises(ConfigError, match="DropConnect wraps Linear, Conv1d, Conv2d, Conv3d; got ReLU"):
        DropConnect(nn.ReLU())
    with pytest.raises(ConfigError, match="types must be subclasses"):
        apply_dropconnect(small_net(), p=0.1, types=(nn.ReLU,))
