"""Selective prediction: risk-coverage curves, AURC, AUGRC and excess AURC.

A selective classifier answers only on the examples it is most confident about. With
the N examples sorted by ``confidence`` descending, at coverage ``k/N`` (k = 1..N) it
answers on the k most confident ones; its selective risk is ``errors_k / k`` and its
generalized risk ``errors_k / N``, where ``errors_k`` counts the mistakes among them.

Ties: examples of equal confidence are ranked in random order, and every quantity here
is the expectation over that order. By linearity this equals replacing each example's
error indicator by its tie group's mean error before the cumulative sum, which is what
is computed (exactly, without sampling). So a constant confidence has risk equal to the
overall error rate at every coverage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = ["risk_coverage", "aurc", "augrc", "excess_aurc", "selective_summary"]


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except Exception as exc:  # noqa: BLE001 - any conversion failure is bad data
        raise DataError(f"`{name}` must be a 1-D tensor or array, got {type(x).__name__}") from exc


def _check_inputs(confidence: Any, correct: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``confidence`` as float64 ``(N,)`` and the errors ``1 - correct`` as float64 ``(N,)``."""
    conf, corr = _as_tensor(confidence, "confidence"), _as_tensor(correct, "correct")
    if conf.dim() != 1 or corr.dim() != 1:
        raise DataError(
            f"`confidence` and `correct` must be 1-D of shape (N,), got shapes {tuple(conf.shape)} and {tuple(corr.shape)}"
        )
    if conf.shape[0] == 0:
        raise DataError("`confidence` must hold at least one example, got shape (0,)")
    if conf.shape != corr.shape:
        raise DataError(
            f"`confidence` and `correct` must have the same length, got {conf.shape[0]} and {corr.shape[0]}"
        )
    if conf.is_complex() or conf.dtype == torch.bool:
        raise DataError(f"`confidence` must be real numbers, got dtype {conf.dtype}")
    conf = conf.to(torch.float64)
    if not bool(torch.isfinite(conf).all()):
        raise DataError("`confidence` must be finite, got NaN or infinite values")
    if corr.is_complex():
        raise DataError(f"`correct` must be bool or 0/1, got dtype {corr.dtype}")
    corr = corr.to(device=conf.device, dtype=torch.float64)
    if not bool(((corr == 0) | (corr == 1)).all()):
        bad = corr[(corr != 0) & (corr != 1)][0].item()
        raise DataError(f"`correct` must be bool or 0/1 (1 = correct), got the value {bad!r}")
    return conf, 1.0 - corr


