"""Continuous relaxations of a cell: softmax weights (DARTS), Gumbel-softmax samples, relaxed
top-k input choices, and the soft count of edges shared with an optimal genotype.

Paper: Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017;
Xie & Ermon, "Reparameterizable Subset Sampling via Continuous Relaxations", IJCAI 2019.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .genotype import CELL_TYPES, Genotype, node_slices
from .ops import OP_NAMES

__all__ = ["gumbel_noise", "gumbel_softmax", "relaxed_topk", "segment_softmax", "softmax_weights", "sampled_weights", "star_targets", "soft_common_edges"]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")


def gumbel_noise(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log U)`` (from the global generator unless one is given)."""
    u = torch.rand(shape, device=device, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def gumbel_softmax(logits: torch.Tensor, temperature: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """A relaxed one-hot sample ``softmax((logits + g) / temperature)`` along the last axis.

    Args:
        logits: ``(..., K)``.
        temperature: > 0; as it goes to 0 the sample becomes ``onehot(argmax(logits + g))``.
        noise: Gumbel noise of ``logits``' shape (default: drawn; zeros give the
            deterministic ``softmax(logits / temperature)``).
    """
    _check_temperature(temperature)
    g = gumbel_noise(logits.shape, logits.device) if noise is None else noise
    return torch.softmax((logits + g) / temperature, dim=-1)


def relaxed_topk(logits: torch.Tensor, k: int, temperature: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """A relaxed k-hot sample along the last axis (Xie & Ermon 2019); k = 1 is :func:`gumbel_softmax`.

    Draw ``k`` relaxed one-hot samples in turn, each from the keys ``logits + g`` plus
    ``log(1 - a)`` of the previous sample ``a`` (which removes what was taken), and add
    them. ``log(1 - a_i)`` is computed exactly as ``logsumexp_{j != i} z - logsumexp z``,
    so it stays finite and differentiable even when ``a`` is one-hot in float precision.
    As the temperature goes to 0 the result is the 0/1 indicator of the top-k keys.

    Args:
        logits: ``(..., n)`` with ``n >= k``.
        k: entries to pick (>= 1).
        temperature: > 0.
        noise: Gumbel noise of ``logits``' shape (default: drawn; zeros: deterministic).

    Returns:
        ``(..., n)`` with entries in [0, 1] summing to ``k``.
    """
    _check_temperature(temperature)
    n = logits.shape[-1]
    if not 1 <= k <= n:
        raise ConfigError(f"k must be in 1..{n} (the number of choices), got {k}")
    keys = logits + (gumbel_noise(logits.shape, logits.device) if noise is None else noise)
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    total = torch.zeros_like(keys)
    for step in range(k):
        z = keys / temperature
        total = total + torch.softmax(z, dim=-1)
        if step + 1 < k:
            others = z.unsqueeze(-2).expand(*z.shape[:-1], n, n).masked_fill(eye, float("-inf"))
            keys = keys + torch.logsumexp(others, dim=-1) - torch.logsumexp(z, dim=-1, keepdim=True)
    return total


def segment_softmax(beta: torch.Tensor, nodes: int) -> torch.Tensor:
    """Softmax of ``beta (..., E)`` within each node's inputs (edge normalisation)."""
    return torch.cat([torch.softmax(beta[..., sl], dim=-1) for sl in node_slices(nodes)], dim=-1)


def softmax_weights(alpha: torch.Tensor, beta: torch.Tensor, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DARTS' relaxation: operation weights ``softmax(alpha)`` ``(2, E, 7)`` and input weights ``(2, E)``."""
    return torch.softmax(alpha, dim=-1), segment_softmax(beta, nodes)


def sampled_weights(alpha: torch.Tensor, beta: torch.Tensor, nodes: int, keep: int, temperature: float,
                    noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A relaxed architecture sample: Gumbel-softmax operation weights and relaxed top-``keep``
    input weights per node (divided by ``keep`` so a node's input weights sum to 1, like the
    softmax the supernet was searched with).

    Returns:
        ``(2, E, 7)`` and ``(2, E)``; the input weights times ``keep`` are the relaxed k-hot.
    """
    g_alpha, g_beta = noise if noise is not None else (None, None)
    ops = gumbel_softmax(alpha, temperature, g_alpha)
    parts = []
    for sl in node_slices(nodes):
        nb = None if g_beta is None else g_beta[..., sl]
        parts.append(relaxed_topk(beta[..., sl], min(keep, sl.stop - sl.start), temperature, nb) / keep)
    return ops, torch.cat(parts, dim=-1)


def star_targets(star: Genotype, tau: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """The smoothed one-hot targets of an optimal genotype.

    Returns:
        ``targets (2, E, 7)``: ``tau * onehot(op*) + (1 - tau) / 7`` on each edge kept by
        ``star``, zero elsewhere; ``mask (2, E)``: 1 on those edges.
    """
    if not 0.0 <= tau <= 1.0:
        raise ConfigError(f"tau (label smoothing of alpha*) must be in [0, 1], got {tau}")
    from .genotype import num_edges

    e, o = num_edges(star.nodes), len(OP_NAMES)
    targets, mask = torch.zeros(2, e, o), torch.zeros(2, e)
    slices = node_slices(star.nodes)
    for t, kind in enumerate(CELL_TYPES):
        for i, node in enumerate(star.cell(kind)):
            for op, j in node:
                edge = slices[i].start + j
                targets[t, edge] = (1.0 - tau) / o
                targets[t, edge, OP_NAMES.index(op)] += tau
                mask[t, edge] = 1.0
    return targets, mask


def soft_common_edges(op_weights: torch.Tensor, input_khot: torch.Tensor, star: Genotype, tau: float = 0.99) -> torch.Tensor:
    """The soft number of edges shared with ``star`` (docs/methods.md, edgenes):

    ``s = sum_cells sum_nodes sum_{p in parents*(n)} <GS(alpha_(n,p)), smooth(alpha*_(n,p))> * K_n[p]``

    where ``K_n`` is the relaxed top-k sample of node ``n``'s input logits. The paper's
    formula has ``GS(beta_n)[p]``, a relaxed *one*-hot; with 2 kept inputs per node that caps
    every node at one shared edge and its zero-temperature limit is not the discrete
    count, so the relaxed k-hot (k = inputs kept per node) is used; it is GS for k = 1.

    Args:
        op_weights: ``(2, E, 7)`` relaxed one-hot operation samples.
        input_khot: ``(2, E)`` relaxed k-hot input samples (each node's entries sum to k).
        star: the optimal genotype alpha*.
        tau: smoothing of alpha*'s one-hot (default 0.99; 1 gives the exact discrete count in
            the zero-temperature limit).

    Returns:
        A 0-d tensor, differentiable in both samples.
    """
    targets, mask = star_targets(star, tau)
    targets, mask = targets.to(op_weights), mask.to(op_weights)
    if op_weights.shape != targets.shape or input_khot.shape != mask.shape:
        raise ConfigError(f"samples of shape {tuple(op_weights.shape)}/{tuple(input_khot.shape)} do not match a {star.nodes}-node cell")
    return ((op_weights * targets).sum(-1) * input_khot * mask).sum()
