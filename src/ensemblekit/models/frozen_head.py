"""A frozen last layer for margin boosting (Shokorov 2023; docs/methods.md, boosting).

Lemma 1 of the seed: if the last linear layer ``W`` trains, growing ``||W||`` meets any
discount without changing the decision, so boosting needs ``W`` frozen. The author's head
is ``BatchNorm1d(d, affine=False) -> Linear(d, K, bias=False)`` with ``W`` at PyTorch's
default initialisation times ``head_scale``; the feature extractor stays trainable.
With BatchNorm before ``W`` and balanced classes the mean margin is bounded by
``(2/K) ||W||_1`` (Theorem 1; ``||W||_1`` read as the entrywise sum ``sum |W_kj|``), so a
larger mean discount cannot be met: :func:`check_discount` warns.

Freezing is ``requires_grad=False`` on ``W``: the stacked ensemble keeps the flag, the
optimizer, weight decay and gradient clipping skip it, and it is saved like any tensor.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import ConfigError
from .base import Classifier
from .registry import register_wrapper

__all__ = ["frozen_head", "apply_frozen_head", "frozen_weight", "margin_bound", "check_discount"]


def frozen_head(feature_dim: int, num_classes: int, head_scale: float = 1.0) -> nn.Sequential:
    """``BatchNorm1d(d, affine=False) -> Linear(d, K, bias=False)`` with ``W`` frozen.

    Args:
        feature_dim: d (>= 1). num_classes: K (>= 2).
        head_scale: factor on the default initialisation of ``W`` (> 0; the author uses 1..10).

    Returns:
        an ``nn.Sequential`` (a plain container, so the stacked fast path still applies).

    Example:
        >>> head = frozen_head(16, 3, head_scale=5.0)
        >>> head[1].weight.requires_grad
        False
    """
    if not head_scale > 0:
        raise ConfigError(f"frozen_head: head_scale must be > 0, got {head_scale!r}")
    if feature_dim < 1 or num_classes < 2:
        raise ConfigError(f"frozen_head: need feature_dim >= 1 and num_classes >= 2, got {feature_dim} and {num_classes}")
    linear = nn.Linear(int(feature_dim), int(num_classes), bias=False)
    with torch.no_grad():
        linear.weight.mul_(float(head_scale))
    linear.weight.requires_grad_(False)
    return nn.Sequential(nn.BatchNorm1d(int(feature_dim), affine=False), linear)


def _check_scale(value: object) -> float:
    """``frozen_head: s`` in a model spec: a number >= 0 (0 keeps the model's own head)."""
    value = 0.0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"frozen_head must be a head scale >= 0 (0: keep the trainable head), got {value!r}")
    return float(value)


@register_wrapper("frozen_head", check=_check_scale, order=10)
def apply_frozen_head(model: nn.Module, head_scale: float = 1.0) -> nn.Module:
    """Replace the head of a registered model (a :class:`Classifier`) by :func:`frozen_head`, in place.

    Raises:
        ConfigError: ``model`` is not a Classifier (a custom factory must build its own head).
    """
    if not isinstance(model, Classifier):
        raise ConfigError(f"frozen_head needs a registered model (a Classifier with features and head), got {type(model).__name__}")
    model.head = frozen_head(model.feature_dim, model.num_classes, head_scale)
    return model


def frozen_weight(model: nn.Module) -> torch.Tensor | None:
    """The frozen last-layer weight ``(K, d)`` of ``model``, or ``None`` when its last Linear trains."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].weight.requires_grad:
        return None
    return linears[-1].weight.detach()


def margin_bound(weight: torch.Tensor) -> float:
    """Theorem 1: ``(2/K) * sum |W_kj|`` for ``W`` of shape ``(K, d)`` (or ``(M, K, d)``: per member, the smallest)."""
    w = weight.detach().float()
    if w.dim() == 2:
        w = w.unsqueeze(0)
    k = w.shape[1]
    return float((2.0 / k) * w.abs().sum(dim=(1, 2)).min())


def check_discount(discount: torch.Tensor, weight: torch.Tensor | None, where: str = "boosting") -> bool:
    """Warn (``UserWarning``) when the mean discount exceeds :func:`margin_bound`; returns
    ``True`` when it is within the bound (or there is no frozen head to bound it)."""
    if weight is None:
        return True
    bound = margin_bound(weight)
    mean = float(discount.float().mean())
    if mean > bound:
        warnings.warn(f"{where}: mean discount {mean:.3g} exceeds the margin the frozen head can reach "
                      f"(2/K)||W||_1 = {bound:.3g} (Theorem 1); raise head_scale or lower the discount", stacklevel=2)
        return False
    return True
