"""Per-member regression losses for the mean-variance head (:mod:`ensemblekit.models.gaussian_head`).

Each member m trains on its own loss; the engine steps the sum, so one optimizer over
stacked tensors is M independent ones (docs/architecture.md, training/). The shape
conventions are those of :func:`ensemblekit.training.engine.cross_entropy_per_member`:
outputs ``(M, B, ...)``, targets shared ``(B, ...)`` or per member ``(M, B, ...)``, and
``(M,)`` member losses, the mean over the B examples, each example's loss summed over its
D target dimensions.

- :func:`gaussian_nll_per_member`: the Gaussian negative log-likelihood
  ``0.5 * (log(2 pi var) + (y - mu)^2 / var)`` (Lakshminarayanan, Pritzel & Blundell,
  "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles", NeurIPS 2017).
- :func:`beta_nll_per_member`: each example's NLL weighted by ``stop_gradient(var^beta)``
  (Seitzer et al., "On the Pitfalls of Heteroscedastic Uncertainty Estimation with
  Probabilistic Neural Networks", ICLR 2022). Its gradients are
  ``d/dmu = var^beta (mu - y) / var`` and ``d/dvar = var^beta * 0.5 (1/var - (y - mu)^2/var^2)``:
  ``beta = 0`` is the NLL, ``beta = 1`` gives the mean the gradient ``mu - y`` of
  ``0.5 (y - mu)^2`` (half the MSE's), ``beta = 0.5`` is the paper's recommendation.
- :func:`mse_per_member`: ``(y - mu)^2`` for a ``variance: none`` head.

How the engine takes them. The Trainer's loss slot is a ``LossFn``
(:mod:`ensemblekit.training.wiring`): ``loss_fn(out (M, B, K), batch) -> (M,)``, chosen by
:func:`~ensemblekit.training.wiring.stage_loss` from the Trainer's ``loss_fn`` /
``loss_for`` arguments or the default. :func:`regression_loss` builds exactly such a
function (marked ``member_wise``, so ``train.member_chunk`` and mixup keep working), so
wiring regression is one line: the Trainer's
``stage_loss(..., default=cross_entropy_per_member)`` becomes
``default=regression_loss("nll") if data.task == "regression" else cross_entropy_per_member``
(or a method passes ``loss_fn=regression_loss("beta_nll", beta=0.5)``). Shared targets are
told from per-member ones by comparing their shape with the outputs' (``(B, D)`` has one axis
fewer than ``(M, B, D)``), so the losses need nothing from the batch but ``batch.y``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..data.batching import Batch
from ..errors import ConfigError, DataError
from ..models.gaussian_head import split_gaussian, split_mean

__all__ = ["REGRESSION_LOSSES", "gaussian_nll_per_member", "beta_nll_per_member", "mse_per_member", "regression_loss"]

REGRESSION_LOSSES = ("nll", "beta_nll", "mse")
"""The names :func:`regression_loss` takes."""

_LOG_2PI = math.log(2 * math.pi)


def _targets(y: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``y`` broadcast to ``mean`` ``(M, B, *E)``: shared ``(B, *E)`` or per member ``(M, B, *E)``
    (a trailing axis of 1 is dropped when ``E = ()``: ``(B, 1)`` targets for one output)."""
    if mean.dim() < 2:
        raise DataError(f"member outputs must be (M, B, ...) (a member axis first), got means of shape {tuple(mean.shape)}")
    if mean.dim() == 2 and y.dim() >= 2 and y.shape[-1] == 1 and tuple(y.shape[:-1]) in (tuple(mean.shape), tuple(mean.shape[1:])):
        y = y.squeeze(-1)
    if tuple(y.shape) == tuple(mean.shape[1:]):
        y = y.unsqueeze(0)
    elif tuple(y.shape) != tuple(mean.shape):
        raise DataError(f"regression targets must have shape {tuple(mean.shape[1:])} (shared) or {tuple(mean.shape)} "
                        f"(per member) for outputs giving means {tuple(mean.shape)}, got {tuple(y.shape)}")
    return y.to(mean.dtype).expand_as(mean)


def _reduce(per_entry: torch.Tensor) -> torch.Tensor:
    """``(M, B)`` or ``(M, B, D)`` -> ``(M,)``: summed over D, averaged over B."""
    if per_entry.dim() == 3:
        per_entry = per_entry.sum(-1)
    return per_entry.mean(1)


def _nll_terms(out: torch.Tensor, y: torch.Tensor, min_var: float) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = split_gaussian(out, min_var)
    y = _targets(y, mean)
    return 0.5 * (_LOG_2PI + torch.log(var) + (y - mean).square() / var), var


