"""Regression metrics of a Gaussian predictive: RMSE, MAE, R², mixture NLL, CRPS, variance decomposition.

Every metric is a pure function of (predictive, targets). The predictive is a
:class:`~ensemblekit.metrics.predictive.Gaussian` (members' means and variances ``(M, N)`` or
``(M, N, D)``), or a ``(mean, var)`` pair of such tensors; the targets ``y`` have the shape of
one example set, ``(N,)`` or ``(N, D)``. The ensemble's predictive is the uniform mixture of
the members' Gaussians (Lakshminarayanan, Pritzel & Blundell, "Simple and Scalable Predictive
Uncertainty Estimation using Deep Ensembles", NeurIPS 2017); its NLL and CRPS are the
mixture's, exactly, not those of the moment-matched Gaussian.

Multi-output targets ``(N, D)``: each member's D outputs are independent Gaussians (diagonal).
The NLL is the joint one (a member's log-density is the sum over D, the mixture is over
members); the CRPS is univariate, so it is the sum over D of each output's marginal CRPS;
RMSE and MAE average over all N x D entries; R² is the mean of the D outputs' R². Results
are float64 tensors (0-d unless said otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError, DataError
from .classification import float_tensor
from .predictive import Gaussian, check_moment_values

__all__ = ["as_gaussian", "rmse", "mae", "r2", "gaussian_nll", "mixture_log_prob", "mixture_nll", "crps_gaussian",
           "crps_mixture", "variance_decomposition", "mean_spread"]

_LOG_2PI = math.log(2 * math.pi)
_REDUCTIONS = ("mean", "none")


# --------------------------------------------------------------------------- checks
# Shared by regression_calibration.py and regression_summary.py.

def as_gaussian(pred: Any) -> Gaussian:
    """``pred`` as a :class:`Gaussian`: a Gaussian is returned as is, a ``(mean, var)`` pair is checked and wrapped.

    Raises:
        DataError: anything else, or a pair that is not a valid predictive.
    """
    if isinstance(pred, Gaussian):
        return pred
    if isinstance(pred, (tuple, list)) and len(pred) == 2:
        return Gaussian(pred[0], pred[1])
    raise DataError(f"`pred` must be a Gaussian predictive or a (mean, var) pair of (M, N[, D]) tensors, got {type(pred).__name__}")


def check_targets(y: Any, shape: tuple[int, ...], *, name: str = "y", device: torch.device | None = None) -> torch.Tensor:
    """``y`` as a float64 tensor of exactly ``shape`` (``(N,)`` or ``(N, D)``), finite, or a one-line DataError."""
    y = float_tensor(y, name, " of regression targets")
    if tuple(y.shape) != tuple(shape):
        hint = " (a single output is (N,), not (N, 1))" if y.dim() == 2 and y.shape[-1] == 1 and len(shape) == 1 else ""
        raise DataError(f"`{name}` must have shape {tuple(shape)} to match the predictive, got shape {tuple(y.shape)}{hint}")
    y = y.detach().to(torch.float64)
    bad = int((~torch.isfinite(y)).sum())
    if bad:
        raise DataError(f"`{name}` must be finite, got {bad} NaN or infinite target(s) of {y.numel()}")
    return y if device is None else y.to(device)


def _point(pred: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Point predictions ``(..., *E)`` float64, targets ``E`` float64, and the number of leading axes."""
    if isinstance(pred, (Gaussian, tuple)):  # a list is point predictions, a tuple a (mean, var) pair
        pd = as_gaussian(pred)
        return pd.pooled()[0], check_targets(y, pd.example_shape, device=pd.mean.device), 0
    pred = float_tensor(pred, "pred", " of point predictions (..., N[, D])")
    yt = float_tensor(y, "y", " of regression targets")
    if yt.dim() not in (1, 2) or pred.dim() < yt.dim() or tuple(pred.shape[pred.dim() - yt.dim():]) != tuple(yt.shape):
        raise DataError(f"`pred` must end in the shape of `y` (N,) or (N, D), got shapes {tuple(pred.shape)} and {tuple(yt.shape)}")
    if not bool(torch.isfinite(pred.detach()).all()):
        raise DataError("`pred` must be finite, got NaN or infinite values")
    return pred.detach().to(torch.float64), check_targets(yt, tuple(yt.shape)), pred.dim() - yt.dim()


