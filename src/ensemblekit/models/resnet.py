"""``resnet``: pre-activation ResNet for CIFAR-sized inputs (the FGE repository's PreResNet)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Classifier, feature_dim
from .layers import (
    DropPath,
    adaptive_avg_pool_nd,
    bn_nd,
    check_num_classes,
    check_probability,
    conv_nd,
    drop_path_rates,
    is_int,
    kaiming_init_,
    spatial_input,
)
from .registry import register_model

__all__ = ["resnet", "valid_resnet_depths"]

_MIN_DEPTH, _MAX_DEPTH, _BOTTLENECK_FROM = 20, 164, 44


def valid_resnet_depths() -> list[int]:
    """Depths ``resnet`` accepts: 6n+2 below 44 (basic blocks), 9n+2 from 44 on (bottlenecks)."""
    basic = [d for d in range(_MIN_DEPTH, _BOTTLENECK_FROM) if (d - 2) % 6 == 0]
    bottleneck = [d for d in range(_BOTTLENECK_FROM, _MAX_DEPTH + 1) if (d - 2) % 9 == 0]
    return basic + bottleneck


class PreActBasic(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the (projected) input."""

    expansion = 1

    def __init__(self, dims: int, in_ch: int, planes: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.bn1 = bn_nd(dims, in_ch)
        self.conv1 = conv_nd(dims, in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = bn_nd(dims, planes)
        self.conv2 = conv_nd(dims, planes, planes, 3, padding=1, bias=False)
        self.drop_path = DropPath(drop_path)
        self.downsample = _projection(dims, in_ch, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.drop_path(out) + shortcut


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 to 4x planes, plus the input."""

    expansion = 4

    def __init__(self, dims: int, in_ch: int, planes: int, stride: int, drop_path: float) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = bn_nd(dims, in_ch)
        self.conv1 = conv_nd(dims, in_ch, planes, 1, bias=False)
        self.bn2 = bn_nd(dims, planes)
        self.conv2 = conv_nd(dims, planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = bn_nd(dims, planes)
        self.conv3 = conv_nd(dims, planes, out_ch, 1, bias=False)
        self.drop_path = DropPath(drop_path)
        self.downsample = _projection(dims, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.drop_path(out) + shortcut


def _projection(dims: int, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    # A bias-free 1x1 conv on the raw input, as in the FGE repository's PreResNet.
    if stride == 1 and in_ch == out_ch:
        return None
    return conv_nd(dims, in_ch, out_ch, 1, stride=stride, bias=False)


@register_model("resnet")
def resnet(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    depth: int = 20,
    width: int = 16,
    stochastic_depth: float = 0.0,
) -> Classifier:
    """Pre-activation ResNet, the CIFAR variant (the "PreResNet" of the FGE/SWA code).

    A 3x3 stem conv to ``width`` channels, three stages of ``n`` residual blocks with
    ``width``, ``2 * width``, ``4 * width`` planes (strides 1, 2, 2), then BN-ReLU, global
    average pooling and a flatten; the head is ``Linear(d, num_classes)``. Below depth 44
    the blocks are basic (two 3x3 convs, ``n = (depth - 2) / 6``); from 44 on they are
    bottlenecks (1x1, 3x3, 1x1 to 4x planes, ``n = (depth - 2) / 9``). Shortcuts are
    identities, or a bias-free 1x1 conv where the shape changes. PreResNet-20 (width 16)
    has 0.27M parameters on CIFAR-10, PreResNet-110 1.1M, PreResNet-164 1.7M. A
    ``(C, L)`` ``input_shape`` builds the same network with 1-D layers.

    Args:
        input_shape: ``(C, H, W)`` images or ``(C, L)`` signals (default ``(3, 32, 32)``).
        num_classes: number of output classes (>= 1).
        depth: 20, 26, 32 or 38 (basic blocks), or 9n+2 in 47..164 (bottlenecks:
            47, 56, ..., 110, ..., 164); default 20.
        width: channels of the stem and the first stage (default 16, >= 1).
        stochastic_depth: drop-path probability of the last block, in [0, 1); block
            ``l`` of ``L`` drops its residual branch per sample with probability
            ``stochastic_depth * l / L`` in training mode (kept branches are scaled by
            ``1 / (1 - p)``; evaluation is deterministic). Default 0 (off).

    Returns:
        A :class:`Classifier` mapping ``(B, *input_shape)`` to logits ``(B, num_classes)``.

    Raises:
        ConfigError: an invalid ``depth`` (the valid ones are listed), ``width`` < 1,
            ``stochastic_depth`` outside [0, 1), an ``input_shape`` of another rank.

    Example:
        >>> net = create_model("resnet", input_shape=(3, 32, 32), num_classes=10, depth=20)

    Paper: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016; stochastic
    depth: Huang et al., ECCV 2016.
    """
    shape, dims = spatial_input(input_shape, "resnet")
    num_classes = check_num_classes(num_classes, "resnet")
    if not is_int(depth) or depth not in valid_resnet_depths():
        raise ConfigError(
            f"resnet `depth` must be 6n+2 below {_BOTTLENECK_FROM} (basic blocks) or 9n+2 from "
            f"{_BOTTLENECK_FROM} to {_MAX_DEPTH} (bottleneck blocks), i.e. one of "
            f"{', '.join(map(str, valid_resnet_depths()))}; got {depth!r}"
        )
    if not is_int(width) or width < 1:
        raise ConfigError(f"resnet `width` must be an int >= 1, got {width!r}")
    stochastic_depth = check_probability(stochastic_depth, "stochastic_depth", "resnet")
    depth, width = int(depth), int(width)
    if depth < _BOTTLENECK_FROM:
        block, n = PreActBasic, (depth - 2) // 6
    else:
        block, n = PreActBottleneck, (depth - 2) // 9
    rates = iter(drop_path_rates(stochastic_depth, 3 * n))
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = conv_nd(dims, shape[0], width, 3, padding=1, bias=False)
    in_ch = width
    for stage, (planes, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2)), start=1):
        blocks = []
        for i in range(n):
            blocks.append(block(dims, in_ch, planes, stride if i == 0 else 1, next(rates)))
            in_ch = planes * block.expansion
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
    layers["bn"] = bn_nd(dims, in_ch)
    layers["relu"] = nn.ReLU()
    layers["pool"] = adaptive_avg_pool_nd(dims, 1)
    layers["flatten"] = nn.Flatten()
    features = kaiming_init_(nn.Sequential(layers))
    return Classifier(features, feature_dim(features, shape), num_classes)
