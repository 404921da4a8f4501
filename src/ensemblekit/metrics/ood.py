"""Out-of-distribution scores of an ensemble and the metrics that judge them.

:func:`uncertainty_scores` turns members' probabilities ``(M, N, C)`` (and, for the
logit-based scores, members' logits ``(M, N, C)``) into per-example scores ``(N,)``.
Every score is oriented so that HIGHER means MORE UNCERTAIN, i.e. more likely
out-of-distribution (OOD); :func:`detection_metrics` takes the scores of in- and
out-of-distribution examples under that same orientation. All scores are computed in
float64 (float32 on MPS); the ensemble's distribution is the mean of the members'
probabilities, and the ensemble's logits (for ``energy`` / ``max_logit``) the mean of
the members' logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .classification import check_probs, check_values, f64, float_tensor
from .diversity import entropy_nats

__all__ = ["SCORES", "PREDICTOR_SCORES", "PROB_SCORES", "uncertainty_scores", "detection_metrics", "detection_curves"]

SCORES = ("msp", "entropy", "mi", "energy", "max_logit")
PREDICTOR_SCORES = ("density",)
"""Scores a predictor computes itself (``example_scores``; :func:`ensemblekit.evaluation.forward.predictive`):
``density`` is minus the log-density of a DDU's features under its class-conditional Gaussians
(Mukhoti et al., "Deep Deterministic Uncertainty: A New Simple Baseline", CVPR 2023)."""
PROB_SCORES = ("msp", "entropy", "mi")  # the scores that need no logits
_LOGIT_SCORES = ("energy", "max_logit")


def _check_score_names(scores: Any) -> tuple[str, ...]:
    if isinstance(scores, str):
        scores = (scores,)
    try:
        names = tuple(dict.fromkeys(scores))  # order-preserving de-duplication
    except TypeError as exc:
        raise ConfigError(f"`scores` must be a sequence of score names from {SCORES}, got {scores!r}") from exc
    if not names:
        raise ConfigError(f"`scores` must name at least one score from {SCORES}, got {scores!r}")
    unknown = [s for s in names if s not in SCORES]
    if unknown:
        raise ConfigError(f"`scores` holds unknown score(s) {unknown!r}; valid scores are {SCORES}")
    return names


def _check_logits(logits: Any, probs: torch.Tensor) -> torch.Tensor:
    logits = float_tensor(logits, "logits", "")
    if tuple(logits.shape) != tuple(probs.shape):
        raise DataError(
            f"`logits` must have the shape of `probs` (M, N, C) = {tuple(probs.shape)}, got shape {tuple(logits.shape)}"
        )
    if not bool(torch.isfinite(logits.detach()).all()):
        raise DataError("`logits` must be finite, got NaN or infinite values")
    return logits.to(probs.device)


def uncertainty_scores(
    probs: torch.Tensor, logits: torch.Tensor | None = None, scores: Sequence[str] = SCORES
) -> dict[str, torch.Tensor]:
    """Per-example uncertainty (OOD) scores of an ensemble, higher = more uncertain.

    With ``pbar = mean_m p_m`` and ``zbar = mean_m z_m``:

    - ``msp``: ``-max_c pbar_c`` (negated maximum softmax probability; Hendrycks & Gimpel,
      "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural
      Networks", ICLR 2017);
    - ``entropy``: ``H[pbar]``, the total predictive entropy (natural log, 0 log 0 = 0);
    - ``mi``: ``H[pbar] - mean_m H[p_m]``, the mutual information between label and
      member (the epistemic part; Depeweg et al., "Decomposition of Uncertainty in
      Bayesian Deep Learning for Efficient and Risk-sensitive Learning", ICML 2018;
      Lakshminarayanan, Pritzel & Blundell, "Simple and Scalable Predictive Uncertainty
      Estimation using Deep Ensembles", NeurIPS 2017), tiny negative round-off clamped
      to 0;
    - ``energy``: ``-logsumexp_c zbar_c`` (Liu, Wang, Owens & Li, "Energy-based
      Out-of-distribution Detection", NeurIPS 2020);
    - ``max_logit``: ``-max_c zbar_c`` (Hendrycks et al., "Scaling Out-of-Distribution
      Detection for Real-World Settings", ICML 2022).

    Args:
        probs: members' probabilities, shape ``(M, N, C)``.
        logits: members' logits, shape ``(M, N, C)``; needed only for ``energy`` and
            ``max_logit`` (default None).
        scores: names of the scores to compute, a subset of :data:`SCORES` (default all
            five, which needs ``logits``; pass ``PROB_SCORES`` without logits). A single
            name may be given as a string.

    Returns:
        dict name -> float64 tensor of shape ``(N,)`` on ``probs``' device, in the order
        requested.

    Raises:
        ConfigError: an unknown score name, or ``energy`` / ``max_logit`` requested
            without ``logits``.
        DataError: ``probs`` not 3-D probabilities, ``logits`` of another shape or
            non-finite.

    Example:
        >>> p = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]])
        >>> uncertainty_scores(p, scores=("msp",))["msp"]
        tensor([-0.7000], dtype=torch.float64)
    """
    names = _check_score_names(scores)
    probs = check_probs(probs, ndim=3)
    check_values(probs)
    needs_logits = [s for s in names if s in _LOGIT_SCORES]
    if needs_logits and logits is None:
        raise ConfigError(
            f"score(s) {needs_logits} need `logits` of shape (M, N, C); pass logits, or request only "
            f"probability-based scores {PROB_SCORES}"
        )
    p = f64(probs)
    pbar = p.mean(0)
    out: dict[str, torch.Tensor] = {}
    total = entropy_nats(pbar) if ("entropy" in names or "mi" in names) else None
    zbar = f64(_check_logits(logits, probs)).mean(0) if needs_logits else None
    for name in names:
        if name == "msp":
            out[name] = -pbar.max(-1).values
        elif name == "entropy":
            out[name] = total
        elif name == "mi":
            out[name] = (total - entropy_nats(p).mean(0)).clamp_min(0.0)
        elif name == "energy":
            out[name] = -torch.logsumexp(zbar, dim=-1)
        else:  # max_logit
            out[name] = -zbar.max(-1).values
    return out


def _as_scores(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite, non-empty 1-D float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"`{name}` must be a 1-D tensor or array of numbers, got {type(x).__name__}") from exc
    if arr.ndim != 1:
        raise DataError(f"`{name}` must be 1-D of shape (N,), got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"`{name}` must hold at least one score, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"`{name}` must be finite, got {int((~np.isfinite(arr)).sum())} NaN or infinite value(s)")
    return arr


def _labelled(score_in: Any, score_out: Any) -> tuple[np.ndarray, np.ndarray]:
    s_in, s_out = _as_scores(score_in, "score_in"), _as_scores(score_out, "score_out")
    is_ood = np.concatenate([np.zeros(s_in.size, dtype=np.int64), np.ones(s_out.size, dtype=np.int64)])
    return is_ood, np.concatenate([s_in, s_out])


def detection_metrics(score_in: torch.Tensor, score_out: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR@95%TPR of separating OOD from in-distribution.

    Scores follow :func:`uncertainty_scores`' orientation: higher = more OOD.

    - ``auroc``: area under the ROC curve with OOD as the positive class (0.5 = chance,
      ties count one half);
    - ``aupr_out``: average precision with OOD positive, ranked by the score;
    - ``aupr_in``: average precision with in-distribution positive, ranked by ``-score``;
    - ``fpr95``: the fraction of OOD examples accepted as in-distribution at the
      strictest threshold that accepts at least 95% of the in-distribution examples
      (an example is accepted when its score is <= the threshold, so OOD examples tied
      with the threshold are accepted). Computed from the full (undropped) ROC curve
      with in-distribution positive and ``-score``: the FPR at the first TPR >= 0.95.

    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017 (the protocol); average precision and ROC
    from scikit-learn.

    Args:
        score_in: scores of in-distribution examples, shape ``(N1,)``, N1 >= 1.
        score_out: scores of OOD examples, shape ``(N2,)``, N2 >= 1.

    Returns:
        dict of plain floats ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95``, each in [0, 1].

    Raises:
        DataError: an input is empty, not 1-D, or holds NaN / infinite scores.

    Example:
        >>> detection_metrics(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9]))["auroc"]
        1.0
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    is_ood, s = _labelled(score_in, score_out)
    fpr, tpr, _ = roc_curve(1 - is_ood, -s, drop_intermediate=False)
    first = int(np.argmax(tpr >= 0.95))  # tpr ends at 1.0, so some entry qualifies
    return {
        "auroc": float(roc_auc_score(is_ood, s)),
        "aupr_in": float(average_precision_score(1 - is_ood, -s)),
        "aupr_out": float(average_precision_score(is_ood, s)),
        "fpr95": float(fpr[first]),
    }


def detection_curves(score_in: torch.Tensor, score_out: torch.Tensor, max_points: int = 200) -> dict[str, Any]:
    """The ROC curve of OOD detection (OOD positive, higher score = more OOD), for plotting.

    The curve is the one whose area is :func:`detection_metrics`' ``auroc``; when it has
    more than ``max_points`` points it is thinned to ``max_points`` evenly spaced ones,
    always keeping both ends, (0, 0) and (1, 1).

    Args:
        score_in: scores of in-distribution examples, shape ``(N1,)``, N1 >= 1.
        score_out: scores of OOD examples, shape ``(N2,)``, N2 >= 1.
        max_points: most points returned (default 200, >= 2).

    Returns:
        dict with ``fpr`` and ``tpr`` (lists of floats of equal length <= ``max_points``,
        non-decreasing) and ``auroc`` (float, of the full curve).

    Raises:
        DataError: an input is empty, not 1-D, or holds NaN / infinite scores.
        ConfigError: ``max_points`` not an integer >= 2.

    Example:
        >>> c = detection_curves(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9]))
        >>> c["fpr"][0], c["tpr"][-1]
        (0.0, 1.0)
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 2:
        raise ConfigError(f"`max_points` must be an integer >= 2, got {max_points!r}")
    is_ood, s = _labelled(score_in, score_out)
    fpr, tpr, _ = roc_curve(is_ood, s)
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, int(max_points)).round().astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auroc": float(roc_auc_score(is_ood, s))}