def _check_pair(mean: Any, var: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean``, ``var`` ``(..., *y.shape)`` and ``y`` ``(N,)`` / ``(N, D)``, all float64, checked."""
    yt = float_tensor(y, "y", " of regression targets")
    if yt.dim() not in (1, 2):
        raise DataError(f"`y` must have shape (N,) or (N, D), got shape {tuple(yt.shape)}")
    mean = float_tensor(mean, "mean", " of Gaussian means (..., N[, D])")
    var = float_tensor(var, "var", " of Gaussian variances (..., N[, D])")
    k = yt.dim()
    if mean.dim() < k or tuple(mean.shape[mean.dim() - k:]) != tuple(yt.shape):
        raise DataError(f"`mean` must end in the shape of `y` {tuple(yt.shape)}, got shape {tuple(mean.shape)}")
    if tuple(var.shape) != tuple(mean.shape):
        raise DataError(f"`var` must have the shape of `mean` {tuple(mean.shape)}, got shape {tuple(var.shape)}")
    check_moment_values(mean, var)
    y = check_targets(yt, tuple(yt.shape)).to(mean.device)
    return mean.detach().to(torch.float64), var.detach().to(device=mean.device, dtype=torch.float64), y


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    return per_example.mean(-1) if reduction == "mean" else per_example


def _sum_outputs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over the output axis D when the targets have one."""
    return x.sum(-1) if y.dim() == 2 else x


# --------------------------------------------------------------------------- point metrics

def rmse(pred: Any, y: Any) -> torch.Tensor:
    """Root mean squared error of the ensemble's mean (the mixture's mean ``mean_m mu_m``).

    Args:
        pred: a Gaussian predictive (or a ``(mean, var)`` tuple), scored by its pooled mean; or a
            tensor (or array, list) of point predictions ``(..., N[, D])`` ending in ``y``'s shape, scored along
            its leading axes (``rmse(pd.mean, y)`` gives the members' RMSE ``(M,)``).
        y: targets ``(N,)`` or ``(N, D)``; with D > 1 the mean is over all N x D entries.

    Returns:
        float64 tensor: 0-d, or the leading axes of a point-prediction tensor.

    Raises:
        DataError: shapes that disagree, NaN targets or predictions, bad variances.

    Example:
        >>> rmse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0]))  # sqrt((1 + 0) / 2)
        tensor(0.7071, dtype=torch.float64)
    """
    mu, y, _ = _point(pred, y)
    return (mu - y).square().flatten(-y.dim()).mean(-1).sqrt()


def mae(pred: Any, y: Any) -> torch.Tensor:
    """Mean absolute error of the ensemble's mean; arguments and shapes as :func:`rmse`."""
    mu, y, _ = _point(pred, y)
    return (mu - y).abs().flatten(-y.dim()).mean(-1)


def r2(pred: Any, y: Any) -> torch.Tensor:
    """Coefficient of determination ``1 - sum (y - mu)^2 / sum (y - ybar)^2`` of the ensemble's mean.

    With D > 1 the mean of the D outputs' R² (scikit-learn's ``uniform_average``). An output
    whose targets are all equal has no R² (NaN). Arguments and shapes as :func:`rmse`.
    """
    mu, y, _ = _point(pred, y)
    yy = y if y.dim() == 2 else y.unsqueeze(-1)
    mm = mu if y.dim() == 2 else mu.unsqueeze(-1)
    ss_res = (mm - yy).square().sum(-2)
    ss_tot = (yy - yy.mean(0)).square().sum(0)
    out = 1.0 - ss_res / ss_tot
    return torch.where(ss_tot > 0, out, torch.full_like(out, math.nan)).mean(-1)


# --------------------------------------------------------------------------- scoring rules

def _log_normal(mu: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -0.5 * (_LOG_2PI + var.log() + (y - mu).square() / var)


def gaussian_nll(mean: Any, var: Any, y: Any, reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of one Gaussian per leading index (e.g. each member):
    ``0.5 * (log(2 pi var) + (y - mean)^2 / var)``, summed over D, averaged over examples.

    Args:
        mean, var: ``(..., N)`` or ``(..., N, D)``, ending in ``y``'s shape; ``var`` > 0
            (``gaussian_nll(pd.mean, pd.var, y)`` gives the members' NLL ``(M,)``).
        y: targets ``(N,)`` or ``(N, D)``.
        reduction: ``"mean"`` (default) over examples, or ``"none"`` for ``(..., N)``.

    Returns:
        float64 tensor of the leading shape ``(...)`` (``(..., N)`` with ``"none"``).

    Raises:
        DataError: bad shapes, NaN targets, variances not finite and > 0.
        ConfigError: an unknown ``reduction``.

    Example:
        >>> gaussian_nll(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0]))  # 0.5 log(2 pi)
        tensor(0.9189, dtype=torch.float64)
    """
    mu, v, y = _check_pair(mean, var, y)
    return _reduce(-_sum_outputs(_log_normal(mu, v, y), y), reduction)


def mixture_log_prob(pred: Any, y: Any) -> torch.Tensor:
    """Per-example log-density ``(N,)`` of the uniform mixture: ``logsumexp_m log N(y; mu_m, var_m) - log M``
    (with D > 1 a member's log-density is the sum over its D independent outputs)."""
    pd = as_gaussian(pred)
    y = check_targets(y, pd.example_shape, device=pd.mean.device)
    lp = _sum_outputs(_log_normal(pd.mean.detach().double(), pd.var.detach().double(), y), y)  # (M, N)
    return torch.logsumexp(lp, dim=0) - math.log(pd.num_members)


def mixture_nll(pred: Any, y: Any, reduction: str = "mean") -> torch.Tensor:
    """Exact negative log-likelihood of the ensemble's uniform Gaussian mixture (not moment-matched).

    ``NLL = -mean_n log( 1/M sum_m N(y_n; mu_mn, var_mn) )``, computed with logsumexp over
    members, so it stays finite where every member's density underflows. With one member it
    equals :func:`gaussian_nll`. Lakshminarayanan et al., NeurIPS 2017 (Deep Ensembles).

    Args:
        pred: a Gaussian predictive or a ``(mean, var)`` pair.
        y: targets ``(N,)`` or ``(N, D)``.
        reduction: ``"mean"`` (default) or ``"none"`` (per example ``(N,)``).

    Returns:
        float64 0-d tensor (``(N,)`` with ``"none"``).

    Raises:
        DataError: bad shapes, NaN targets, bad variances. ConfigError: unknown ``reduction``.

    Example:
        >>> pd = Gaussian(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [4.0]]))
        >>> mixture_nll(pd, torch.tensor([1.0]))  # -log(0.5 (N(1; 0, 1) + N(1; 2, 4)))
        tensor(1.5654, dtype=torch.float64)
    """
    return _reduce(-mixture_log_prob(pred, y), reduction)


def _a(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Grimit et al.'s ``A(mu, s^2) = E|Z|`` for ``Z ~ N(mu, s^2)``: ``mu (2 Phi(mu/s) - 1) + 2 s phi(mu/s)``."""
    s = var.sqrt()
    u = mu / s
    return mu * (2.0 * torch.special.ndtr(u) - 1.0) + 2.0 * s * torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def crps_gaussian(mean: Any, var: Any, y: Any, reduction: str = "mean") -> torch.Tensor:
    """Closed-form CRPS of one Gaussian per leading index (e.g. each member), summed over D.

    ``CRPS(N(mu, s^2), y) = s [ z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi) ]``, ``z = (y - mu)/s``
    (Gneiting & Raftery, "Strictly Proper Scoring Rules, Prediction, and Estimation", JASA
    2007). Lower is better; it has the units of ``y``.

    Args, Returns, Raises: as :func:`gaussian_nll`.

    Example:
        >>> crps_gaussian(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0]))  # (sqrt 2 - 1)/sqrt pi
        tensor(0.2337, dtype=torch.float64)
    """
    mu, v, y = _check_pair(mean, var, y)
    s = v.sqrt()
    crps = _a(y - mu, v) - s / math.sqrt(math.pi)
    return _reduce(_sum_outputs(crps, y), reduction)


def crps_mixture(pred: Any, y: Any, reduction: str = "mean") -> torch.Tensor:
    """Closed-form CRPS of the ensemble's uniform Gaussian mixture (exact, not moment-matched).

    ``CRPS = E|X - y| - 1/2 E|X - X'|`` with X, X' independent draws of the mixture, i.e.
    ``1/M sum_m A(y - mu_m, s_m^2) - 1/(2 M^2) sum_{m,k} A(mu_m - mu_k, s_m^2 + s_k^2)``,
    ``A(mu, s^2) = mu (2 Phi(mu/s) - 1) + 2 s phi(mu/s)`` (Grimit, Gneiting, Berrocal & Johnson,
    "The continuous ranked probability score for circular variables and its application to
    mesoscale forecast ensemble verification", QJRMS 2006). O(M² N D) time, computed one
    member row at a time so memory stays O(M N D). With D > 1, the sum over outputs of each
    output's marginal CRPS.

    Args, Returns, Raises: as :func:`mixture_nll`.

    Example:
        >>> crps_mixture(Gaussian(torch.zeros(1, 1), torch.ones(1, 1)), torch.zeros(1))  # = crps_gaussian
        tensor(0.2337, dtype=torch.float64)
    """
    pd = as_gaussian(pred)
    y = check_targets(y, pd.example_shape, device=pd.mean.device)
    mu, v = pd.mean.detach().double(), pd.var.detach().double()
    first = _a(y - mu, v).mean(0)
    spread = torch.zeros_like(first)
    for m in range(pd.num_members):  # row m of the pairwise term: E|X_m - X'| over the partner member
        spread = spread + _a(mu[m] - mu, v[m] + v).mean(0)
    crps = first - 0.5 * spread / pd.num_members
    return _reduce(_sum_outputs(crps, y), reduction)


# --------------------------------------------------------------------------- diversity

def variance_decomposition(pred: Any) -> dict[str, torch.Tensor]:
    """The law of total variance of the mixture, averaged over examples (and outputs).

    Returns:
        dict of float64 0-d tensors: ``aleatoric`` (mean of ``mean_m var_m``), ``epistemic``
        (mean of the population variance of the members' means), ``total`` (their sum, the mean
        of the pooled variance), ``epistemic_share`` (``epistemic / total``, in [0, 1)).

    Example:
        >>> variance_decomposition(Gaussian(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [4.0]])))
        {'aleatoric': 2.5, 'epistemic': 1.0, 'total': 3.5, 'epistemic_share': 0.2857...}  # as tensors
    """
    pd = as_gaussian(pred)
    alea, epi = pd.aleatoric().mean(), pd.epistemic().mean()
    total = alea + epi
    return {"aleatoric": alea, "epistemic": epi, "total": total, "epistemic_share": epi / total}


def mean_spread(pred: Any) -> torch.Tensor:
    """Diversity of the members' means: the std of the means over members (population), averaged over
    examples (and outputs); 0 when every member predicts the same mean."""
    return as_gaussian(pred).epistemic().sqrt().mean()
