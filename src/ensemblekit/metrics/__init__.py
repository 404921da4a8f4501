"""Metrics: pure functions of a predictive distribution (or its tensors) and the targets.

Owns: the predictive types (:mod:`.predictive`: :class:`~.predictive.Categorical` for
classification, :class:`~.predictive.Gaussian` for regression), classification metrics
(:mod:`.classification`, :mod:`.summary`: accuracy, NLL, Brier, ECE, size curves),
diversity, calibration (temperature, per member, vector, DEE), OOD scores and detection,
selective prediction, conformal sets, margins, and regression metrics (:mod:`.regression`,
:mod:`.regression_calibration`, :mod:`.regression_summary`: RMSE, mixture NLL and CRPS,
interval coverage, quantile calibration, variance scaling).

For classification the ensemble's predictive distribution is always the mean of the
members' probabilities (:func:`ensemble_mean`), never an average of logits.

May import: ``errors`` and ``data`` (splits) only.
"""

from __future__ import annotations

from .classification import accuracy, brier, ece, ensemble_mean, nll, reliability
from .diversity import ambiguity, disagreement, entropy_decomposition, pairwise_kl
from .summary import evaluate_probs, size_curve

__all__ = [
    # classification: (..., B, C) -> (...)
    "accuracy",
    "nll",
    "brier",
    "ece",
    "reliability",
    "ensemble_mean",
    # diversity: (M, B, C) -> scalar
    "disagreement",
    "pairwise_kl",
    "ambiguity",
    "entropy_decomposition",
    # summary
    "size_curve",
    "evaluate_probs",
]
