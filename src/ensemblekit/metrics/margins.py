"""Margins of ensemble members: ``m = f_y - max_{j != y} f_j`` on logits (docs/methods.md, boosting)."""

from __future__ import annotations

from typing import Any

import torch

from ..data.dataset import Split

__all__ = ["margins", "member_margins", "margin_summary"]


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margins of logits ``(..., N, C)`` for labels ``(N,)`` -> ``(..., N)``.

    Example:
        >>> margins(torch.tensor([[3.0, 1.0, 2.0], [0.0, 2.0, 1.0]]), torch.tensor([0, 2])).tolist()
        [1.0, -1.0]
    """
    y = y.expand(logits.shape[:-1])
    true = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.unsqueeze(-1), float("-inf"))
    return true - others.max(-1).values


@torch.no_grad()
def member_margins(ensemble: Any, split: Split, batch_size: int = 1024) -> torch.Tensor:
    """Margins ``(M, N)`` of every member on ``split`` in eval mode (no augmentation).

    ``ensemble`` is anything with ``eval/train``, ``training`` and ``__call__(x) -> (M, B, C)``.
    """
    was_training = getattr(ensemble, "training", False)
    ensemble.eval()
    x, y = split.tensors() if not split.in_memory else (split.x, split.y)
    out = []
    try:
        for lo in range(0, len(y), batch_size):
            logits = ensemble(x[lo : lo + batch_size].to(ensemble.device)).float().cpu()
            out.append(margins(logits, y[lo : lo + batch_size].cpu()))
    finally:
        ensemble.train(was_training)
    return torch.cat(out, dim=1)


def margin_summary(m: torch.Tensor) -> dict[str, float]:
    """Mean, std, min, quartiles and the fraction of negative margins of a ``(N,)`` vector."""
    m = m.float()
    q = torch.quantile(m, torch.tensor([0.25, 0.5, 0.75]))
    return {"mean": float(m.mean()), "std": float(m.std()) if m.numel() > 1 else 0.0, "min": float(m.min()),
            "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]), "negative": float((m < 0).float().mean())}
