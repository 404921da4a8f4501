"""Split conformal prediction sets from a predictive distribution (THR, APS, RAPS).

Calibrate a threshold ``qhat`` on held-out examples' nonconformity scores at their true
labels, then predict every class whose score is <= ``qhat``. For exchangeable
calibration and test data the set holds the true label with probability >= 1 - alpha.
Scores are computed once for all (example, class) pairs by one sort, a cumulative sum
and a scatter back to class order, and the same :func:`class_scores` serves both
calibration (gathered at the labels) and test (all classes).

Angelopoulos, Bates, Malik & Jordan, "Uncertainty Sets for Image Classifiers using
Conformal Prediction", ICLR 2021 (RAPS); Romano, Sesia & Candès, "Classification with
Valid and Adaptive Coverage", NeurIPS 2020 (APS); Sadinle, Lei & Wasserman, "Least
Ambiguous Set-Valued Classifiers with Bounded Error Levels", JASA 2019 (THR / LAC).
``probs`` here are one predictive distribution ``(N, C)``, for an ensemble the mean of
the members' probabilities.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .classification import check_labels, check_probs, check_values

__all__ = ["CONFORMAL_SCORES", "class_scores", "conformal_quantile", "prediction_sets", "split_conformal"]

CONFORMAL_SCORES = ("thr", "aps", "raps")


def _check_score(score: Any) -> str:
    if score not in CONFORMAL_SCORES:
        raise ConfigError(f"`score` must be one of {CONFORMAL_SCORES}, got {score!r}")
    return score


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) or not 0 < alpha < 1:
        raise ConfigError(f"`alpha` must be a number in (0, 1) (the allowed miscoverage), got {alpha!r}")
    return float(alpha)


def _check_reg(lam: Any, k_reg: Any) -> tuple[float, int]:
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer)) or not 0 <= lam < math.inf:
        raise ConfigError(f"`lam` must be a finite number >= 0, got {lam!r}")
    if isinstance(k_reg, bool) or not isinstance(k_reg, (int, np.integer)) or k_reg < 0:
        raise ConfigError(f"`k_reg` must be an integer >= 0, got {k_reg!r}")
    return float(lam), int(k_reg)


def _check_u(u: Any, n: int, device: torch.device) -> torch.Tensor:
    """``u`` as a float64 ``(N, 1)`` tensor of values in [0, 1]."""
    if not isinstance(u, torch.Tensor):
        try:
            u = torch.as_tensor(np.asarray(u, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise DataError(f"`u` must be a number or a tensor of shape (N,) = ({n},), got {type(u).__name__}") from exc
    u = u.detach().to(device=device, dtype=torch.float64)
    if u.dim() == 0:
        u = u.expand(n)
    if tuple(u.shape) not in ((n,), (n, 1)):
        raise DataError(f"`u` must be a number or have shape (N,) = ({n},), got shape {tuple(u.shape)}")
    if not bool(((u >= 0) & (u <= 1)).all()):
        raise DataError("`u` must hold values in [0, 1] (uniform draws), got values outside or NaN")
    return u.reshape(n, 1)


def class_scores(
    probs: torch.Tensor, score: str, u: torch.Tensor | None = None, lam: float = 0.01, k_reg: int = 1
) -> torch.Tensor:
    """Nonconformity score of every (example, class) pair; higher = less plausible.

    With the classes of an example sorted by probability descending (ties: lower class
    index first) and class c at 0-based rank r:

    - ``thr``: ``1 - p_c`` (Sadinle, Lei & Wasserman, JASA 2019);
    - ``aps``: ``sum of p over ranks < r + u * p_c`` (Romano, Sesia & Candès, NeurIPS 2020);
    - ``raps``: ``aps + lam * max(0, r + 1 - k_reg)`` (Angelopoulos et al., ICLR 2021).

    Args:
        probs: predictive distribution, shape ``(N, C)``.
        score: one of :data:`CONFORMAL_SCORES`.
        u: uniform draws in [0, 1] for the randomised APS / RAPS, shape ``(N,)`` (one per
            example, shared by its classes) or a number; default None means ``u = 1``
            (the non-randomised, conservative score). Ignored by ``thr``.
        lam: RAPS penalty per rank beyond ``k_reg`` (default 0.01, >= 0).
        k_reg: number of top ranks RAPS leaves unpenalised (default 1, >= 0).

    Returns:
        float64 tensor of shape ``(N, C)`` on ``probs``' device.

    Raises:
        ConfigError: unknown ``score``, ``lam`` < 0 or ``k_reg`` < 0.
        DataError: ``probs`` not ``(N, C)`` probabilities, bad ``u``.

    Example:
        >>> class_scores(torch.tensor([[0.2, 0.5, 0.3]]), "aps", u=torch.tensor([0.5]))
        tensor([[0.9000, 0.2500, 0.6500]], dtype=torch.float64)
    """
    score = _check_score(score)
    lam, k_reg = _check_reg(lam, k_reg)
    probs = check_probs(probs, ndim=2)
    check_values(probs)
    p = probs.detach()
    if p.device.type == "mps":  # thresholds need float64, which MPS lacks: compute on the CPU there
        p = p.cpu()
    p = p.to(torch.float64)
    if score == "thr":
        return 1.0 - p
    n, c = p.shape
    u = torch.ones(n, 1, dtype=torch.float64, device=p.device) if u is None else _check_u(u, n, p.device)
    sorted_p, order = torch.sort(p, dim=1, descending=True, stable=True)
    # mass of the strictly higher ranks (an exclusive cumsum; exactly 0 at rank 0)
    before = torch.cat([sorted_p.new_zeros(n, 1), torch.cumsum(sorted_p[:, :-1], dim=1)], dim=1)
    s_sorted = before + u * sorted_p
    if score == "raps":
        rank1 = torch.arange(1, c + 1, dtype=torch.float64, device=p.device)  # 1-based rank
        s_sorted = s_sorted + lam * (rank1 - k_reg).clamp_min(0.0)
    return torch.empty_like(s_sorted).scatter_(1, order, s_sorted)


def conformal_quantile(cal_scores: torch.Tensor, alpha: float) -> float:
    """The split-conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score.

    Equivalently the empirical quantile at level ``ceil((n+1)(1-alpha)) / n`` with
    "higher" interpolation; ``+inf`` (every class predicted) when that level exceeds 1,
    i.e. when ``n < 1/alpha - 1``. Vovk, Gammerman & Shafer, "Algorithmic Learning in a
    Random World", 2005; Angelopoulos et al., ICLR 2021.

    Args:
        cal_scores: calibration examples' scores at their true labels, shape ``(n,)``,
            n >= 1, finite.
        alpha: allowed miscoverage in (0, 1).

    Returns:
        qhat, a float (possibly ``inf``).

    Raises:
        ConfigError: ``alpha`` outside (0, 1).
        DataError: ``cal_scores`` empty, not 1-D or non-finite.

    Example:
        >>> conformal_quantile(torch.arange(1.0, 10.0), alpha=0.2)  # ceil(10 * 0.8) = 8th of 9
        8.0
    """
    alpha = _check_alpha(alpha)
    if not isinstance(cal_scores, torch.Tensor):
        try:
            cal_scores = torch.as_tensor(np.asarray(cal_scores, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise DataError(f"`cal_scores` must be a 1-D tensor of numbers, got {type(cal_scores).__name__}") from exc
    s = cal_scores.detach().to(torch.float64)
    if s.dim() != 1 or s.shape[0] == 0:
        raise DataError(f"`cal_scores` must be 1-D of shape (n,) with n >= 1, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()):
        raise DataError("`cal_scores` must be finite, got NaN or infinite values")
    n = s.shape[0]
    # The tolerance absorbs round-off: alpha = 0.7, n = 9 gives 10 * (1 - 0.7) = 3.0000000000000004.
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if k > n:
        return math.inf
    return float(torch.kthvalue(s.cpu(), max(k, 1)).values)


def prediction_sets(
    probs: torch.Tensor, qhat: float, score: str, u: torch.Tensor | None = None, lam: float = 0.01, k_reg: int = 1
) -> torch.Tensor:
    """Conformal prediction sets: class c is in example i's set iff its score <= ``qhat``.

    Args:
        probs: predictive distribution, shape ``(N, C)``.
        qhat: threshold from :func:`conformal_quantile` (``inf`` allowed: all classes).
        score, u, lam, k_reg: as :func:`class_scores`; use the same score, ``lam`` and
            ``k_reg`` as for calibration, and fresh uniform draws ``u``.

    Returns:
        bool tensor of shape ``(N, C)``.

    Raises:
        ConfigError: ``qhat`` not a number (or NaN), or as :func:`class_scores`.
        DataError: as :func:`class_scores`.

    Example:
        >>> prediction_sets(torch.tensor([[0.2, 0.5, 0.3]]), 0.75, "thr")
        tensor([[False,  True,  True]])
    """
    if isinstance(qhat, bool) or not isinstance(qhat, (int, float, np.floating, np.integer)) or math.isnan(qhat):
        raise ConfigError(f"`qhat` must be a number (inf allowed, not NaN), got {qhat!r}")
    return class_scores(probs, score, u=u, lam=lam, k_reg=k_reg) <= float(qhat)


def split_conformal(
    probs_cal: torch.Tensor,
    y_cal: torch.Tensor,
    probs_test: torch.Tensor,
    y_test: torch.Tensor,
    alpha: float = 0.1,
    score: str = "aps",
    seed: int = 0,
    lam: float = 0.01,
    k_reg: int = 1,
) -> dict[str, Any]:
    """Calibrate split conformal sets on one split and evaluate them on another.

    The uniform draws of APS / RAPS come from ``torch.Generator().manual_seed(seed)``
    for the calibration examples and ``manual_seed(seed + 1)`` for the test examples,
    so a result is reproducible from ``seed``. Angelopoulos, Bates, Malik & Jordan,
    "Uncertainty Sets for Image Classifiers using Conformal Prediction", ICLR 2021.

    Args:
        probs_cal: calibration predictive distribution, shape ``(n_cal, C)``.
        y_cal: calibration labels, shape ``(n_cal,)``, in ``[0, C)``.
        probs_test: test predictive distribution, shape ``(n_test, C)``.
        y_test: test labels, shape ``(n_test,)``.
        alpha: allowed miscoverage in (0, 1) (default 0.1: target coverage 90%).
        score: one of :data:`CONFORMAL_SCORES` (default ``"aps"``).
        seed: seed of the uniform draws (default 0, an integer).
        lam: RAPS penalty (default 0.01, >= 0); ignored by the other scores.
        k_reg: RAPS unpenalised ranks (default 1, >= 0); ignored by the other scores.

    Returns:
        dict of plain Python values: ``coverage`` (share of test examples whose label is
        in the set), ``mean_size``, ``median_size``, ``empty_fraction``, ``qhat`` (may be
        inf), ``alpha``, ``score``, ``lam``, ``k_reg``, ``seed``, ``n_cal``, ``n_test``,
        ``size_histogram`` (list of C + 1 counts of set sizes 0..C) and
        ``coverage_by_size`` (list of C + 1 coverages per set size, None where no set
        has that size).

    Raises:
        ConfigError: ``alpha`` outside (0, 1), unknown ``score``, ``lam`` < 0,
            ``k_reg`` < 0, non-integer ``seed``.
        DataError: bad probabilities or labels, or a different C in the two splits.

    Example:
        >>> res = split_conformal(p_cal, y_cal, p_test, y_test, alpha=0.1, score="raps")
        >>> res["coverage"], res["mean_size"]
    """
    alpha = _check_alpha(alpha)
    score = _check_score(score)
    lam, k_reg = _check_reg(lam, k_reg)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}")
    probs_cal = check_probs(probs_cal, ndim=2, name="probs_cal")
    probs_test = check_probs(probs_test, ndim=2, name="probs_test")
    check_values(probs_cal, name="probs_cal")
    check_values(probs_test, name="probs_test")
    if probs_cal.shape[1] != probs_test.shape[1]:
        raise DataError(
            f"`probs_cal` and `probs_test` must have the same number of classes, got {probs_cal.shape[1]} and "
            f"{probs_test.shape[1]}"
        )
    y_cal = check_labels(y_cal, probs_cal, name="y_cal")
    y_test = check_labels(y_test, probs_test, name="y_test")
    (n_cal, c), n_test = probs_cal.shape, probs_test.shape[0]
    u_cal = torch.rand(n_cal, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    u_test = torch.rand(n_test, generator=torch.Generator().manual_seed(int(seed) + 1), dtype=torch.float64)

    cal = class_scores(probs_cal, score, u=u_cal, lam=lam, k_reg=k_reg)
    cal_true = cal.gather(1, y_cal.to(cal.device).view(-1, 1)).squeeze(1)
    qhat = conformal_quantile(cal_true, alpha)
    sets = class_scores(probs_test, score, u=u_test, lam=lam, k_reg=k_reg) <= qhat
    covered = sets.gather(1, y_test.to(sets.device).view(-1, 1)).squeeze(1).to(torch.float64).cpu()
    sizes = sets.sum(1).cpu()
    hist = torch.bincount(sizes, minlength=c + 1)
    hits = torch.zeros(c + 1, dtype=torch.float64).scatter_add_(0, sizes, covered)
    return {
        "coverage": float(covered.mean()),
        "mean_size": float(sizes.to(torch.float64).mean()),
        "median_size": float(np.median(sizes.numpy())),
        "empty_fraction": float((sizes == 0).to(torch.float64).mean()),
        "qhat": float(qhat),
        "alpha": alpha,
        "score": score,
        "lam": lam,
        "k_reg": k_reg,
        "seed": int(seed),
        "n_cal": int(n_cal),
        "n_test": int(n_test),
        "size_histogram": [int(v) for v in hist.tolist()],
        "coverage_by_size": [float(h / m) if m > 0 else None for h, m in zip(hits.tolist(), hist.tolist())],
    }
