"""The seven DARTS operations, for 1-D signals and 2-D images.

Every operation maps ``(B, C_in, *spatial)`` to ``(B, C_out, *ceil(spatial / stride))``:
with stride 2 all of them halve each spatial size (rounding up), so odd sizes such as
MNIST-1D's 40 -> 20 -> 10 or digits' 8 -> 4 -> 2 -> 1 work. ``none`` (the zero operation of
the original DARTS space) is left out (docs/methods.md, edgenes): node inputs are weighted
by the per-node softmax over beta instead (edge normalisation, PC-DARTS).

Paper: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["OP_NAMES", "OPS", "make_op", "ReLUConvBN", "DilConv", "SepConv", "FactorizedReduce", "layer_types"]

OP_NAMES: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


def layer_types(dim: int) -> dict[str, type[nn.Module]]:
    """The convolution, BatchNorm and pooling classes of a 1-D or 2-D network."""
    if dim == 1:
        return {"conv": nn.Conv1d, "bn": nn.BatchNorm1d, "max": nn.MaxPool1d, "avg": nn.AvgPool1d, "gap": nn.AdaptiveAvgPool1d}
    if dim == 2:
        return {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "max": nn.MaxPool2d, "avg": nn.AvgPool2d, "gap": nn.AdaptiveAvgPool2d}
    raise ConfigError(f"the DARTS space has 1-D and 2-D variants; dim must be 1 or 2, got {dim}")


class ReLUConvBN(nn.Sequential):
    """ReLU -> convolution -> BatchNorm (the cells' 1x1 preprocessing and the stem's building block)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dim: int, affine: bool = True) -> None:
        t = layer_types(dim)
        super().__init__(nn.ReLU(), t["conv"](c_in, c_out, kernel, stride=stride, padding=padding, bias=False), t["bn"](c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) convolution -> pointwise convolution -> BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, dim: int, affine: bool = True) -> None:
        t = layer_types(dim)
        super().__init__(
            nn.ReLU(),
            t["conv"](c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            t["conv"](c_in, c_out, 1, bias=False),
            t["bn"](c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (the first carries the stride), as in DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dim: int, affine: bool = True) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, dim, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, dim, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two 1x1 stride-2 convolutions on inputs offset by one position.

    The second path sees the input shifted by one (zero-padded at the end), so both
    paths give ``ceil(size / 2)`` positions for odd sizes too.
    """

    def __init__(self, c_in: int, c_out: int, dim: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ConfigError(f"a factorized reduction needs an even number of output channels, got {c_out}")
        t = layer_types(dim)
        self.dim = dim
        self.relu = nn.ReLU()
        self.conv_1 = t["conv"](c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = t["conv"](c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = t["bn"](c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1) * self.dim)
        shifted = shifted[:, :, 1:] if self.dim == 1 else shifted[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _pool(kind: str, c: int, stride: int, dim: int, affine: bool, search: bool) -> nn.Module:
    t = layer_types(dim)
    pool = t["max"](3, stride=stride, padding=1) if kind == "max" else t["avg"](3, stride=stride, padding=1, count_include_pad=False)
    # In the supernet a parameter-free op gets a BatchNorm so its scale matches the convolutions' (DARTS).
    return nn.Sequential(pool, t["bn"](c, affine=False)) if search else pool


OpBuilder = Callable[[int, int, int, bool, bool], nn.Module]

OPS: dict[str, OpBuilder] = {
    "max_pool_3x3": lambda c, stride, dim, affine, search: _pool("max", c, stride, dim, affine, search),
    "avg_pool_3x3": lambda c, stride, dim, affine, search: _pool("avg", c, stride, dim, affine, search),
    "skip_connect": lambda c, stride, dim, affine, search: nn.Identity() if stride == 1 else FactorizedReduce(c, c, dim, affine),
    "sep_conv_3x3": lambda c, stride, dim, affine, search: SepConv(c, c, 3, stride, 1, dim, affine),
    "sep_conv_5x5": lambda c, stride, dim, affine, search: SepConv(c, c, 5, stride, 2, dim, affine),
    "dil_conv_3x3": lambda c, stride, dim, affine, search: DilConv(c, c, 3, stride, 2, 2, dim, affine),
    "dil_conv_5x5": lambda c, stride, dim, affine, search: DilConv(c, c, 5, stride, 4, 2, dim, affine),
}


def make_op(name: str, channels: int, stride: int, dim: int, affine: bool = True, search: bool = False) -> nn.Module:
    """Build one operation.

    Args:
        name: one of :data:`OP_NAMES`.
        channels: input = output channels (>= 2, even for a stride-2 skip connection).
        stride: 1 or 2 (2 on the edges leaving a reduction cell's inputs).
        dim: 1 (signals ``(B, C, L)``) or 2 (images ``(B, C, H, W)``).
        affine: learnable BatchNorm scale/shift (False in the supernet, as in DARTS).
        search: add the supernet's BatchNorm after pooling.

    Raises:
        ConfigError: unknown name, stride or dim.

    Example:
        >>> make_op("sep_conv_3x3", 8, 2, dim=1)(torch.zeros(2, 8, 40)).shape
        torch.Size([2, 8, 20])
    """
    if name not in OPS:
        raise ConfigError(f"unknown DARTS operation {name!r}; valid: {', '.join(OP_NAMES)}")
    if stride not in (1, 2):
        raise ConfigError(f"stride must be 1 or 2, got {stride}")
    layer_types(dim)
    return OPS[name](int(channels), int(stride), int(dim), bool(affine), bool(search))
