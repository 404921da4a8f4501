"""``vgg``: VGG for CIFAR-sized inputs, as in the FGE/SWA repositories."""

from __future__ import annotations

import numbers
from typing import Sequence

from torch import nn

from ..errors import ConfigError
from .base import Classifier, feature_dim
from .layers import (
    bn_nd,
    check_num_classes,
    check_probability,
    conv_nd,
    halve,
    is_int,
    kaiming_init_,
    pool_nd,
    spatial_input,
)
from .registry import register_model

__all__ = ["vgg", "VGG_CONFIGS"]

# Simonyan & Zisserman's configurations A, B, D, E: conv widths, with a max-pool after each stage.
VGG_CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


@register_model("vgg")
def vgg(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    depth: int = 16,
    batchnorm: bool = True,
    width: float = 1.0,
    hidden: int = 512,
    dropout: float = 0.5,
) -> Classifier:
    """VGG with the CIFAR classifier of the FGE repository (dropout, 512, 512, head).

    Five stages of 3x3 convolutions (padding 1, with bias) -> BatchNorm (optional) ->
    ReLU, each followed by a 2x2 max-pool while the feature map is at least 2 in every
    dimension (so 32x32 ends at 1x1 as in the original, and 8x8 digits still work).
    The map is flattened, then ``Dropout -> Linear(d, hidden) -> ReLU -> Dropout ->
    Linear(hidden, hidden) -> ReLU``; these hidden layers live in ``features`` so that
    ``head`` is the final ``Linear(hidden, num_classes)``. On CIFAR-10, VGG-16 without
    BatchNorm has 15.2M parameters. A ``(C, L)`` ``input_shape`` builds the same network
    with 1-D layers.

    Args:
        input_shape: ``(C, H, W)`` images or ``(C, L)`` signals (default ``(3, 32, 32)``).
        num_classes: number of output classes (>= 1).
        depth: 11, 13, 16 or 19 (configurations A, B, D, E; default 16).
        batchnorm: BatchNorm after every convolution (default True; the FGE repository
            has both ``VGG16`` and ``VGG16BN``).
        width: multiplier of the channel list 64..512, > 0 (default 1.0; e.g. 0.25 gives
            16..128 for quick CPU runs); every layer keeps at least one channel.
        hidden: width of the two hidden dense layers (default 512, >= 0; 0 leaves them
            out, so the head sits on the flattened conv features).
        dropout: dropout probability before each hidden dense layer, in [0, 1)
            (default 0.5).

    Returns:
        A :class:`Classifier` mapping ``(B, *input_shape)`` to logits ``(B, num_classes)``.

    Raises:
        ConfigError: ``depth`` not in 11, 13, 16, 19; ``width`` <= 0; ``hidden`` < 0;
            ``dropout`` outside [0, 1); an ``input_shape`` of another rank.

    Example:
        >>> net = create_model("vgg", input_shape=(3, 32, 32), num_classes=10, depth=16)

    Paper: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015; the CIFAR classifier of Garipov et al., NeurIPS 2018 (FGE).
    """
    shape, dims = spatial_input(input_shape, "vgg")
    num_classes = check_num_classes(num_classes, "vgg")
    if not is_int(depth) or depth not in VGG_CONFIGS:
        raise ConfigError(f"vgg `depth` must be one of {', '.join(map(str, VGG_CONFIGS))}, got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not width > 0:
        raise ConfigError(f"vgg `width` must be a number > 0, got {width!r}")
    if not is_int(hidden) or hidden < 0:
        raise ConfigError(f"vgg `hidden` must be an int >= 0, got {hidden!r}")
    dropout = check_probability(dropout, "dropout", "vgg")
    layers: list[nn.Module] = []
    in_ch, spatial = shape[0], shape[1:]
    for stage in VGG_CONFIGS[int(depth)]:
        for channels in stage:
            out_ch = max(1, round(channels * width))
            layers.append(conv_nd(dims, in_ch, out_ch, 3, padding=1))
            if batchnorm:
                layers.append(bn_nd(dims, out_ch))
            layers.append(nn.ReLU())
            in_ch = out_ch
        if min(spatial) >= 2:
            layers.append(pool_nd(dims, 2))
            spatial = halve(spatial)
    layers.append(nn.Flatten())
    conv_dim = in_ch
    for s in spatial:
        conv_dim *= s
    if hidden > 0:
        for fan_in in (conv_dim, int(hidden)):
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.extend([nn.Linear(fan_in, int(hidden)), nn.ReLU()])
    features = kaiming_init_(nn.Sequential(*layers))
    return Classifier(features, feature_dim(features, shape), num_classes)
