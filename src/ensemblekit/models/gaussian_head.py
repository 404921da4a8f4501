"""The ``gaussian`` wrapper: a mean-variance network for regression (Lakshminarayanan, Pritzel &
Blundell, "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles",
NeurIPS 2017; docs/architecture.md, the predictive ``Gaussian``).

The wrapper replaces the model's final linear layer ``Linear(d, D)`` by ``Linear(d, 2*D)``.
The module still returns ONE tensor, the raw outputs ``(B, 2*D)``: the first D columns are
the means, the last D the raw variances. Keeping one output tensor is what lets the stacked
ensemble (members' parameters stacked, one vmapped forward, ``(M, B, 2*D)``) and the
engine's loss slot work unchanged; :func:`split_gaussian` turns raw outputs (any leading
axes) into ``(mean, var)`` with ``var = softplus(raw) + min_var`` (the paper's positivity
transform plus a floor that keeps the NLL finite).

With ``variance: none`` the head outputs the D means only (an MSE-trained ensemble, whose
members' spread is then its only uncertainty); :func:`split_mean` reads them.

Model spec (the wrapper is a key of the model spec, like ``frozen_head``)::

    {"name": "mlp", "kwargs": {"num_classes": 1}, "gaussian": True}       # learned variance, D = 1
    {"name": "cnn1d", "gaussian": {"variance": "learned", "targets": 3}}  # D = 3
    {"name": "mlp", "gaussian": "none"}                                   # means only (MSE)

``D`` is the width of the final linear layer the model was built with (``num_classes`` for a
registered model, so the data's number of targets reaches it the same way) unless
``targets`` sets it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics.head_outputs import split_gaussian, split_mean
from .registry import register_wrapper

__all__ = ["VARIANCE_MODES", "check_gaussian", "apply_gaussian", "final_linear", "split_gaussian", "split_mean"]

VARIANCE_MODES = ("learned", "none")
"""``learned``: the head outputs means and raw variances ``(B, 2*D)``; ``none``: means only ``(B, D)``."""

_KEYS = ("variance", "targets")


def check_gaussian(value: Any) -> dict[str, Any] | None:
    """Validate ``gaussian: value`` of a model spec; returns the normalised, JSON-able value.

    Args:
        value: ``None``/``False`` (unwrapped), ``True`` (learned variance), ``"learned"`` or
            ``"none"``, or ``{"variance": "learned" | "none", "targets": D}`` (``targets``
            optional: an int >= 1, default the final layer's width).

    Returns:
        ``None`` (leave the model unwrapped) or ``{"variance": ..., ["targets": D]}``.

    Raises:
        ConfigError: any other value, naming the valid forms.

    Example:
        >>> check_gaussian(True)
        {'variance': 'learned'}
    """
    if value is None or value is False:
        return None
    if value is True:
        return {"variance": "learned"}
    if isinstance(value, str):
        value = {"variance": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"gaussian must be true, 'learned', 'none' or {{variance: learned|none, targets: D}}, got {value!r}")
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise ConfigError(f"gaussian got unknown key {unknown[0]!r}; valid: {', '.join(_KEYS)}")
    mode = value.get("variance", "learned")
    if not isinstance(mode, str) or mode.lower() not in VARIANCE_MODES:
        raise ConfigError(f"gaussian variance must be one of {', '.join(VARIANCE_MODES)}, got {mode!r}")
    out: dict[str, Any] = {"variance": mode.lower()}
    if value.get("targets") is not None:
        d = value["targets"]
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(f"gaussian targets must be an int >= 1 (the number of target dimensions D), got {d!r}")
        out["targets"] = int(d)
    return out


def final_linear(model: nn.Module) -> tuple[nn.Module | None, str, nn.Linear] | None:
    """The final linear layer of ``model`` as ``(parent, attribute, layer)``, or ``None``.

    The final layer is found the way a registered model is laid out (``features`` then
    ``head``, :class:`~ensemblekit.models.Classifier`) and the way ``nn.Sequential`` runs:
    follow the LAST registered submodule down until a leaf; it counts only when that leaf
    is an ``nn.Linear`` (a trailing activation, dropout or pooling means the network does not
    end in a linear layer). ``parent`` is ``None`` when ``model`` is itself the layer. A
    custom module whose ``forward`` does not end with its last registered submodule is
    beyond this rule: give it the head you want instead.

    Example:
        >>> final_linear(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))[1]
        '2'
    """
    if isinstance(model, nn.Linear):
        return None, "", model
    parent = model
    while True:
        children = list(parent.named_children())
        if not children:
            return None
        name, last = children[-1]
        if isinstance(last, nn.Linear):
            return parent, name, last
        parent = last


def _widened(layer: nn.Linear, width: int) -> nn.Linear:
    """``Linear(d, width)`` on ``layer``'s device and dtype; its first ``min(D, width)`` rows keep
    ``layer``'s weights (the builder's initialisation of the means), the rest are PyTorch's
    default initialisation (drawn from the global generator, so a seeded factory stays
    deterministic)."""
    new = nn.Linear(layer.in_features, width, bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    keep = min(layer.out_features, width)
    with torch.no_grad():
        new.weight[:keep].copy_(layer.weight[:keep])
        if layer.bias is not None:
            new.bias[:keep].copy_(layer.bias[:keep])
    new.weight.requires_grad_(layer.weight.requires_grad)
    if layer.bias is not None:
        new.bias.requires_grad_(layer.bias.requires_grad)
    return new


@register_wrapper("gaussian", check=check_gaussian, order=5)
def apply_gaussian(model: nn.Module, value: Any = True) -> nn.Module:
    """Make ``model`` a mean-variance network by widening its final linear layer, in place.

    With ``variance: learned`` the final ``Linear(d, D)`` becomes ``Linear(d, 2*D)``
    (outputs ``[means | raw variances]``, read by :func:`split_gaussian`); with ``none`` it
    becomes ``Linear(d, D)`` (the layer itself is kept when it already has D outputs). A
    :class:`~ensemblekit.models.Classifier`'s ``num_classes`` follows the head's new width.
    The wrapper applies before ``frozen_head`` and ``dropconnect`` (order 5), so those
    see the new head.

    Args:
        model: a registered model or any module whose final layer is an ``nn.Linear``
            (:func:`final_linear`).
        value: a ``gaussian`` spec value (:func:`check_gaussian`; default learned variance).

    Returns:
        ``model`` itself, or a new ``nn.Linear`` when ``model`` is itself the layer.

    Raises:
        ConfigError: a bad value, or a model without a final linear layer (naming it).

    Example:
        >>> net = apply_gaussian(create_model("mlp", input_shape=(8,), num_classes=1, hidden=(16,)))
        >>> net(torch.randn(4, 8)).shape
        torch.Size([4, 2])
    """
    spec = check_gaussian(value)
    if spec is None:
        return model
    found = final_linear(model)
    if found is None:
        raise ConfigError(f"gaussian: model {type(model).__name__} has no final linear layer to turn into a mean-variance "
                          "head (its last submodule, followed down, is not an nn.Linear); end the network with nn.Linear")
    parent, name, layer = found
    d = spec.get("targets", layer.out_features)
    width = 2 * d if spec["variance"] == "learned" else d
    new = layer if width == layer.out_features else _widened(layer, width)
    if parent is None:
        return new
    setattr(parent, name, new)
    if hasattr(model, "num_classes") and getattr(model, "head", None) is new:
        model.num_classes = width
    return model
