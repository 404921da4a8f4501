"""``cnn2d``: a small plain CNN for small images (8x8 digits, 32x32 CIFAR) or 1-D signals."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ConfigError
from .base import Classifier, feature_dim
from .layers import bn_nd, check_num_classes, check_probability, conv_nd, halve, is_int, pool_nd, spatial_input
from .registry import register_model

__all__ = ["cnn2d"]


@register_model("cnn2d")
def cnn2d(
    input_shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 10,
    channels: Sequence[int] = (32, 64),
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> Classifier:
    """A small CNN: one 3x3 conv block per entry of ``channels``, then a linear head.

    Each block is conv 3x3 (padding 1) -> BatchNorm (optional) -> ReLU -> 2x2 max-pool;
    the pool is left out once the feature map is smaller than 2 in some dimension, so
    8x8 digits and 32x32 CIFAR images both work with any number of blocks. The map is
    flattened (with dropout) before the head. With the defaults on scikit-learn's digits
    the features are 64 x 2 x 2 = 256; on CIFAR 64 x 8 x 8 = 4096. A ``(C, L)``
    ``input_shape`` builds the same network with 1-D layers (kernel 3, pool 2).

    Args:
        input_shape: ``(C, H, W)`` images or ``(C, L)`` signals (default ``(1, 8, 8)``).
        num_classes: number of output classes (>= 1).
        channels: output channels of each conv block (default ``(32, 64)``; at least
            one block, each >= 1).
        batchnorm: BatchNorm after every convolution (default True; the convolutions
            then have no bias).
        dropout: dropout probability before the head, in [0, 1) (default 0).

    Returns:
        A :class:`Classifier` mapping ``(B, *input_shape)`` to logits ``(B, num_classes)``.

    Raises:
        ConfigError: an ``input_shape`` of another rank, empty or non-positive
            ``channels``, ``dropout`` outside [0, 1).

    Example:
        >>> net = create_model("cnn2d", input_shape=(1, 8, 8), num_classes=10)

    Paper: the conv-BN-ReLU-pool pattern of LeCun et al. 1998 and Ioffe & Szegedy 2015.
    """
    shape, dims = spatial_input(input_shape, "cnn2d")
    num_classes = check_num_classes(num_classes, "cnn2d")
    widths = tuple(channels) if isinstance(channels, Sequence) else ()
    if not widths or any(not is_int(c) or c < 1 for c in widths):
        raise ConfigError(f"cnn2d `channels` must be a non-empty sequence of ints >= 1, got {channels!r}")
    widths = tuple(int(c) for c in widths)
    dropout = check_probability(dropout, "dropout", "cnn2d")
    body: list[nn.Module] = []
    in_ch, spatial = shape[0], shape[1:]
    for width in widths:
        body.append(conv_nd(dims, in_ch, width, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            body.append(bn_nd(dims, width))
        body.append(nn.ReLU())
        if min(spatial) >= 2:
            body.append(pool_nd(dims, 2))
            spatial = halve(spatial)
        in_ch = width
    body.append(nn.Flatten())
    if dropout > 0:
        body.append(nn.Dropout(dropout))
    features = nn.Sequential(*body)
    return Classifier(features, feature_dim(features, shape), num_classes)
