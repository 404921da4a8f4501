"""Choosing an ensemble of n members from a pool of trained candidates on validation data.

Paper: Zaidi et al., "Neural Ensemble Search for Uncertainty Estimation and Dataset
Shift" (NES), NeurIPS 2021 (ForwardSelect).
"""

from __future__ import annotations

import itertools
import math

import torch

from ..errors import ConfigError

__all__ = ["ensemble_nll", "forward_select", "exhaustive_select", "select_ensemble"]


def ensemble_nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    """NLL of the averaged probabilities: ``-mean log(mean_m p_m(y|x))`` for ``probs (M, N, C)``."""
    p = probs.mean(0).gather(1, y.view(-1, 1)).squeeze(1)
    return float(-torch.log(p.clamp_min(1e-12)).mean())


def _check(probs: torch.Tensor, y: torch.Tensor, n: int) -> None:
    if probs.dim() != 3 or probs.shape[1] != len(y):
        raise ConfigError(f"probs must be (pool, N, C) with N = len(y) = {len(y)}, got {tuple(probs.shape)}")
    if not 1 <= n <= probs.shape[0]:
        raise ConfigError(f"ensemble size n must be in 1..{probs.shape[0]} (the pool size), got {n}")


def forward_select(probs: torch.Tensor, y: torch.Tensor, n: int) -> list[int]:
    """Greedy forward selection without replacement (NES's ForwardSelect): start from the
    candidate with the lowest validation NLL, then add the one that minimises the ensemble's
    NLL, until ``n`` members. Ties go to the lower index.

    Args:
        probs: ``(P, N, C)`` validation probabilities of the P candidates.
        y: ``(N,)`` labels.
        n: ensemble size (1 <= n <= P).

    Returns:
        The chosen candidate indices, in order of selection.

    Example:
        >>> forward_select(torch.tensor([[[.9, .1]], [[.6, .4]]]), torch.tensor([0]), 1)
        [0]
    """
    _check(probs, y, n)
    chosen: list[int] = []
    for _ in range(n):
        best, best_nll = -1, math.inf
        for i in range(probs.shape[0]):
            if i in chosen:
                continue
            nll = ensemble_nll(probs[chosen + [i]], y)
            if nll < best_nll - 1e-12:
                best, best_nll = i, nll
        chosen.append(best)
    return chosen


def exhaustive_select(probs: torch.Tensor, y: torch.Tensor, n: int) -> list[int]:
    """The n-subset of the pool with the lowest validation ensemble NLL (best of all combinations)."""
    _check(probs, y, n)
    best = min(itertools.combinations(range(probs.shape[0]), n), key=lambda c: (ensemble_nll(probs[list(c)], y), c))
    return list(best)


def select_ensemble(probs: torch.Tensor, y: torch.Tensor, n: int, max_combinations: int = 2000) -> list[int]:
    """:func:`exhaustive_select` when ``C(P, n) <= max_combinations`` (default 2000), else :func:`forward_select`."""
    _check(probs, y, n)
    if math.comb(probs.shape[0], n) <= max_combinations:
        return exhaustive_select(probs, y, n)
    return forward_select(probs, y, n)
