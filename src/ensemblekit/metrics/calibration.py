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
from typing import Sequence

import torch

from .classification import _check_labels, _check_probs, _f64

__all__ = ["fit_temperature", "calibrated_nll", "calibrated_size_curve", "deep_ensemble_equivalent"]


def _scaled_nll(logp: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    return float(-torch.log_softmax(logp / temperature, dim=-1).gather(1, y.view(-1, 1)).mean())


def fit_temperature(probs: torch.Tensor, y: torch.Tensor, low: float = 0.05, high: float = 20.0, iters: int = 60) -> float:
    """The temperature minimising the NLL of ``softmax(log probs / T)`` (golden-section on log T).

    Args:
        probs: ``(B, C)`` predictive probabilities (an ensemble's mean). y: ``(B,)`` labels.
    """
    probs = _f64(_check_probs(probs, ndim=2))
    y = _check_labels(y, probs)
    logp = probs.clamp_min(1e-12).log()
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _scaled_nll(logp, y, math.exp(c)), _scaled_nll(logp, y, math.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _scaled_nll(logp, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _scaled_nll(logp, y, math.exp(d))
    return math.exp((a + b) / 2)


def calibrated_nll(probs: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    """NLL of ``softmax(log probs / T)``."""
    probs = _f64(_check_probs(probs, ndim=2))
    return _scaled_nll(probs.clamp_min(1e-12).log(), _check_labels(y, probs), temperature)


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
