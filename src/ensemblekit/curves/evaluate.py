"""Evaluating a curve: networks at fixed ``t`` with BatchNorm recomputed, grids of ``t``, curve ensembles.

Every point is evaluated as a member of one stacked :class:`~ensemblekit.ensemble.Ensemble`
(``M = len(ts)``): its BatchNorm statistics are recomputed by one pass over the training
data at that ``t`` with a cumulative average (:func:`~ensemblekit.ensemble.bn.recompute_bn`),
then train loss/error and test error/NLL are measured. docs/methods.md (curve_ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..data.dataset import Data, Split
from ..ensemble import Ensemble
from ..ensemble.bn import recompute_bn
from ..errors import ConfigError
from ..metrics.classification import accuracy, nll
from .model import CurveModel

__all__ = ["CurveEvaluation", "curve_points", "evaluate_curve", "two_model_errors", "curve_ensemble", "summarize", "t_grid"]


def t_grid(n: int = 61) -> list[float]:
    """``n`` evenly spaced values of t in [0, 1] (n >= 2; default 61 as in the paper's code)."""
    if n < 2:
        raise ConfigError(f"the t grid needs at least 2 points, got {n}")
    return [float(t) for t in np.linspace(0.0, 1.0, n)]


def curve_points(curve: CurveModel, ts: Sequence[float], train: Split, bn_batch_size: int = 256) -> Ensemble:
    """The networks at ``ts`` as one Ensemble, BatchNorm statistics recomputed on ``train`` at each t."""
    ens = curve.points(ts)
    return recompute_bn(ens, train, batch_size=bn_batch_size)


@dataclass
class CurveEvaluation:
    """Metrics along a grid of t; arrays have shape ``(T,)``; errors in percent.

    ``test_probs`` ``(T, N, C)`` are kept for ensembles of points (``two_model_errors``).
    """

    ts: np.ndarray
    train_loss: np.ndarray
    train_error: np.ndarray
    test_error: np.ndarray
    test_nll: np.ndarray
    test_probs: torch.Tensor = field(repr=False)

    def table(self) -> list[dict[str, float]]:
        return [
            {"t": float(t), "train_loss": float(a), "train_error": float(b), "test_error": float(c), "test_nll": float(d)}
            for t, a, b, c, d in zip(self.ts, self.train_loss, self.train_error, self.test_error, self.test_nll)
        ]


def _metrics(probs: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return (100.0 * (1.0 - accuracy(probs, y))).cpu().numpy(), nll(probs, y).cpu().numpy()


@torch.no_grad()
def evaluate_curve(curve: CurveModel, data: Data, ts: Sequence[float] | None = None, chunk: int = 16, bn_batch_size: int = 256) -> CurveEvaluation:
    """Train loss, train error, test error and test NLL of ``curve`` at each t.

    Args:
        curve: a trained curve (or ``curve.line()`` for the straight segment).
        data: its dataset (``data.test`` required; BatchNorm and train metrics use ``data.train``).
        ts: the grid (default :func:`t_grid` (61 points)).
        chunk: points evaluated together (memory vs speed; >= 1).
        bn_batch_size: batch size of the BatchNorm pass.

    Returns:
        a :class:`CurveEvaluation`.

    Example:
        >>> ev = evaluate_curve(curve, data); ev.test_error.max()
    """
    if data.test is None:
        raise ConfigError("evaluating a curve needs data.test")
    ts = t_grid() if ts is None else [float(t) for t in ts]
    ytr, yte = data.train.tensors()[1], data.test.tensors()[1]
    parts: dict[str, list[Any]] = {"train_loss": [], "train_error": [], "test_error": [], "test_nll": [], "probs": []}
    for start in range(0, len(ts), max(1, chunk)):
        ens = curve_points(curve, ts[start:start + chunk], data.train, bn_batch_size)
        ptr = ens.predict_proba(data.train).cpu()
        pte = ens.predict_proba(data.test).cpu()
        err, loss = _metrics(ptr, ytr)
        parts["train_loss"].append(loss)
        parts["train_error"].append(err)
        err, loss = _metrics(pte, yte)
        parts["test_error"].append(err)
        parts["test_nll"].append(loss)
        parts["probs"].append(pte)
    cat = {k: np.concatenate(v) for k, v in parts.items() if k != "probs"}
    return CurveEvaluation(np.asarray(ts), test_probs=torch.cat(parts["probs"]), **cat)


def two_model_errors(ev: CurveEvaluation, y: torch.Tensor, ref: int = 0) -> np.ndarray:
    """Test error (%) of the two-model ensemble ``{phi(ts[ref]), phi(t)}`` for every t of ``ev``
    (``ref = 0`` is w0: the seed's right-hand panel). Probabilities are averaged."""
    p = ev.test_probs
    pair = 0.5 * (p[ref].unsqueeze(0) + p)
    return (100.0 * (1.0 - accuracy(pair, y.to(p.device)))).cpu().numpy()


def curve_ensemble(curve: CurveModel, k: int, train: Split, ts: Sequence[float] | None = None) -> Ensemble:
    """An ensemble of ``k`` networks on the curve, BatchNorm recomputed at each point.

    Args:
        k: members (>= 1). ts: their t values (default ``k`` evenly spaced values in [0, 1]
            including both endpoints; ``k = 1`` is the midpoint). The default is this
            library's reading of "multi-point curve ensembles" (docs/methods.md, curve_ensemble).
    """
    if k < 1:
        raise ConfigError(f"a curve ensemble needs k >= 1 members, got {k}")
    ts = ([0.5] if k == 1 else t_grid(k)) if ts is None else list(ts)
    if len(ts) != k:
        raise ConfigError(f"curve_ensemble: {len(ts)} t values given for k={k}")
    return curve_points(curve, ts, train)


def summarize(ev: CurveEvaluation) -> dict[str, float]:
    """min/max/mean/integral (trapezoid over t) of train loss and test error, and the barrier:
    max test error minus the mean of the two endpoints' (t = 0 and t = 1) test errors."""
    out: dict[str, float] = {}
    for name in ("train_loss", "test_error"):
        v = getattr(ev, name)
        out.update({f"{name}_min": float(v.min()), f"{name}_max": float(v.max()), f"{name}_mean": float(v.mean()),
                    f"{name}_int": float(np.sum((v[1:] + v[:-1]) * np.diff(ev.ts)) / 2)})
    ends = 0.5 * (ev.test_error[0] + ev.test_error[-1])
    out["barrier"] = float(ev.test_error.max() - ends)
    mid = int(np.argmin(np.abs(ev.ts - 0.5)))
    out["mid_train_loss"] = float(ev.train_loss[mid])
    out["mid_test_error"] = float(ev.test_error[mid])
    return out
