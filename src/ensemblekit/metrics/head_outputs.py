"""The output convention of regression heads: raw outputs -> means and variances -> a Gaussian predictive.

A learned-variance head (the ``gaussian`` model wrapper, :mod:`ensemblekit.models.gaussian_head`)
returns one tensor ``(..., 2*D)``: the D means, then the D raw variances, which become
``softplus(raw) + min_var`` (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017: a positive
variance through softplus; the floor keeps the NLL finite). A ``variance: none`` head returns
the D means only. The convention lives here, below the models, so that the one prediction pass
(:mod:`ensemblekit.evaluation.forward`) and the losses read it without knowing any model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .predictive import Gaussian

__all__ = ["split_gaussian", "split_mean", "gaussian_from_outputs"]


def _check_min_var(min_var: Any) -> float:
    if isinstance(min_var, bool) or not isinstance(min_var, (int, float)) or not min_var >= 0:
        raise ConfigError(f"min_var must be a number >= 0 (the variance floor), got {min_var!r}")
    return float(min_var)


def split_gaussian(out: torch.Tensor, min_var: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and variances from a learned-variance head's raw outputs.

    ``mean = out[..., :D]``, ``var = softplus(out[..., D:]) + min_var``.

    Args:
        out: raw outputs ``(..., 2*D)``: ``(B, 2*D)`` from one member, ``(M, B, 2*D)`` from
            a stacked ensemble.
        min_var: the variance floor (default 1e-6, >= 0): every variance is > ``min_var``
            (>= for an output so negative that softplus underflows to 0).

    Returns:
        ``(mean, var)``, each ``(..., D)``; for D = 1 the last axis is squeezed, so one
        target gives ``(B,)`` (``(M, B)`` stacked), the layout of
        :class:`~ensemblekit.metrics.predictive.Gaussian` for one target.

    Raises:
        DataError: ``out`` has no last axis or an odd one.
        ConfigError: ``min_var`` < 0.

    Example:
        >>> mean, var = split_gaussian(torch.zeros(3, 2))
        >>> mean.shape, var[0].item()   # (torch.Size([3]), log(2) + 1e-6)
    """
    min_var = _check_min_var(min_var)
    if out.dim() < 1 or out.shape[-1] % 2 or out.shape[-1] == 0:
        raise DataError(f"a gaussian head's outputs must have an even last axis 2*D (means, then raw variances), "
                        f"got shape {tuple(out.shape)}")
    d = out.shape[-1] // 2
    mean, raw = out[..., :d], out[..., d:]
    var = F.softplus(raw) + min_var
    if d == 1:
        return mean.squeeze(-1), var.squeeze(-1)
    return mean, var


def split_mean(out: torch.Tensor) -> torch.Tensor:
    """The means of a ``variance: none`` head: ``out`` ``(..., D)``, squeezed to ``(...)`` for D = 1.

    Example:
        >>> split_mean(torch.zeros(4, 1)).shape
        torch.Size([4])
    """
    if out.dim() < 1 or out.shape[-1] == 0:
        raise DataError(f"a mean head's outputs must have a last axis D >= 1, got shape {tuple(out.shape)}")
    return out.squeeze(-1) if out.shape[-1] == 1 else out


def gaussian_from_outputs(out: torch.Tensor, min_var: float = 1e-6) -> Gaussian:
    """The members' predictive of a learned-variance head's stacked raw outputs ``(M, N, 2*D)``."""
    if out.dim() != 3:
        raise DataError(f"a gaussian head's stacked outputs must be (M, N, 2*D), got shape {tuple(out.shape)}")
    mean, var = split_gaussian(out, min_var)
    return Gaussian(mean, var)
