"""Small models: ``mlp`` for any input and ``cnn1d`` for 1-D signals such as MNIST-1D."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ConfigError
from .base import Classifier, feature_dim
from .registry import register_model

__all__ = ["mlp", "cnn1d"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


@register_model("mlp")
def mlp(
    input_shape: Sequence[int] = (40,),
    num_classes: int = 10,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    dropout: float = 0.0,
    batchnorm: bool = False,
) -> Classifier:
    """Multi-layer perceptron on the flattened input.

    Args:
        input_shape: shape of one example (flattened), e.g. ``(1, 40)``.
        num_classes: number of output classes.
        hidden: widths of the hidden layers (default ``(256, 256)``; may be empty).
        activation: relu | gelu | tanh | silu.
        dropout: dropout probability after each hidden layer, in [0, 1).
        batchnorm: BatchNorm1d after each hidden linear layer.
    """
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    in_dim = 1
    for s in input_shape:
        in_dim *= int(s)
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers.append(nn.Linear(in_dim, int(width)))
        if batchnorm:
            layers.append(nn.BatchNorm1d(int(width)))
        layers.append(_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = int(width)
    return Classifier(nn.Sequential(*layers), in_dim, num_classes)


@register_model("cnn1d")
def cnn1d(
    input_shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    channels: int = 32,
    layers: int = 3,
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> Classifier:
    """A small 1-D CNN for MNIST-1D-like signals (Greydanus 2020's CNN, widened, with BatchNorm).

    Three stride-2 convolutions (kernel 5, 3, 3; padding 1) with ReLU, then a linear
    head on the flattened feature map. With the defaults one network reaches about
    95% test accuracy on MNIST-1D in 30 epochs; ``channels=25, batchnorm=False`` is
    the original 25-channel CNN of the MNIST-1D paper.

    Args:
        input_shape: ``(channels, length)`` of one example (default ``(1, 40)``).
        num_classes: number of output classes.
        channels: width of every convolution (default 32).
        layers: number of convolutions (>= 1; the first has kernel 5, the rest 3).
        batchnorm: BatchNorm1d after every convolution (default True).
        dropout: dropout probability before the head, in [0, 1).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 2:
        raise ConfigError(f"cnn1d needs input_shape (channels, length), got {shape}")
    if layers < 1:
        raise ConfigError(f"cnn1d layers must be >= 1, got {layers}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    body: list[nn.Module] = []
    in_ch = shape[0]
    for i in range(layers):
        k = 5 if i == 0 else 3
        body.append(nn.Conv1d(in_ch, channels, k, stride=2, padding=1))
        if batchnorm:
            body.append(nn.BatchNorm1d(channels))
        body.append(nn.ReLU())
        in_ch = channels
    body.append(nn.Flatten())
    if dropout > 0:
        body.append(nn.Dropout(dropout))
    features = nn.Sequential(*body)
    return Classifier(features, feature_dim(features, shape), num_classes)
