"""Building blocks shared by the convolutional models: 1-D/2-D layer choice, drop-path, init.

Every zoo model accepts ``(C, L)`` signals and ``(C, H, W)`` images alike; the helpers
here pick ``Conv1d``/``Conv2d`` (and the matching BatchNorm and pooling) from the number
of spatial dimensions so the model files never branch on it themselves.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "spatial_input",
    "is_int",
    "check_num_classes",
    "check_probability",
    "conv_nd",
    "bn_nd",
    "pool_nd",
    "adaptive_avg_pool_nd",
    "DropPath",
    "drop_path_rates",
    "kaiming_init_",
    "halve",
]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_ADAPTIVE_AVG = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


def spatial_input(input_shape: Sequence[int], model: str) -> tuple[tuple[int, ...], int]:
    """Validate ``input_shape`` and return it as a tuple with its number of spatial dims.

    Args:
        input_shape: ``(C, L)`` for 1-D signals or ``(C, H, W)`` for images; positive ints.
        model: the model's name, for the error message.

    Returns:
        ``(shape, dims)`` with ``dims`` 1 or 2.

    Raises:
        ConfigError: another rank, or a non-positive size.
    """
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{model} `input_shape` must be a sequence of ints, got {input_shape!r}") from exc
    if len(shape) not in (2, 3):
        raise ConfigError(
            f"{model} `input_shape` must be (channels, length) or (channels, height, width), got {shape}"
        )
    if any(s < 1 for s in shape):
        raise ConfigError(f"{model} `input_shape` sizes must be >= 1, got {shape}")
    return shape, len(shape) - 1


def is_int(value: object) -> bool:
    """True for ints (Python or NumPy), False for bools, floats and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_num_classes(num_classes: int, model: str) -> int:
    """``num_classes`` as an int >= 1, or a ConfigError."""
    if not is_int(num_classes) or num_classes < 1:
        raise ConfigError(f"{model} `num_classes` must be an int >= 1, got {num_classes!r}")
    return int(num_classes)


def check_probability(value: float, name: str, model: str) -> float:
    """A probability in [0, 1) (dropout, drop-path), or a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{model} `{name}` must be in [0, 1), got {value!r}")
    return float(value)


def _check_dims(dims: int) -> None:
    if dims not in _CONV:
        raise ConfigError(f"spatial dims must be 1 or 2, got {dims!r}")


def conv_nd(
    dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    bias: bool = True,
) -> nn.Module:
    """``nn.Conv1d`` (dims=1) or ``nn.Conv2d`` (dims=2) with a square kernel."""
    _check_dims(dims)
    return _CONV[dims](in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def bn_nd(dims: int, num_features: int) -> nn.Module:
    """``nn.BatchNorm1d`` or ``nn.BatchNorm2d`` over ``num_features`` channels."""
    _check_dims(dims)
    return _BN[dims](num_features)


def pool_nd(dims: int, kernel_size: int = 2) -> nn.Module:
    """Max-pooling with ``stride = kernel_size`` (``nn.MaxPool1d`` or ``nn.MaxPool2d``)."""
    _check_dims(dims)
    return _MAXPOOL[dims](kernel_size)


def adaptive_avg_pool_nd(dims: int, output_size: int = 1) -> nn.Module:
    """Global (``output_size=1``) average pooling, 1-D or 2-D."""
    _check_dims(dims)
    return _ADAPTIVE_AVG[dims](output_size)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample while training.

    In training mode each sample's branch is kept with probability ``1 - p`` and scaled
    by ``1 / (1 - p)``, so its expectation is unchanged and evaluation is the identity
    (the "inverted" form of Huang et al.'s rule; the same as timm's ``DropPath``). The
    mask comes from ``torch.rand``, so inside ``torch.vmap(..., randomness="different")``
    every stacked member draws its own.

    Args:
        p: probability of dropping the branch, in [0, 1) (default 0: identity).

    Paper: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = check_probability(p, "p", "DropPath")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = (torch.rand(shape, dtype=x.dtype, device=x.device) < keep).to(x.dtype)
        return x * (mask / keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(p_last: float, num_blocks: int) -> list[float]:
    """The linear rule of Huang et al.: block ``l`` of ``L`` (1-based) drops with ``p_last * l / L``."""
    return [p_last * (i + 1) / num_blocks for i in range(num_blocks)]


def kaiming_init_(module: nn.Module) -> nn.Module:
    """He-normal convolutions (fan-out), unit/zero BatchNorm, zero conv biases; in place.

    ``N(0, sqrt(2 / (k^d * out_channels)))`` is the initialisation of the FGE repository's
    PreResNet and VGG (and of the original WRN code).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def halve(spatial: Sequence[int]) -> tuple[int, ...]:
    """Spatial size after a 2x2 (or 2) max-pool with stride 2: floor division."""
    return tuple(s // 2 for s in spatial)
