"""Metrics on ensemble predictions: members' probabilities ``(M, B, C)`` and labels ``(B,)``.

The ensemble's predictive distribution is always the mean of the members'
probabilities (:func:`ensemble_mean`), never an average of logits.
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
