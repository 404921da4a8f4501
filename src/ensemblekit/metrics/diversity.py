"""Diversity of an ensemble's members: disagreement, pairwise KL, ambiguity, entropy.

All functions take members' probabilities ``probs`` of shape ``(M, B, C)`` and return
0-d float64 tensors (or a dict of them) on the input's device. Each is computed in
O(M B C) from per-example sums, never by looping over the M^2 pairs.
"""

from __future__ import annotations

import torch

from .classification import check_eps, check_labels, check_probs, f64, nll

__all__ = ["disagreement", "pairwise_kl", "ambiguity", "entropy_decomposition"]


def disagreement(probs: torch.Tensor) -> torch.Tensor:
    """Mean over unordered member pairs of the fraction of examples their argmax differs on.

    With ``n_bc`` members predicting class c on example b, the number of ordered pairs
    that disagree on b is ``M^2 - sum_c n_bc^2``, so the result is
    ``mean_b (M^2 - sum_c n_bc^2) / (M (M - 1))``.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``.

    Returns:
        0-d tensor in [0, 1]; 0.0 when ``M == 1``.

    Raises:
        DataError: ``probs`` is not a 3-D floating tensor.

    Example:
        >>> p = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]]])
        >>> disagreement(p)
        tensor(1., dtype=torch.float64)
    """
    probs = check_probs(probs, ndim=3)
    M, B, C = probs.shape
    out_dtype = f64(probs).dtype
    if M < 2:
        return torch.zeros((), dtype=out_dtype, device=probs.device)
    preds = probs.argmax(-1).t()  # (B, M)
    counts = torch.zeros(B, C, dtype=out_dtype, device=probs.device)
    counts.scatter_add_(1, preds, torch.ones(B, M, dtype=out_dtype, device=probs.device))
    return (M * M - counts.square().sum(-1)).mean() / (M * (M - 1))


def pairwise_kl(probs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over ordered pairs ``m != n`` of ``mean_b KL(p_m || p_n)`` (natural log).

    Uses ``sum_{m,n} KL(p_m||p_n) = M sum_m <p_m, log p_m> - <sum_m p_m, sum_n log p_n>``
    per example, with ``log`` taken of ``max(p, eps)``.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``.
        eps: floor inside the logarithm (default 1e-12, in (0, 1)).

    Returns:
        0-d tensor >= 0 (up to the ``eps`` floor); 0.0 when ``M == 1``.

    Raises:
        DataError: ``probs`` is not a 3-D floating tensor.
        ConfigError: ``eps`` outside (0, 1).
    """
    eps = check_eps(eps)
    probs = check_probs(probs, ndim=3)
    M = probs.shape[0]
    p = f64(probs)
    if M < 2:
        return torch.zeros((), dtype=p.dtype, device=p.device)
    logp = p.clamp_min(eps).log()
    self_term = (p * logp).sum(-1).sum(0)  # (B,)
    cross_term = (p.sum(0) * logp.sum(0)).sum(-1)  # (B,)
    return (M * self_term - cross_term).mean() / (M * (M - 1))


def ambiguity(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean member NLL minus the ensemble's NLL (the ensemble's gain in log-loss).

    Non-negative by Jensen's inequality (``-log`` is convex), up to the 1e-12 floor of
    :func:`~ensemblekit.metrics.nll` when a member gives the true class less than that.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``.
        y: int64 labels, shape ``(B,)``.

    Returns:
        0-d tensor; 0.0 when all members agree exactly (or ``M == 1``).

    Raises:
        DataError: bad shapes, dtypes or labels out of range.
    """
    probs = check_probs(probs, ndim=3)
    y = check_labels(y, probs)
    p = f64(probs)
    return nll(p, y).mean() - nll(p.mean(0), y)


def entropy_nats(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def entropy_decomposition(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split the predictive entropy into expected entropy and mutual information.

    ``total = mean_b H[mean_m p_m]``, ``expected = mean_b mean_m H[p_m]``,
    ``mutual_information = total - expected`` (the epistemic part: >= 0 by concavity
    of H, 0 when all members agree). Natural log, ``0 log 0 = 0``.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``.

    Returns:
        dict of 0-d tensors ``total``, ``expected``, ``mutual_information``.

    Raises:
        DataError: ``probs`` is not a 3-D floating tensor.
    """
    probs = check_probs(probs, ndim=3)
    p = f64(probs)
    total = entropy_nats(p.mean(0)).mean()
    expected = entropy_nats(p).mean()
    return {"total": total, "expected": expected, "mutual_information": total - expected}
