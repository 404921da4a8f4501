"""The discounted (margin) cross-entropy of margin boosting (Shokorov 2023; docs/methods.md, boosting).

``L(f, g) = mean_i -log( e^{f_yi - g_i} / (e^{f_yi - g_i} + sum_{j != yi} e^{f_j}) )``:
cross-entropy after subtracting the per-object discount ``g_i`` from the true-class
logit; ``g = 0`` is exactly cross-entropy. A positive ``g_i`` asks for a margin of at
least about ``g_i`` on object ``i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.batching import Batch
from ..errors import DataError

__all__ = ["discounted_cross_entropy", "discounted_loss_fn"]


def discounted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, g: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits - g * onehot(y)``.

    Args:
        logits: ``(..., N, C)``; y: ``(..., N)`` integer labels; g: discounts broadcastable
            to ``y``'s shape.
        reduction: ``"mean"`` over the object axis (keeping leading axes, e.g. members) or ``"none"``.

    Returns:
        ``(...,)`` for ``"mean"``, ``(..., N)`` for ``"none"``.

    Example:
        >>> discounted_cross_entropy(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([0.0]))
        tensor(0.6931)
    """
    y = y.expand(logits.shape[:-1])
    shifted = logits - torch.as_tensor(g, dtype=logits.dtype, device=logits.device).expand(y.shape).unsqueeze(-1) * F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    c = logits.shape[-1]
    out = F.cross_entropy(shifted.reshape(-1, c), y.reshape(-1), reduction="none").reshape(y.shape)
    return out.mean(-1) if reduction == "mean" else out


def discounted_loss_fn(discount: torch.Tensor):  # noqa: ANN201  (a LossFn)
    """A Trainer ``loss_fn(logits (M, B, C), batch) -> (M,)`` that looks up each example's
    discount ``discount[batch.idx]`` (so it follows shuffling, bootstrap and mixup partners).

    Args:
        discount: ``(N_train,)`` per-object discounts.

    Raises:
        DataError: the batch has no example indices (a DataLoader split).
    """
    on_device: dict[torch.device, torch.Tensor] = {}  # one copy per device, not one per step

    def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if batch.idx is None:
            raise DataError("the discounted loss needs example indices; use an in-memory training split, not a DataLoader")
        if logits.device not in on_device:
            on_device[logits.device] = discount.detach().to(logits.device, torch.float32)
        g = on_device[logits.device][batch.idx.to(logits.device)]
        y = batch.y if batch.per_member else batch.y.unsqueeze(0)
        return discounted_cross_entropy(logits, y, g if batch.per_member else g.unsqueeze(0))

    return loss_fn
