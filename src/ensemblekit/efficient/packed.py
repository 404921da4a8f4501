"""Packed-Ensembles: M narrower subnetworks packed into one network of grouped layers.

Laurent, Lafage, Tartaglione, Daniel, Martinez, Bursuc & Franchi, "Packed-Ensembles for
Efficient Uncertainty Estimation", ICLR 2023. Each of the M subnetworks has the base
architecture with every hidden width multiplied by ``alpha / M`` (alpha: the width
augmentation factor), and each of its convolutions split into ``gamma`` groups; the first
layer reads the shared input and the last is each member's own head. Packed together, the
M subnetworks are one network whose layers are grouped convolutions / block-diagonal
linear maps with ``M·gamma`` groups.

ensemblekit's stacked members are exactly that packing: an :class:`~ensemblekit.ensemble.Ensemble`
of M such subnetworks runs each layer as one grouped convolution (``groups = M·gamma``) or
one batched matrix product over the members (:mod:`ensemblekit.ensemble.stacked`), so a packed
ensemble is the model wrapper ``packed: {alpha, members, gamma}`` (this module) on any
registered model, trained as M stacked members. ``tests/efficient/test_efficient.py`` checks that
the stacked layer equals one block-diagonal grouped layer, outputs and gradients.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from ..models.registry import register_wrapper

__all__ = ["shrink_width", "check_packed"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def check_packed(value: Any) -> dict[str, Any] | None:
    """``packed: {alpha: 2, members: 4, gamma: 1}`` (``alpha / members`` scales every hidden width)."""
    if not value:
        return None
    if not isinstance(value, dict) or set(value) - {"alpha", "members", "gamma"}:
        raise ConfigError(f"packed must be {{alpha: a, members: M, gamma: g}}, got {value!r}")
    alpha, members, gamma = value.get("alpha", 2), value.get("members", 4), value.get("gamma", 1)
    for key, v in (("members", members), ("gamma", gamma)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"packed.{key} must be an integer >= 1, got {v!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"packed.alpha must be a number > 0, got {alpha!r}")
    return {"alpha": float(alpha), "members": members, "gamma": gamma}


def _scaled(n: int, factor: float, where: str) -> int:
    value = n * factor
    if abs(value - round(value)) > 1e-6 or round(value) < 1:
        raise ConfigError(f"packed: layer {where!r} has {n} channels/features; times alpha/members = {factor:g} that is "
                          f"{value:g}, not a whole number >= 1 (choose alpha and members that divide the widths)")
    return int(round(value))


@register_wrapper("packed", check=check_packed, order=5)
def shrink_width(model: nn.Module, options: dict[str, Any]) -> nn.Module:
    """One packed subnetwork: ``model`` with every hidden width times ``alpha / members`` and its
    hidden convolutions in ``gamma`` groups (in place; new layers freshly initialised).

    The first Linear/Conv layer keeps the input's width; the last Linear keeps the classes.

    Raises:
        ConfigError: a width that does not scale to a whole number, a layer it cannot
            rebuild (named), or widths not divisible by ``gamma``.
    """
    factor = options["alpha"] / options["members"]
    gamma = options["gamma"]
    found: list[tuple[nn.Module, str, nn.Module, str]] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            path = f"{prefix}{name}"
            if type(child) in _LAYERS or type(child) in _NORMS:
                found.append((parent, name, child, path))
            elif isinstance(child, (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.LayerNorm, nn.GroupNorm, nn.Embedding)):
                raise ConfigError(f"packed cannot rescale layer {path!r} ({type(child).__name__})")
            else:
                visit(child, path + ".")

    visit(model, "")
    layers = [f for f in found if type(f[2]) in _LAYERS]
    if not layers or type(layers[-1][2]) is not nn.Linear:
        raise ConfigError(f"packed needs a model ending in a Linear head, got {type(model).__name__}")
    first, last = layers[0][2], layers[-1][2]
    for parent, name, layer, path in found:
        if isinstance(layer, _NORMS):
            new: nn.Module = type(layer)(_scaled(layer.num_features, factor, path), eps=layer.eps, momentum=layer.momentum,
                                         affine=layer.affine, track_running_stats=layer.track_running_stats)
        elif isinstance(layer, nn.Linear):
            i = layer.in_features if layer is first else _scaled(layer.in_features, factor, path)
            o = layer.out_features if layer is last else _scaled(layer.out_features, factor, path)
            new = nn.Linear(i, o, bias=layer.bias is not None)
        else:
            i = layer.in_channels if layer is first else _scaled(layer.in_channels, factor, path)
            o = _scaled(layer.out_channels, factor, path)
            groups = 1 if layer is first else gamma * layer.groups
            if i % groups or o % groups:
                raise ConfigError(f"packed: layer {path!r} has {i} -> {o} channels, not divisible into {groups} groups (gamma = {gamma})")
            new = type(layer)(i, o, layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                              groups=groups, bias=layer.bias is not None, padding_mode=layer.padding_mode)
        setattr(parent, name, new)
    if hasattr(model, "feature_dim") and isinstance(getattr(model, "head", None), nn.Linear):
        model.feature_dim = model.head.in_features
    return model
