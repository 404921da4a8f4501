"""The registered model zoo: shapes for 1-D and 2-D inputs, parameter counts, errors, vmap == loop."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from ensemblekit.errors import ConfigError
from ensemblekit.models import Classifier, create_model, model_factory
from ensemblekit.models.layers import DropPath, drop_path_rates

# Small configurations that keep every test fast on 2 CPU cores.
SMALL = {
    "cnn2d": dict(name="cnn2d", channels=(4, 8)),
    "resnet": dict(name="resnet", depth=20, width=4),
    "resnet-bottleneck": dict(name="resnet", depth=47, width=2),
    "vgg": dict(name="vgg", depth=11, width=0.0625, hidden=16),
    "vgg-nobn": dict(name="vgg", depth=16, width=0.0625, hidden=16, batchnorm=False),
    "wrn": dict(name="wrn", depth=10, widen_factor=1),
}
SHAPES = [(1, 40), (1, 8, 8), (3, 32, 32)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny convolutions gain nothing from intra-op threads, and on a busy 2-core machine
    # OpenMP's waiting threads made this module 100x slower (13 s instead of 0.06 s for
    # one small ResNet); restore the setting for the modules that run after this one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(key: str, input_shape=(1, 8, 8), num_classes: int = 10, **extra) -> Classifier:
    kwargs = dict(SMALL[key])
    name = kwargs.pop("name")
    kwargs.update(extra)
    return create_model(name, input_shape=input_shape, num_classes=num_classes, **kwargs)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("key", list(SMALL))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shape_1d_and_2d(key, shape):
    torch.manual_seed(0)
    net = build(key, input_shape=shape, num_classes=7)
    assert isinstance(net, Classifier) and isinstance(net.head, nn.Linear)
    assert net.head.in_features == net.feature_dim and net.head.out_features == 7
    x = torch.randn(2, *shape)
    net.train()
    out_train = net(x)
    net.eval()
    with torch.no_grad():
        out = net(x)
        feats = net.features(x)
    assert out.shape == (2, 7) and out_train.shape == (2, 7)
    assert feats.shape == (2, net.feature_dim)
    assert torch.isfinite(out).all()
    conv = nn.Conv1d if len(shape) == 2 else nn.Conv2d
    wrong = nn.Conv2d if len(shape) == 2 else nn.Conv1d
    kinds = {type(m) for m in net.modules()}
    assert conv in kinds and wrong not in kinds


def test_factory_spec_passes_input_shape_as_list():
    factory = model_factory({"name": "resnet", "kwargs": {"width": 4}}, input_shape=(1, 8, 8), num_classes=3)
    assert factory.spec["kwargs"]["input_shape"] == [1, 8, 8]
    assert factory()(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_cnn2d_pools_only_while_the_map_allows():
    # digits: 8 -> 4 -> 2 -> 1 then no more pools; 64 channels x 1 x 1.
    net = create_model("cnn2d", input_shape=(1, 8, 8), num_classes=10, channels=(8, 16, 32, 64, 64))
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3
    assert net.feature_dim == 64
    default = create_model("cnn2d", input_shape=(1, 8, 8), num_classes=10)
    assert default.feature_dim == 64 * 2 * 2
    assert create_model("cnn2d", input_shape=(3, 32, 32), num_classes=10).feature_dim == 64 * 8 * 8


def test_vgg_pools_only_while_the_map_allows_and_head_is_last_linear():
    net = create_model("vgg", input_shape=(1, 8, 8), num_classes=10, depth=16, width=0.125, hidden=16)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3  # 8 -> 4 -> 2 -> 1
    linears = [m for m in net.features.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 16)]
    assert sum(isinstance(m, nn.Dropout) for m in net.features.modules()) == 2
    assert net.head.in_features == 16
    bare = create_model("vgg", input_shape=(3, 32, 32), num_classes=10, width=0.125, hidden=0, dropout=0.0)
    assert not any(isinstance(m, (nn.Linear, nn.Dropout)) for m in bare.features.modules())
    assert bare.feature_dim == 64


# ---------------------------------------------------------------- parameter counts


def _conv(i, o, k, dims=2, bias=False):
    return i * o * k**dims + (o if bias else 0)


def _bn(c):
    return 2 * c


def _linear(i, o):
    return i * o + o


def preresnet_count(depth, width=16, in_ch=3, classes=10, dims=2):
    """Counted from the FGE PreResNet description, block by block."""
    bottleneck = depth >= 44
    n, exp = ((depth - 2) // 9, 4) if bottleneck else ((depth - 2) // 6, 1)
    total, inp = _conv(in_ch, width, 3, dims), width
    for stage, planes in enumerate((width, 2 * width, 4 * width)):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            out = planes * exp
            if bottleneck:
                total += _bn(inp) + _conv(inp, planes, 1, dims) + _bn(planes) + _conv(planes, planes, 3, dims)
                total += _bn(planes) + _conv(planes, out, 1, dims)
            else:
                total += _bn(inp) + _conv(inp, planes, 3, dims) + _bn(planes) + _conv(planes, planes, 3, dims)
            if stride != 1 or inp != out:
                total += _conv(inp, out, 1, dims)
            inp = out
    return total + _bn(inp) + _linear(inp, classes)


def wrn_count(depth, k, in_ch=3, classes=10, dims=2):
    n = (depth - 4) // 6
    total, inp = _conv(in_ch, 16, 3, dims), 16
    for out in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(inp) + _conv(inp, out, 3, dims) + _bn(out) + _conv(out, out, 3, dims)
            if inp != out:
                total += _conv(inp, out, 1, dims)
            inp = out
    return total + _bn(inp) + _linear(inp, classes)


def vgg_count(widths, batchnorm, in_ch=3, classes=10, hidden=512, flat=None):
    total, inp = 0, in_ch
    for w in widths:
        total += _conv(inp, w, 3, bias=True) + (_bn(w) if batchnorm else 0)
        inp = w
    flat = inp if flat is None else flat
    return total + _linear(flat, hidden) + _linear(hidden, hidden) + _linear(hidden, classes)


VGG11 = [64, 128, 256, 256, 512, 512, 512, 512]
VGG16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def test_preresnet20_count_matches_hand_count_and_paper():
    net = create_model("resnet", input_shape=(3, 32, 32), num_classes=10, depth=20)
    # By hand: stem 432, stages 14,016 + 51,552 + 205,504, final BN 128, head 650.
    assert n_params(net) == 272_282 == preresnet_count(20)
    assert round(n_params(net) / 1e6, 2) == 0.27  # He et al. 2016: 0.27M


def test_preresnet164_bottleneck_count():
    net = create_model("resnet", input_shape=(3, 32, 32), num_classes=10, depth=164)
    assert n_params(net) == preresnet_count(164)
    assert round(n_params(net) / 1e6, 1) == 1.7  # He et al. 2016 (identity mappings): 1.7M
    assert net.feature_dim == 256


def test_preresnet_1d_count_uses_1d_kernels():
    net = create_model("resnet", input_shape=(1, 40), num_classes=10, depth=20, width=8)
    assert n_params(net) == preresnet_count(20, width=8, in_ch=1, dims=1)


def test_wrn_28_10_count_matches_paper():
    net = create_model("wrn", input_shape=(3, 32, 32), num_classes=10, depth=28, widen_factor=10)
    assert n_params(net) == 36_479_194 == wrn_count(28, 10)  # Zagoruyko & Komodakis: 36.5M
    assert net.feature_dim == 640


def test_wrn_small_counts():
    assert n_params(create_model("wrn", input_shape=(3, 32, 32), num_classes=10, depth=16, widen_factor=4)) == (
        wrn_count(16, 4)
    )
    assert n_params(create_model("wrn", input_shape=(1, 40), num_classes=5, depth=10, widen_factor=2)) == (
        wrn_count(10, 2, in_ch=1, classes=5, dims=1)
    )


def test_vgg_counts():
    vgg16 = create_model("vgg", input_shape=(3, 32, 32), num_classes=10, depth=16, batchnorm=False)
    # convs 14,714,688 + classifier 262,656 + 262,656 + 5,130 (the FGE repository's VGG16).
    assert n_params(vgg16) == 15_245_130 == vgg_count(VGG16, batchnorm=False)
    vgg16bn = create_model("vgg", input_shape=(3, 32, 32), num_classes=10, depth=16)
    assert n_params(vgg16bn) == 15_253_578 == vgg_count(VGG16, batchnorm=True)
    vgg11 = create_model("vgg", input_shape=(3, 32, 32), num_classes=100, depth=11, batchnorm=False)
    assert n_params(vgg11) == vgg_count(VGG11, batchnorm=False, classes=100)
    # width multiplier: 16..128 channels, hidden layers keep their own width.
    quarter = create_model("vgg", input_shape=(3, 32, 32), num_classes=10, depth=11, width=0.25, hidden=32)
    assert n_params(quarter) == vgg_count([w // 4 for w in VGG11], batchnorm=True, hidden=32)


def test_cnn2d_count():
    net = create_model("cnn2d", input_shape=(1, 8, 8), num_classes=10)
    expected = _conv(1, 32, 3) + _bn(32) + _conv(32, 64, 3) + _bn(64) + _linear(64 * 2 * 2, 10)
    assert n_params(net) == expected
    plain = create_model("cnn2d", input_shape=(1, 40), num_classes=10, channels=(8,), batchnorm=False)
    assert n_params(plain) == _conv(1, 8, 3, dims=1, bias=True) + _linear(8 * 20, 10)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet", dict(depth=44), r"resnet `depth` must be .*20, 26, 32, 38, 47, 56, .*164; got 44"),
        ("resnet", dict(depth=14), r"`depth`.*got 14"),
        ("resnet", dict(depth=173), r"`depth`.*got 173"),
        ("resnet", dict(depth=20.0), r"`depth`.*got 20.0"),
        ("resnet", dict(width=0), r"resnet `width` must be an int >= 1, got 0"),
        ("resnet", dict(stochastic_depth=1.0), r"resnet `stochastic_depth` must be in \[0, 1\), got 1.0"),
        ("wrn", dict(depth=27), r"wrn `depth` must be 6n\+4 with n >= 1 \(10, 16, 22, 28.*got 27"),
        ("wrn", dict(depth=4), r"wrn `depth`.*got 4"),
        ("wrn", dict(widen_factor=0), r"wrn `widen_factor` must be an int >= 1, got 0"),
        ("wrn", dict(dropout=-0.1), r"wrn `dropout` must be in \[0, 1\), got -0.1"),
        ("vgg", dict(depth=12), r"vgg `depth` must be one of 11, 13, 16, 19, got 12"),
        ("vgg", dict(width=0), r"vgg `width` must be a number > 0, got 0"),
        ("vgg", dict(hidden=-1), r"vgg `hidden` must be an int >= 0, got -1"),
        ("vgg", dict(dropout=1.0), r"vgg `dropout` must be in \[0, 1\), got 1.0"),
        ("cnn2d", dict(channels=()), r"cnn2d `channels` must be a non-empty sequence of ints >= 1, got \(\)"),
        ("cnn2d", dict(channels=32), r"cnn2d `channels`.*got 32"),
    ],
)
def test_invalid_arguments_raise_config_error(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model(name, input_shape=(3, 32, 32), num_classes=10, **kwargs)


@pytest.mark.parametrize("name", ["cnn2d", "resnet", "vgg", "wrn"])
@pytest.mark.parametrize("shape", [(40,), (1, 1, 8, 8)])
def test_unsupported_input_rank(name, shape):
    match = rf"{name} `input_shape` must be \(channels, length\) or .*got {re.escape(str(shape))}"
    with pytest.raises(ConfigError, match=match):
        create_model(name, input_shape=shape, num_classes=10)


@pytest.mark.parametrize("name", ["resnet", "wrn"])
def test_num_classes_validated(name):
    with pytest.raises(ConfigError, match=rf"{name} `num_classes` must be an int >= 1, got 0"):
        create_model(name, input_shape=(1, 8, 8), num_classes=0)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown model 'nonexistent'.*valid: cnn1d, cnn2d, darts, mlp, resnet, vgg, wrn"):
        create_model("nonexistent")
    with pytest.raises(ConfigError, match=r"did you mean 'resnet'"):
        create_model("resnt")


# ---------------------------------------------------------------- stochastic depth


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_training():
    torch.manual_seed(0)
    layer = DropPath(0.25)
    x = torch.randn(4000, 3, 5)
    layer.eval()
    assert layer(x) is x
    layer.train()
    y = layer(x)
    ratio = y / x
    dropped = (ratio == 0).all(dim=(1, 2))
    kept = torch.isclose(ratio, torch.tensor(1 / 0.75)).all(dim=(1, 2))
    assert (dropped | kept).all()  # a whole sample's branch, scaled by 1 / keep
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert DropPath(0.0).train()(x) is x


def test_drop_path_rates_increase_linearly():
    assert drop_path_rates(0.5, 4) == [0.125, 0.25, 0.375, 0.5]
    net = create_model("resnet", input_shape=(1, 8, 8), num_classes=3, depth=20, width=4, stochastic_depth=0.3)
    rates = [m.p for m in net.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.3 * (i + 1) / 9 for i in range(9)])


def test_resnet_stochastic_depth_eval_identity_training_drops():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    sd = create_model("resnet", input_shape=(1, 8, 8), num_classes=3, depth=20, width=4, stochastic_depth=0.5)
    plain = create_model("resnet", input_shape=(1, 8, 8), num_classes=3, depth=20, width=4)
    plain.load_state_dict(sd.state_dict())
    sd.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(sd(x), plain(x), rtol=0, atol=0)
        # Training mode: batch statistics are deterministic, so only drop-path can differ.
        sd.train()
        plain.train()
        torch.manual_seed(1)
        a = sd(x)
        torch.manual_seed(2)
        b = sd(x)
        assert not torch.allclose(a, b)
        torch.testing.assert_close(plain(x), plain(x))


# ---------------------------------------------------------------- vmap over stacked members


def _members(key, shape, m=3, **extra):
    members = []
    for seed in range(m):
        torch.manual_seed(seed)
        net = build(key, input_shape=shape, num_classes=5, **extra)
        with torch.no_grad():  # per-member BatchNorm state, so the eval check is not trivial
            for mod in net.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.running_mean.normal_(0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0, 0.1)
        members.append(net)
    return members


def _vmapped(members, randomness="error"):
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    base.train(members[0].training)

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    return torch.vmap(forward, in_dims=(0, 0, None), randomness=randomness), params, buffers


@pytest.mark.parametrize("key", list(SMALL))
@pytest.mark.parametrize("shape", [(1, 40), (3, 8, 8)], ids=["1d", "2d"])
def test_vmap_matches_loop_in_eval(key, shape):
    members = _members(key, shape, stochastic_depth=0.5) if key == "resnet" else _members(key, shape)
    for net in members:
        net.eval()
    fn, params, buffers = _vmapped(members)
    x = torch.randn(4, *shape)
    with torch.no_grad():
        out = fn(params, buffers, x)
        loop = torch.stack([net(x) for net in members])
    assert out.shape == (3, 4, 5)
    torch.testing.assert_close(out, loop, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ["cnn2d", "resnet-bottleneck", "vgg", "wrn"])
def test_vmap_matches_loop_in_training_with_batchnorm_updates(key):
    shape = (3, 8, 8)
    members = _members(key, shape, dropout=0.0) if key in ("vgg", "cnn2d", "wrn") else _members(key, shape)
    fn, params, buffers = _vmapped(members)
    x = torch.randn(6, *shape)
    out = fn(params, buffers, x)
    loop = torch.stack([net(x) for net in members])  # updates each member's own statistics
    torch.testing.assert_close(out, loop, rtol=1e-5, atol=1e-5)
    for name, stacked in buffers.items():
        expected = torch.stack([dict(net.named_buffers())[name] for net in members])
        torch.testing.assert_close(stacked, expected, rtol=1e-5, atol=1e-6)
    out.square().mean().backward()  # gradients flow to the stacked parameters
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())


@pytest.mark.parametrize(
    "key, extra",
    [
        ("resnet", dict(stochastic_depth=0.5)),
        ("wrn", dict(dropout=0.5)),
        ("vgg", dict(dropout=0.5)),
        ("cnn2d", dict(dropout=0.5)),
    ],
)
def test_random_layers_draw_per_member_under_vmap(key, extra):
    torch.manual_seed(0)
    net = build(key, input_shape=(1, 8, 8), num_classes=5, **extra)
    members = [copy.deepcopy(net) for _ in range(3)]  # identical weights
    fn, params, buffers = _vmapped(members, randomness="different")
    with torch.no_grad():
        out = fn(params, buffers, torch.randn(8, 1, 8, 8))
    assert out.shape == (3, 8, 5)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
