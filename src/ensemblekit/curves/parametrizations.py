"""Coefficient functions of mode-connecting curves: ``phi(t) = sum_j c_j(t) * theta_j``.

A parametrisation is any callable ``(t, k) -> coefficients (k,)`` for ``t`` a 0-d tensor
in [0, 1] and ``k >= 2`` bends (``theta_0 = w0`` and ``theta_{k-1} = w1`` are the fixed
endpoints). It must be exact at the ends, ``c(0) = e_0`` and ``c(1) = e_{k-1}`` (checked by :func:`check_parametrization`), so the curve passes
through both endpoints. Pass your own callable to :class:`~ensemblekit.curves.CurveModel`
to try another family. Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs" (NeurIPS 2018); docs/methods.md (curve_ensemble).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import ConfigError

__all__ = ["Coefficients", "bezier", "polychain", "PARAMETRIZATIONS", "get_parametrization", "check_parametrization"]

Coefficients = Callable[[torch.Tensor, int], torch.Tensor]


def bezier(t: torch.Tensor, k: int) -> torch.Tensor:
    """Bernstein coefficients of a k-point Bezier curve: ``C(k-1, j) t^j (1-t)^(k-1-j)``.

    Args:
        t: 0-d tensor in [0, 1].
        k: number of bends including the endpoints (>= 2; 3 = quadratic Bezier).

    Returns:
        ``(k,)`` tensor summing to 1.

    Example:
        >>> bezier(torch.tensor(0.5), 3)
        tensor([0.2500, 0.5000, 0.2500])
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    n = k - 1
    j = torch.arange(k, dtype=t.dtype)
    binom = torch.tensor([math.comb(n, i) for i in range(k)], dtype=t.dtype)
    # pow(0, 0) is 1 in torch, so the ends are exact unit vectors
    return binom * t.pow(j) * (1 - t).pow(n - j)


def polychain(t: torch.Tensor, k: int) -> torch.Tensor:
    """Polygonal-chain coefficients: ``max(0, 1 - |t (k-1) - j|)`` (linear between neighbouring bends).

    Args:
        t: 0-d tensor in [0, 1].
        k: number of bends including the endpoints (>= 2).

    Returns:
        ``(k,)`` tensor with at most two non-zero entries, summing to 1.

    Example:
        >>> polychain(torch.tensor(0.25), 3)
        tensor([0.5000, 0.5000, 0.0000])
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    j = torch.arange(k, dtype=t.dtype)
    return torch.clamp(1 - torch.abs(t * (k - 1) - j), min=0)


PARAMETRIZATIONS: dict[str, Coefficients] = {"bezier": bezier, "polychain": polychain}


def get_parametrization(spec: str | Coefficients) -> Coefficients:
    """A registered parametrisation by name (``bezier``, ``polychain``) or the callable itself."""
    if callable(spec):
        return spec
    if spec not in PARAMETRIZATIONS:
        raise ConfigError(f"curve must be one of {', '.join(PARAMETRIZATIONS)} or a callable (t, k) -> (k,), got {spec!r}")
    return PARAMETRIZATIONS[spec]


def check_parametrization(fn: Coefficients, k: int) -> None:
    """Refuse a parametrisation that does not return ``(k,)`` or misses an endpoint at t = 0 or 1."""
    for t, end in ((0.0, 0), (1.0, k - 1)):
        c = fn(torch.tensor(t), k)
        if not isinstance(c, torch.Tensor) or tuple(c.shape) != (k,):
            raise ConfigError(f"curve coefficients must be a ({k},) tensor, got {getattr(c, 'shape', type(c))} at t={t}")
        target = torch.zeros(k)
        target[end] = 1.0
        if not torch.equal(c.detach().float().cpu(), target):
            raise ConfigError(f"curve coefficients at t={t:g} must be the unit vector e_{end} (the curve passes through the endpoint), got {c.tolist()}")