def _expected_errors(conf: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """Errors sorted by confidence descending, each replaced by its tie group's mean."""
    order = torch.argsort(conf, descending=True, stable=True)
    conf_s, err_s = conf[order], err[order]
    _, group, counts = torch.unique_consecutive(conf_s, return_inverse=True, return_counts=True)
    sums = err_s.new_zeros(counts.shape[0]).scatter_add_(0, group, err_s)
    return (sums / counts.to(err_s.dtype))[group]


def risk_coverage(confidence: torch.Tensor, correct: torch.Tensor) -> dict[str, torch.Tensor]:
    """The risk-coverage curve of answering on the most confident examples first.

    Geifman & El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS 2017;
    generalized risk from Traub et al., "Overcoming Common Flaws in the Evaluation of
    Selective Classification Systems", NeurIPS 2024. Ties are resolved in expectation
    (see the module docstring).

    Args:
        confidence: finite confidence scores, shape ``(N,)``, N >= 1 (higher = more sure).
        correct: whether each prediction is right, bool or 0/1, shape ``(N,)``.

    Returns:
        dict of float64 tensors of shape ``(N,)``: ``coverage`` ``k/N``, ``risk``
        ``errors_k / k`` and ``generalized_risk`` ``errors_k / N`` for k = 1..N.

    Raises:
        DataError: inputs not 1-D, empty, of different lengths, non-finite confidence,
            or ``correct`` not bool / 0-1.

    Example:
        >>> risk_coverage(torch.tensor([0.9, 0.8]), torch.tensor([True, False]))["risk"]
        tensor([0.0000, 0.5000], dtype=torch.float64)
    """
    conf, err = _check_inputs(confidence, correct)
    n = conf.shape[0]
    cum = _expected_errors(conf, err).cumsum(0)
    k = torch.arange(1, n + 1, dtype=torch.float64, device=conf.device)
    return {"coverage": k / n, "risk": cum / k, "generalized_risk": cum / n}


def aurc(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Area under the risk-coverage curve: the mean over k = 1..N of the selective risk.

    Geifman, Uziel & El-Yaniv, "Bias-Reduced Uncertainty Estimation for Deep Neural
    Classifiers", ICLR 2019.

    Args:
        confidence: finite confidence scores, shape ``(N,)``, N >= 1.
        correct: bool or 0/1, shape ``(N,)``.

    Returns:
        AURC in [0, 1] (lower is better), a float.

    Raises:
        DataError: as :func:`risk_coverage`.

    Example:
        >>> aurc(torch.tensor([0.9, 0.8]), torch.tensor([True, False]))
        0.25
    """
    return float(risk_coverage(confidence, correct)["risk"].mean())


def augrc(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Area under the generalized risk-coverage curve: the mean over k of ``errors_k / N``.

    Traub et al., "Overcoming Common Flaws in the Evaluation of Selective Classification
    Systems", NeurIPS 2024. Equals the probability that a random wrong example is
    accepted before a random other example (up to the discrete ends).

    Args:
        confidence: finite confidence scores, shape ``(N,)``, N >= 1.
        correct: bool or 0/1, shape ``(N,)``.

    Returns:
        AUGRC in [0, 1] (lower is better), a float.

    Raises:
        DataError: as :func:`risk_coverage`.

    Example:
        >>> augrc(torch.tensor([0.9, 0.8]), torch.tensor([True, False]))
        0.25
    """
    return float(risk_coverage(confidence, correct)["generalized_risk"].mean())


def _optimal_aurc(n: int, n_err: float) -> float:
    """AURC of the ranking that puts all ``n - n_err`` correct examples first."""
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((k - (n - n_err)).clamp_min(0.0) / k).mean())


def excess_aurc(confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """E-AURC: AURC minus the AURC of the optimal ranking of the same errors.

    The optimal ranking accepts all correct examples before any wrong one; its AURC is
    computed exactly in the discrete form ``(1/N) sum_k max(0, k - (N - E)) / k`` (E =
    number of errors) rather than by the continuous approximation
    ``r + (1 - r) log(1 - r)``. Geifman, Uziel & El-Yaniv, "Bias-Reduced Uncertainty
    Estimation for Deep Neural Classifiers", ICLR 2019.

    Args:
        confidence: finite confidence scores, shape ``(N,)``, N >= 1.
        correct: bool or 0/1, shape ``(N,)``.

    Returns:
        E-AURC >= 0 (0 for a perfect ranking), a float.

    Raises:
        DataError: as :func:`risk_coverage`.

    Example:
        >>> excess_aurc(torch.tensor([0.9, 0.8]), torch.tensor([True, False]))
        0.0
    """
    conf, err = _check_inputs(confidence, correct)
    return aurc(conf, 1.0 - err) - _optimal_aurc(conf.shape[0], float(err.sum()))


def _check_coverages(coverages: Any) -> tuple[float, ...]:
    try:
        values = tuple(float(c) for c in coverages)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"`coverages` must be a sequence of numbers in (0, 1], got {coverages!r}") from exc
    bad = [c for c in values if not 0 < c <= 1]
    if bad:
        raise ConfigError(f"`coverages` must lie in (0, 1], got {bad!r}")
    return values


def selective_summary(
    confidence: torch.Tensor, correct: torch.Tensor, coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95)
) -> dict[str, Any]:
    """AURC, AUGRC, E-AURC, error rate and selective risk at chosen coverages.

    The risk at coverage ``c`` is the risk of the ``k = ceil(c N)`` most confident
    examples (the smallest k with ``k / N >= c``). Geifman, Uziel & El-Yaniv, ICLR 2019
    (AURC, E-AURC); Traub et al., NeurIPS 2024 (AUGRC).

    Args:
        confidence: finite confidence scores, shape ``(N,)``, N >= 1.
        correct: bool or 0/1, shape ``(N,)``.
        coverages: coverages in (0, 1] to report the risk at (default 0.5, 0.8, 0.9, 0.95).

    Returns:
        dict of plain floats: ``aurc``, ``augrc``, ``e_aurc``, ``error_rate`` (the risk
        at full coverage), ``n`` (int), and ``risk@{c:g}`` for each coverage, e.g.
        ``risk@0.9``.

    Raises:
        DataError: as :func:`risk_coverage`.
        ConfigError: a coverage outside (0, 1].

    Example:
        >>> s = selective_summary(torch.tensor([0.9, 0.8]), torch.tensor([1, 0]), coverages=(0.5,))
        >>> s["risk@0.5"], s["error_rate"]
        (0.0, 0.5)
    """
    values = _check_coverages(coverages)
    conf, err = _check_inputs(confidence, correct)
    n = conf.shape[0]
    curve = risk_coverage(conf, 1.0 - err)
    risk = curve["risk"]
    out: dict[str, Any] = {
        "aurc": float(risk.mean()),
        "augrc": float(curve["generalized_risk"].mean()),
        "e_aurc": float(risk.mean()) - _optimal_aurc(n, float(err.sum())),
        "error_rate": float(risk[-1]),
        "n": int(n),
    }
    for c in values:
        k = min(n, max(1, math.ceil(c * n - 1e-9)))  # tolerance: 0.7 * 90 = 63.00000000000001 gives 63
        out[f"risk@{c:g}"] = float(risk[k - 1])
    return out
