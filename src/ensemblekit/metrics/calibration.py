"""Temperature scaling of an ensemble's predictive distribution and the deep-ensemble equivalent.

Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017
(temperature scaling); Ashukha, Lyzhov, Molchanov & Vetrov, "Pitfalls of In-Domain
Uncertainty Estimation and Ensembling in Deep Learning", ICLR 2020 (calibrated
log-likelihood and the deep-ensemble equivalent, DEE).

The ensemble's distribution ``p = mean_m p_m`` is scaled as ``softmax(log p / T)`` with the
one temperature T that minimises the NLL on a held-out split (the validation split; never
the test split the result is reported on). The *calibrated NLL* is the test NLL after that
scaling. A method's DEE is the (interpolated) number of independently trained members
whose calibrated test NLL it matches, read off the independent ensemble's size curve.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .classification import check_labels, check_probs, f64

__all__ = ["fit_temperature", "fit_member_temperatures", "fit_vector_scaling", "scale_probs", "calibrated_nll",
           "calibrated_size_curve", "deep_ensemble_equivalent"]


def _lbfgs(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int = 100) -> None:
    """Minimise ``loss_fn`` over ``params`` in place with torch.optim.LBFGS (strong Wolfe line search)."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _fit_log_temperatures(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log T`` of shape ``z.shape[:-2]`` minimising the mean NLL of ``softmax(z / T)`` for each leading index."""
    z = z.detach()
    log_t = torch.zeros(z.shape[:-2] + (1, 1), dtype=z.dtype, device=z.device, requires_grad=True)
    yy = y.view(*([1] * (z.dim() - 2)), -1, 1).expand(*z.shape[:-1], 1)

    def loss() -> torch.Tensor:  # each leading index's NLL is separable: their sum has every optimum at once
        lp = torch.log_softmax(z / log_t.clamp(_LOG_T_MIN, _LOG_T_MAX).exp(), dim=-1)
        return -lp.gather(-1, yy).mean(-2).sum()

    with torch.enable_grad():
        _lbfgs([log_t], loss)
    out = log_t.detach().clamp(_LOG_T_MIN, _LOG_T_MAX).view(z.shape[:-2])
    # A split with no misclassified example: its NLL falls monotonically as T -> 0, so the
    # "optimum" is the bound, which makes every test error arbitrarily costly. T = 1 is kept.
    separable = (z.argmax(-1) == y.view(*([1] * (z.dim() - 2)), -1)).all(-1)
    return torch.where(separable, torch.zeros_like(out), out)


_LOG_T_MIN, _LOG_T_MAX = math.log(1e-2), math.log(1e2)


def fit_temperature(probs: torch.Tensor, y: torch.Tensor) -> float:
    """The temperature minimising the NLL of ``softmax(log probs / T)`` (LBFGS on log T, T in [0.01, 100]).

    When every example of the split is classified correctly the NLL has no minimum (it falls
    as T -> 0: the fit would make the model arbitrarily confident and every test error
    arbitrarily costly), and T = 1 (no scaling) is returned.

    Args:
        probs: ``(B, C)`` predictive probabilities (an ensemble's mean). y: ``(B,)`` labels.

    Returns:
        T (> 1: the distribution was over-confident).

    Example:
        >>> t = fit_temperature(ensemble.predict(data.val), data.val.y)
    """
    probs = f64(check_probs(probs, ndim=2))
    y = check_labels(y, probs)
    return float(_fit_log_temperatures(probs.clamp_min(1e-12).log(), y).exp())


def fit_member_temperatures(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    """One temperature per member, each minimising that member's NLL of ``softmax(z_m / T_m)`` (one LBFGS run for all).

    Args:
        logits: members' logits ``(M, B, C)``. y: ``(B,)`` labels.
    """
    logits = f64(check_probs(logits, ndim=3, name="logits"))
    y = check_labels(y, logits)
    return _fit_log_temperatures(logits, y).exp().tolist()


def fit_vector_scaling(probs: torch.Tensor, y: torch.Tensor, l2: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Vector scaling (Guo et al. 2017): per-class ``w, b`` minimising the NLL of ``softmax(w * log probs + b)``
    plus ``l2 * (|w - 1|² + |b|²)``.

    The penalty toward the identity matters on small or separable validation splits: without
    it, a split the model classifies perfectly drives ``w`` to infinity (NLL -> 0 there) and
    the test NLL explodes (digits, 95 validation examples: w ≈ 20, test NLL 0.05 -> 0.52).

    Args:
        probs: ``(B, C)`` predictive probabilities. y: ``(B,)`` labels. l2: the penalty (>= 0; default 0.01).

    Returns:
        ``w`` and ``b``, each ``(C,)`` float64.
    """
    probs = f64(check_probs(probs, ndim=2))
    y = check_labels(y, probs)
    z = probs.clamp_min(1e-12).log()
    w = torch.ones(z.shape[-1], dtype=z.dtype, requires_grad=True)
    b = torch.zeros(z.shape[-1], dtype=z.dtype, requires_grad=True)

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(z * w + b, y) + l2 * ((w - 1).square().sum() + b.square().sum())

    with torch.enable_grad():
        _lbfgs([w, b], loss)
    return w.detach(), b.detach()


def scale_probs(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log probs / T)``: a distribution temperature-scaled after pooling, ``(..., B, C)``."""
    return torch.softmax(f64(probs).clamp_min(1e-12).log() / temperature, dim=-1)


def _scaled_nll(logp: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    return float(-torch.log_softmax(logp / temperature, dim=-1).gather(1, y.view(-1, 1)).mean())


def calibrated_nll(probs: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    """NLL of ``softmax(log probs / T)``."""
    probs = f64(check_probs(probs, ndim=2))
    return _scaled_nll(probs.clamp_min(1e-12).log(), check_labels(y, probs), temperature)


def calibrated_size_curve(val: torch.Tensor, y_val: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> dict[str, list[float]]:
    """For the ensembles of the first 1..M members: the temperature (fit on ``val``) and the calibrated test NLL.

    Args:
        val, test: ``(M, B, C)`` member probabilities on the held-out and the test split.
    """
    temps, nlls = [], []
    for k in range(1, val.shape[0] + 1):
        t = fit_temperature(val[:k].mean(0), y_val)
        temps.append(t)
        nlls.append(calibrated_nll(test[:k].mean(0), y_test, t))
    return {"members": list(range(1, val.shape[0] + 1)), "temperature": temps, "calibrated_nll": nlls}


def deep_ensemble_equivalent(value: float, reference: Sequence[float]) -> float:
    """How many independent members match a calibrated NLL of ``value``.

    ``reference[k - 1]`` is the calibrated NLL of k independent members (decreasing in k).
    Linear interpolation between sizes; ``1.0`` when ``value`` is no better than one
    member, ``inf`` when it is better than the largest reference ensemble.
    """
    ref = list(reference)
    if not ref:
        return math.nan
    if value >= ref[0]:
        return 1.0
    for k in range(1, len(ref)):
        if value >= ref[k]:
            lo, hi = ref[k - 1], ref[k]
            return k + (lo - value) / (lo - hi) if lo > hi else float(k + 1)
    return math.inf
