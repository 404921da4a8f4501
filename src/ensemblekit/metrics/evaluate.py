"""``evaluate(ensemble, split)``: every metric of a fitted ensemble on one split (with optional TTA)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from .summary import evaluate_probs

if TYPE_CHECKING:  # pragma: no cover
    from ..data.dataset import Split
    from ..ensemble import Ensemble

__all__ = ["evaluate", "predict_proba"]

Transform = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_proba(ensemble: "Ensemble", split: "Split", tta: Sequence[Transform] | None = None, batch_size: int = 1024) -> torch.Tensor:
    """Per-member probabilities ``(M, N, C)``; with ``tta``, the mean over the transformed inputs.

    Test-time augmentation averages each member's predictive distribution over a fixed
    set of deterministic transforms (marginalising the prediction over augmentations).
    """
    if not tta:
        return ensemble.predict_proba(split, batch_size=batch_size)
    from ..data.dataset import Split as _Split

    x, y = split.tensors()
    total = None
    for t in tta:
        p = ensemble.predict_proba(_Split(t(x), y), batch_size=batch_size)
        total = p if total is None else total + p
    return total / len(tta)


def evaluate(ensemble: "Ensemble", split: "Split", n_bins: int = 15, batch_size: int = 1024, tta: Sequence[Transform] | None = None) -> dict[str, Any]:
    """Accuracy, error %, NLL, Brier, ECE of the ensemble and of each member, diversity and the size curve.

    Args:
        ensemble: a fitted :class:`~ensemblekit.ensemble.Ensemble`.
        split: e.g. ``data.test``.
        n_bins: ECE bins (default 15).
        tta: deterministic transforms whose predictions are averaged (see
            :func:`ensemblekit.data.augment.build_tta`); ``None``: the plain input.

    Returns:
        A JSON-able dict (see :func:`~ensemblekit.metrics.summary.evaluate_probs`).
    """
    probs = predict_proba(ensemble, split, tta, batch_size)
    _, y = split.tensors()
    return evaluate_probs(probs.cpu(), y.cpu(), n_bins=n_bins)
