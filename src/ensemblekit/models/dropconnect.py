"""DropConnect: random masks on a layer's weights during training (Wan et al. 2013,
"Regularization of Neural Networks using DropConnect").

Works with stacked members: inside ``torch.vmap(..., randomness="different")`` over
``torch.func.functional_call`` every member draws its own mask.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .registry import register_wrapper

__all__ = ["DropConnect", "apply_dropconnect"]

# Layers whose forward can be recomputed from (input, weight, bias) without touching parameters.
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_p(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ConfigError(f"dropconnect p must be a number in [0, 1), got {p!r}")
    return float(p)


class DropConnect(nn.Module):
    """Wrap a linear or convolution layer so that training drops each weight with probability ``p``.

    In training mode each forward multiplies the weight by a fresh Bernoulli(1 - p) mask of
    the weight's shape and rescales by ``1 / (1 - p)`` (so the expected weight is unchanged);
    the bias is kept. In eval mode it is exactly the wrapped layer. Parameters are never
    changed in place and stay at ``<name>.module.weight`` / ``<name>.module.bias``.

    Args:
        module: an ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``.
        p: drop probability in [0, 1) (default 0.5); 0 is the plain layer.

    Raises:
        ConfigError: unsupported module type or ``p`` outside [0, 1).

    Example:
        >>> layer = DropConnect(nn.Linear(8, 4), p=0.5)
        >>> layer(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(self, module: nn.Module, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(module, _SUPPORTED):
            raise ConfigError(f"DropConnect wraps {', '.join(t.__name__ for t in _SUPPORTED)}; "
                              f"got {type(module).__name__}")
        self.module = module
        self.p = _check_p(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return self.module(x)
        weight = self.module.weight
        # torch.bernoulli on the weight's shape: under vmap(randomness="different") each
        # member's (unbatched-looking) weight gets its own mask.
        mask = torch.bernoulli(torch.full_like(weight, 1 - self.p))
        weight = weight * mask / (1 - self.p)
        if isinstance(self.module, nn.Linear):
            return F.linear(x, weight, self.module.bias)
        return self.module._conv_forward(x, weight, self.module.bias)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@register_wrapper("dropconnect", check=lambda p: _check_p(p or 0.0), order=20)
def apply_dropconnect(model: nn.Module, p: float,
                      types: Sequence[type[nn.Module]] | type[nn.Module] = (nn.Linear, nn.Conv1d, nn.Conv2d)) -> nn.Module:
    """Wrap every submodule of ``model`` that is an instance of ``types`` in :class:`DropConnect`, in place.

    Args:
        model: the network; changed in place (its state-dict keys become ``...module.weight``).
        p: drop probability in [0, 1).
        types: layer classes to wrap (subclasses of Linear/Conv1d/Conv2d/Conv3d); default
            ``(nn.Linear, nn.Conv1d, nn.Conv2d)``. Layers already wrapped are left alone.

    Returns:
        ``model`` itself, or a new :class:`DropConnect` when ``model`` is itself a matching layer.

    Raises:
        ConfigError: ``p`` outside [0, 1) or a type that cannot be wrapped.

    Example:
        >>> net = apply_dropconnect(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)), p=0.2)
        >>> [name for name, _ in net.named_parameters()][0]
        '0.module.weight'
    """
    p = _check_p(p)
    types = (types,) if isinstance(types, type) else tuple(types)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, _SUPPORTED)):
            raise ConfigError(f"apply_dropconnect: types must be subclasses of "
                              f"{', '.join(s.__name__ for s in _SUPPORTED)}; got {t!r}")
    if isinstance(model, types):
        return DropConnect(model, p)

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, DropConnect):
                continue
            if isinstance(child, types):
                setattr(parent, name, DropConnect(child, p))
            else:
                visit(child)

    visit(model)
    return model
