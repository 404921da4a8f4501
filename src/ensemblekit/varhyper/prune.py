"""Pruning by the signal-to-noise criterion and accuracy-vs-pruned-share curves (docs/methods.md, varhyper).

Per layer, each weight is scored by ``mu^2 / sigma^2`` (the log of the seed's relative
density ``exp(mu^2 / 2 sigma^2)``, times 2: the same order) and the lowest-scoring
``round(fraction * n)`` weights of that layer are set to zero; biases are never pruned
and nothing is fine-tuned. For networks without a posterior (L2 nets) the score is
``mu^2``. Ties are broken by position (a stable sort), so exactly the requested share goes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["snr_scores", "magnitude_scores", "prune_mask", "prune_weights", "kept_share", "as_table", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(10))


def snr_scores(mu: Mapping[str, torch.Tensor], log_sigma: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``mu^2 / sigma^2`` per weight."""
    return {k: mu[k].pow(2) * torch.exp(-2.0 * log_sigma[k]) for k in mu}


def magnitude_scores(mu: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``mu^2`` per weight (networks without a posterior)."""
    return {k: v.pow(2) for k, v in mu.items()}


def prune_mask(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean keep-mask of ``score``'s shape with the ``round(fraction * n)`` lowest scores removed.

    Args:
        score: one layer's scores (any shape).
        fraction: share to remove, in [0, 1).

    Raises:
        ConfigError: fraction outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"pruning fraction must be in [0, 1), got {fraction}")
    flat = score.detach().flatten()
    k = int(round(fraction * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k:
        keep[torch.argsort(flat, stable=True)[:k]] = False
    return keep.reshape(score.shape)


def prune_weights(mu: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor], fraction: float,
                  names: Sequence[str], stacked: bool = True) -> dict[str, torch.Tensor]:
    """``mu`` with the lowest-scoring share of each layer in ``names`` zeroed (others copied).

    With ``stacked`` the tensors carry a leading member axis ``(M, ...)`` and each
    member's layer is pruned on its own.
    """
    out = {}
    for k, v in mu.items():
        if k not in names or fraction == 0:
            out[k] = v.detach().clone()
            continue
        s = scores[k]
        mask = torch.stack([prune_mask(s[i], fraction) for i in range(s.shape[0])]) if stacked else prune_mask(s, fraction)
        out[k] = v.detach() * mask
    return out


def kept_share(weights: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """Share of nonzero entries among the prunable weights (a check, for the reports)."""
    nz = sum(int((weights[k] != 0).sum()) for k in names)
    total = sum(weights[k].numel() for k in names)
    return float(nz / max(total, 1))


def as_table(acc: np.ndarray, lambdas: Sequence[float], fractions: Sequence[float]) -> list[dict[str, float]]:
    """Rows ``{lambda, pruned, acc}`` of an ``(L, F)`` accuracy array."""
    return [{"lambda": float(lam), "pruned": float(f), "acc": float(acc[i, j])}
            for i, lam in enumerate(lambdas) for j, f in enumerate(fractions)]
