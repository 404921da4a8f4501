"""``wrn``: Wide ResNet (Zagoruyko & Komodakis) with pre-activation basic blocks."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Classifier, feature_dim
from .layers import (
    adaptive_avg_pool_nd,
    bn_nd,
    check_num_classes,
    check_probability,
    conv_nd,
    is_int,
    kaiming_init_,
    spatial_input,
)
from .registry import register_model

__all__ = ["wrn"]


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3 (stride), BN-ReLU-dropout-conv3x3, plus the input.

    Where the shape changes, the shortcut is a 1x1 conv applied to the *activated* input
    ``relu(bn1(x))``, as in the authors' code.
    """

    def __init__(self, dims: int, in_ch: int, out_ch: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = bn_nd(dims, in_ch)
        self.conv1 = conv_nd(dims, in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = bn_nd(dims, out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv_nd(dims, out_ch, out_ch, 3, padding=1, bias=False)
        self.shortcut = (
            None if stride == 1 and in_ch == out_ch else conv_nd(dims, in_ch, out_ch, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv1(act)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(act))


@register_model("wrn")
def wrn(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    depth: int = 28,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> Classifier:
    """Wide ResNet WRN-``depth``-``widen_factor`` with pre-activation basic blocks.

    A 3x3 stem conv to 16 channels, three stages of ``n = (depth - 4) / 6`` blocks with
    ``16k``, ``32k``, ``64k`` channels (``k = widen_factor``; strides 1, 2, 2), then
    BN-ReLU, global average pooling and a flatten; the head is ``Linear(64k,
    num_classes)``. Convolutions have no bias. WRN-28-10 has 36.5M parameters on
    CIFAR-10 (36,479,194); WRN-16-4 2.7M. A ``(C, L)`` ``input_shape`` builds the same
    network with 1-D layers.

    Args:
        input_shape: ``(C, H, W)`` images or ``(C, L)`` signals (default ``(3, 32, 32)``).
        num_classes: number of output classes (>= 1).
        depth: total depth, ``6n + 4`` with n >= 1: 10, 16, 22, 28, 34, 40, ...
            (default 28).
        widen_factor: channel multiplier ``k``, an int >= 1 (default 10).
        dropout: dropout probability between the two convolutions of every block, in
            [0, 1) (default 0; the paper uses 0.3 on CIFAR).

    Returns:
        A :class:`Classifier` mapping ``(B, *input_shape)`` to logits ``(B, num_classes)``.

    Raises:
        ConfigError: ``depth`` not of the form 6n+4, ``widen_factor`` < 1, ``dropout``
            outside [0, 1), an ``input_shape`` of another rank.

    Example:
        >>> net = create_model("wrn", input_shape=(3, 32, 32), num_classes=10, depth=16, widen_factor=4)

    Paper: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016.
    """
    shape, dims = spatial_input(input_shape, "wrn")
    num_classes = check_num_classes(num_classes, "wrn")
    if not is_int(depth) or depth < 10 or (depth - 4) % 6 != 0:
        raise ConfigError(f"wrn `depth` must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth!r}")
    if not is_int(widen_factor) or widen_factor < 1:
        raise ConfigError(f"wrn `widen_factor` must be an int >= 1, got {widen_factor!r}")
    dropout = check_probability(dropout, "dropout", "wrn")
    n, k = (int(depth) - 4) // 6, int(widen_factor)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = conv_nd(dims, shape[0], 16, 3, padding=1, bias=False)
    in_ch = 16
    for stage, (out_ch, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2)), start=1):
        blocks = []
        for i in range(n):
            blocks.append(WideBasic(dims, in_ch, out_ch, stride if i == 0 else 1, dropout))
            in_ch = out_ch
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
    layers["bn"] = bn_nd(dims, in_ch)
    layers["relu"] = nn.ReLU()
    layers["pool"] = adaptive_avg_pool_nd(dims, 1)
    layers["flatten"] = nn.Flatten()
    features = kaiming_init_(nn.Sequential(layers))
    return Classifier(features, feature_dim(features, shape), num_classes)