def gaussian_nll_per_member(out: torch.Tensor, y: torch.Tensor, min_var: float = 1e-6) -> torch.Tensor:
    """Each member's mean Gaussian negative log-likelihood.

    ``L_m = mean_b sum_d 0.5 * (log(2 pi var) + (y - mu)^2 / var)`` with
    ``(mu, var) = split_gaussian(out, min_var)``.

    Args:
        out: raw outputs of a learned-variance head ``(M, B, 2*D)``.
        y: targets ``(B,)``/``(B, D)`` shared by the members, or ``(M, B)``/``(M, B, D)``
            (D = 1: ``(B,)``, ``(B, 1)``, ``(M, B)``).
        min_var: the variance floor (default 1e-6, >= 0).

    Returns:
        ``(M,)`` member losses; member m's reads only ``out[m]``.

    Raises:
        DataError: shapes that do not match. ConfigError: ``min_var`` < 0.

    Example:
        >>> raw = torch.log(torch.expm1(torch.tensor(2.0)))          # softplus(raw) = 2
        >>> gaussian_nll_per_member(torch.tensor([[[1.0, raw]]]), torch.zeros(1), min_var=0)
        tensor([1.5155])                                              # 0.5 * (log(4 pi) + 1/2)
    """
    nll, _ = _nll_terms(out, y, min_var)
    return _reduce(nll)


def beta_nll_per_member(out: torch.Tensor, y: torch.Tensor, beta: float = 0.5, min_var: float = 1e-6) -> torch.Tensor:
    """Each member's beta-NLL: every entry's NLL weighted by ``stop_gradient(var^beta)``.

    ``L_m = mean_b sum_d sg(var^beta) * 0.5 * (log(2 pi var) + (y - mu)^2 / var)``
    (Seitzer et al., ICLR 2022, eq. 4). The weight is detached, so it rescales each entry's
    gradient without being a term to minimise: ``beta = 0`` is :func:`gaussian_nll_per_member`,
    ``beta = 1`` gives the mean the gradient ``mu - y`` (that of ``0.5 (y - mu)^2``) and the
    variance ``var`` times the NLL's.

    Args:
        out, y, min_var: as in :func:`gaussian_nll_per_member`.
        beta: the weight's exponent, in [0, 1] (default 0.5, the paper's choice).

    Returns:
        ``(M,)`` member losses.

    Raises:
        ConfigError: ``beta`` outside [0, 1] or ``min_var`` < 0. DataError: shapes.

    Example:
        >>> beta_nll_per_member(out, y, beta=0.5)    # out (M, B, 2), y (B,) -> (M,)
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
        raise ConfigError(f"beta must be a number in [0, 1] (0: the NLL, 1: the mean's MSE gradient), got {beta!r}")
    nll, var = _nll_terms(out, y, min_var)
    if beta == 0:
        return _reduce(nll)
    return _reduce(var.detach().pow(float(beta)) * nll)


def mse_per_member(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean squared error ``mean_b sum_d (y - mu)^2`` for a ``variance: none`` head.

    Args:
        out: the members' means ``(M, B, D)`` (``(M, B, 1)`` or ``(M, B)`` for one target).
        y: targets as in :func:`gaussian_nll_per_member`.

    Returns:
        ``(M,)`` member losses.

    Example:
        >>> mse_per_member(torch.tensor([[[1.0], [3.0]]]), torch.tensor([0.0, 1.0]))
        tensor([2.5000])                          # mean of 1 and 4
    """
    mean = split_mean(out)
    return _reduce((_targets(y, mean) - mean).square())


def regression_loss(name: str = "nll", *, beta: float = 0.5, min_var: float = 1e-6) -> Callable[[torch.Tensor, Batch], torch.Tensor]:
    """The engine's loss slot for regression: ``loss_fn(out (M, B, K), batch) -> (M,)``.

    Args:
        name: ``nll`` (:func:`gaussian_nll_per_member`), ``beta_nll``
            (:func:`beta_nll_per_member`) or ``mse`` (:func:`mse_per_member`, for a
            ``variance: none`` head).
        beta: beta-NLL's exponent in [0, 1] (default 0.5; only for ``beta_nll``).
        min_var: the variance floor >= 0 (default 1e-6; ``nll`` and ``beta_nll``).

    Returns:
        a ``LossFn`` reading ``batch.y``, marked ``member_wise`` (member m's loss reads only
        ``out[m]``, so members may be trained in chunks).

    Raises:
        ConfigError: an unknown name (the valid ones listed), ``beta`` or ``min_var`` out of range.

    Example:
        >>> trainer = Trainer(ensemble, data, config, loss_fn=regression_loss("beta_nll", beta=0.5))
    """
    if name not in REGRESSION_LOSSES:
        raise ConfigError(f"unknown regression loss {name!r}; valid: {', '.join(REGRESSION_LOSSES)}")
    # validate now, not at the first step
    beta_nll_per_member(torch.zeros(1, 1, 2), torch.zeros(1), beta=beta, min_var=min_var)

    def loss_fn(out: torch.Tensor, batch: Batch) -> torch.Tensor:
        if name == "nll":
            return gaussian_nll_per_member(out, batch.y, min_var)
        if name == "beta_nll":
            return beta_nll_per_member(out, batch.y, beta, min_var)
        return mse_per_member(out, batch.y)

    loss_fn.__name__ = f"{name}_per_member"
    loss_fn.member_wise = True  # type: ignore[attr-defined]
    return loss_fn

