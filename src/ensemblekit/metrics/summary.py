"""One call that turns an ensemble's predictions into every number a report needs.

:func:`evaluate_probs` takes members' probabilities ``(M, B, C)`` and labels ``(B,)``
and returns a JSON-able dict (plain floats and lists): the ensemble's metrics, each
member's, their mean, diversity, and the size curve (the ensemble of the first k
members for k = 1..M), which is what a "methods x budgets" comparison plots.
"""

from __future__ import annotations

from typing import Any

import torch

from .classification import (
    check_labels,
    check_n_bins,
    check_probs,
    check_values,
    f64,
    accuracy,
    brier,
    ece,
    nll,
)
from .diversity import disagreement, entropy_decomposition, pairwise_kl

__all__ = ["size_curve", "evaluate_probs"]

_METRICS = ("accuracy", "error", "nll", "brier", "ece")


def _metrics(probs: torch.Tensor, y: torch.Tensor, n_bins: int) -> dict[str, torch.Tensor]:
    """accuracy, error (%), nll, brier, ece of ``probs`` ``(..., B, C)``, each ``(...)``."""
    acc = accuracy(probs, y)
    return {
        "accuracy": acc,
        "error": 100.0 * (1.0 - acc),
        "nll": nll(probs, y),
        "brier": brier(probs, y),
        "ece": ece(probs, y, n_bins=n_bins),  # binned in the input's own precision
    }


def _size_curve(probs: torch.Tensor, y: torch.Tensor, n_bins: int) -> dict[str, list]:
    p = f64(probs)
    M = p.shape[0]
    k = torch.arange(1, M + 1, dtype=p.dtype, device=p.device).view(M, 1, 1)
    prefix_means = p.cumsum(0) / k  # (M, B, C): row k-1 is the ensemble of members 0..k-1
    curve: dict[str, list] = {"members": list(range(1, M + 1))}
    curve.update({name: v.tolist() for name, v in _metrics(prefix_means, y, n_bins).items()})
    return curve


def size_curve(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, list]:
    """Metrics of the ensemble of the first k members, for k = 1..M (members in order).

    The k-member means come from one cumulative sum, so the cost is that of evaluating
    M distributions, not of M separate averages.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``.
        y: int64 labels, shape ``(B,)``.
        n_bins: ECE bins (default 15, >= 1).

    Returns:
        dict of lists of length M: ``members`` ``[1, ..., M]``, ``accuracy``,
        ``error`` (percent), ``nll``, ``brier``, ``ece``. Entry 0 is member 0 alone;
        entry M-1 is the full ensemble.

    Raises:
        DataError: ``probs`` not ``(M, B, C)`` probabilities, labels bad.
        ConfigError: ``n_bins`` < 1.

    Example:
        >>> curve = size_curve(probs, y)
        >>> curve["error"][-1]  # the full ensemble's test error, in percent
    """
    n_bins = check_n_bins(n_bins)
    probs = check_probs(probs, ndim=3)
    y = check_labels(y, probs)
    check_values(probs)
    return _size_curve(probs, y, n_bins)


def evaluate_probs(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, Any]:
    """Every metric of an ensemble's predictions, as a JSON-able dict.

    The ensemble is the mean of the members' probabilities. Its metrics are taken from
    the size curve's last entry, so the two agree exactly, and ``diversity.ambiguity``
    equals ``member_mean.nll - nll`` exactly.

    Args:
        probs: members' probabilities, shape ``(M, B, C)``, each row summing to 1
            (tolerance 1e-3). For a single model pass ``probs[None]``.
        y: int64 labels, shape ``(B,)``, values in ``[0, C)``.
        n_bins: ECE bins (default 15, >= 1).

    Returns:
        dict with plain Python floats, ints and lists:

        - ``accuracy``, ``error`` (= 100 * (1 - accuracy), percent), ``nll``, ``brier``,
          ``ece``: of the ensemble;
        - ``members``: dict of length-M lists, same keys;
        - ``member_mean``: dict, the mean over members of each of those;
        - ``diversity``: ``disagreement``, ``pairwise_kl``, ``ambiguity``,
          ``entropy_total``, ``entropy_expected``, ``mutual_information``;
        - ``size_curve``: as :func:`size_curve`;
        - ``num_members``, ``num_examples``, ``num_classes``, ``n_bins``.

    Raises:
        DataError: ``probs`` not 3-D, not probabilities (e.g. logits), NaN, or shapes
            disagreeing with ``y``; labels not integers in range.
        ConfigError: ``n_bins`` < 1.

    Example:
        >>> res = evaluate_probs(torch.stack([m(x).softmax(-1) for m in models]), y)
        >>> res["error"], res["member_mean"]["error"], res["diversity"]["disagreement"]
    """
    n_bins = check_n_bins(n_bins)
    probs = check_probs(probs, ndim=3)
    y = check_labels(y, probs)
    check_values(probs)
    M, B, C = probs.shape

    member = _metrics(probs, y, n_bins)  # each (M,)
    curve = _size_curve(probs, y, n_bins)
    ensemble = {name: float(curve[name][-1]) for name in _METRICS}
    entropy = entropy_decomposition(probs)
    diversity = {
        "disagreement": float(disagreement(probs)),
        "pairwise_kl": float(pairwise_kl(probs)),
        "ambiguity": float(member["nll"].mean()) - ensemble["nll"],
        "entropy_total": float(entropy["total"]),
        "entropy_expected": float(entropy["expected"]),
        "mutual_information": float(entropy["mutual_information"]),
    }
    return {
        **ensemble,
        "members": {name: v.tolist() for name, v in member.items()},
        "member_mean": {name: float(v.mean()) for name, v in member.items()},
        "diversity": diversity,
        "size_curve": curve,
        "num_members": int(M),
        "num_examples": int(B),
        "num_classes": int(C),
        "n_bins": n_bins,
    }
