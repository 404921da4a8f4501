"""Stacked kernels compute exactly what vmap(functional_call) computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ensemblekit.ensemble import Ensemble
from ensemblekit.models import create_model
from ensemblekit.models.dropconnect import DropConnect
from ensemblekit.ensemble.stacked import compile_plan

M = 3


def _pair(factory) -> tuple[Ensemble, Ensemble]:
    """The same members twice: one on the stacked plan, one forced through vmap."""
    fast = Ensemble.from_factory(factory, seeds=list(range(M)))
    slow = fast.clone()
    assert fast.groups[0].plan is not None
    fast.groups[0].loop = slow.groups[0].loop = False  # the plan itself (not the CPU member loop) against vmap
    slow.groups[0].plan = None
    return fast, slow


def _custom() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.GELU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False), nn.BatchNorm2d(6, momentum=None),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5, affine=False), nn.Tanh(), nn.Linear(5, 3),
    )


CASES = {
    "mlp_bn": (lambda: create_model("mlp", input_shape=(1, 12), num_classes=4, hidden=(16, 8), batchnorm=True), (1, 12)),
    "cnn1d": (lambda: create_model("cnn1d", input_shape=(1, 40), num_classes=10, channels=8), (1, 40)),
    "cnn1d_nobn": (lambda: create_model("cnn1d", input_shape=(1, 40), num_classes=10, channels=8, batchnorm=False), (1, 40)),
    "cnn2d": (lambda: create_model("cnn2d", input_shape=(1, 8, 8), num_classes=10, channels=(4, 6)), (1, 8, 8)),
    "vgg11": (lambda: create_model("vgg", input_shape=(3, 8, 8), num_classes=10, depth=11, width=0.0625, hidden=16, dropout=0.0), (3, 8, 8)),
    "custom": (_custom, (2, 8, 8)),
    "resnet20": (lambda: create_model("resnet", input_shape=(3, 8, 8), num_classes=10, depth=20, width=4), (3, 8, 8)),
    "resnet47_bottleneck": (lambda: create_model("resnet", input_shape=(3, 8, 8), num_classes=10, depth=47, width=2), (3, 8, 8)),
    "resnet20_1d": (lambda: create_model("resnet", input_shape=(1, 16), num_classes=10, depth=20, width=4), (1, 16)),
    "wrn10_2": (lambda: create_model("wrn", input_shape=(3, 8, 8), num_classes=10, depth=10, widen_factor=2), (3, 8, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("per_member", [False, True])
def test_plan_matches_vmap_outputs_grads_and_bn_buffers(case: str, per_member: bool) -> None:
    factory, shape = CASES[case]
    torch.manual_seed(0)
    fast, slow = _pair(factory)
    x = torch.randn(M, 7, *shape) if per_member else torch.randn(7, *shape)
    for _ in range(2):  # two steps: running statistics and the momentum=None counter move
        out_f, out_s = fast(x, per_member=per_member), slow(x, per_member=per_member)
        torch.testing.assert_close(out_f, out_s, atol=1e-5, rtol=1e-5)
        w = torch.randn_like(out_f)
        gf = torch.autograd.grad((out_f * w).sum(), fast.parameters())
        gs = torch.autograd.grad((out_s * w).sum(), slow.parameters())
        for a, b in zip(gf, gs):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for k, v in slow.groups[0].buffers.items():
        torch.testing.assert_close(fast.groups[0].buffers[k], v, atol=1e-6, rtol=1e-6, msg=k)
    fast.eval(), slow.eval()
    torch.testing.assert_close(fast(x, per_member=per_member), slow(x, per_member=per_member), atol=1e-5, rtol=1e-5)


def test_plan_matches_each_member_run_alone() -> None:
    factory, shape = CASES["cnn1d"]
    ens = Ensemble.from_factory(factory, seeds=[0, 1])
    x = torch.randn(5, *shape)
    out = ens.eval()(x)
    for i in range(2):
        torch.testing.assert_close(out[i], ens.member(i).eval()(x), atol=1e-5, rtol=1e-5)


def test_dropout_masks_differ_between_members_for_a_shared_input() -> None:
    ens = Ensemble.from_modules([nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 4, bias=False)) for _ in range(2)]).train()
    assert ens.groups[0].plan is not None
    with torch.no_grad():
        for g in ens.groups[0].params.values():
            g.copy_(torch.eye(4).expand_as(g))
    out = ens(torch.ones(64, 4))
    assert not torch.equal(out[0], out[1])
    assert set(out.unique().tolist()) <= {0.0, 2.0}


def test_unsupported_layers_fall_back_to_vmap(monkeypatch: pytest.MonkeyPatch) -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * 2

    assert compile_plan(nn.Sequential(Custom())) is None
    assert compile_plan(create_model("wrn", input_shape=(3, 8, 8), num_classes=10, depth=10, widen_factor=1, dropout=0.2)) is not None
    assert compile_plan(nn.Sequential(DropConnect(nn.Linear(4, 2), p=0.1))) is None
    assert compile_plan(nn.Sequential(nn.Conv1d(1, 2, 3, padding="same"))) is None
    monkeypatch.setenv("ENSEMBLEKIT_STACKED", "0")
    assert compile_plan(nn.Sequential(nn.Linear(4, 2))) is None


def test_stochastic_depth_drops_whole_branches_per_member_and_sample() -> None:
    """With drop-path the plan draws its own masks (not vmap's), so check the rule itself:
    every (member, sample) branch is either kept (scaled by 1/(1-p)) or dropped entirely."""
    torch.manual_seed(0)
    make = lambda: create_model("resnet", input_shape=(3, 8, 8), num_classes=10, depth=20, width=4, stochastic_depth=0.5)
    ens = Ensemble.from_factory(make, seeds=[0, 1])
    plan = ens.groups[0].plan
    assert plan is not None
    from ensemblekit.ensemble.stacked import _State, _drop_path, CHAN
    from ensemblekit.models.layers import DropPath
    mod = DropPath(0.5).train()
    x = torch.ones(64, 2 * 3, 4, 4)
    out = _drop_path(mod)(_State(x, CHAN, 2), {}, {}).x.reshape(64, 2, -1)
    per = out[..., 0]
    assert set(per.unique().tolist()) == {0.0, 2.0}
    assert (out == per.unsqueeze(-1)).all()  # a whole branch, not single activations
    assert not torch.equal(per[:, 0], per[:, 1])  # members draw their own masks
    mod.eval()
    assert torch.equal(_drop_path(mod)(_State(x, CHAN, 2), {}, {}).x, x)


def test_member_loop_matches_vmap_and_is_the_cpu_default_for_2d_convolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    factory, shape = CASES["resnet20"]
    torch.manual_seed(0)
    loop = Ensemble.from_factory(factory, seeds=list(range(M))).train()
    assert loop.groups[0].loop  # Conv2d on CPU
    assert not Ensemble.from_factory(CASES["cnn1d"][0], seeds=[0, 1]).groups[0].loop  # 1-D: the grouped plan
    slow = loop.clone().train()
    slow.groups[0].loop, slow.groups[0].plan = False, None
    x = torch.randn(5, *shape)
    out_l, out_s = loop(x), slow(x)
    torch.testing.assert_close(out_l, out_s, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out_l)
    for a, b in zip(torch.autograd.grad((out_l * w).sum(), loop.parameters()), torch.autograd.grad((out_s * w).sum(), slow.parameters())):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for k, v in slow.groups[0].buffers.items():
        torch.testing.assert_close(loop.groups[0].buffers[k], v, atol=1e-6, rtol=1e-6, msg=k)
    monkeypatch.setenv("ENSEMBLEKIT_STACKED", "plan")
    assert not Ensemble.from_factory(factory, seeds=[0, 1]).groups[0].loop
