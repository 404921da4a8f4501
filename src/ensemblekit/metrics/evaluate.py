"""``evaluate(ensemble, split)``: every metric of a fitted ensemble on one split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .summary import evaluate_probs

if TYPE_CHECKING:  # pragma: no cover
    from ..data.dataset import Split
    from ..ensemble import Ensemble

__all__ = ["evaluate"]


def evaluate(ensemble: "Ensemble", split: "Split", n_bins: int = 15, batch_size: int = 1024) -> dict[str, Any]:
    """Accuracy, error %, NLL, Brier, ECE of the ensemble and of each member, diversity and the size curve.

    Args:
        ensemble: a fitted :class:`~ensemblekit.ensemble.Ensemble`.
        split: e.g. ``data.test``.
        n_bins: ECE bins (default 15).

    Returns:
        A JSON-able dict (see :func:`~ensemblekit.metrics.summary.evaluate_probs`).
    """
    probs = ensemble.predict_proba(split, batch_size=batch_size)
    _, y = split.tensors()
    return evaluate_probs(probs.cpu(), y.cpu(), n_bins=n_bins)
