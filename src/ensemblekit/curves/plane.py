"""Test error over the 2-D plane through w0, w1 and the curve's first free bend (the seed's figure).

The plane has an orthonormal basis (Gram-Schmidt over all parameters flattened):
``u = (w1 - w0) / |w1 - w0|`` and ``v`` the unit part of ``bend - w0`` orthogonal to ``u``;
a grid point ``(x, y)`` is the network ``w0 + x u + y v``, evaluated with BatchNorm
recomputed on the training data (so a ``G x G`` grid costs ``G^2`` BatchNorm passes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

from ..data.dataset import Data
from ..errors import ConfigError
from ..metrics.classification import accuracy
from .evaluate import curve_points
from .model import CurveModel

__all__ = ["plane_grid"]


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.detach().reshape(-1) for v in d.values()])


@torch.no_grad()
def plane_grid(curve: CurveModel, data: Data, size: int = 11, margin: float = 0.2, chunk: int = 16, curve_points_n: int = 31) -> dict[str, Any]:
    """Test error on a ``size x size`` grid over the plane of w0, w1 and the first bend.

    Args:
        curve: a trained curve with at least one free bend.
        data: its dataset (train for BatchNorm, test for the error).
        size: grid points per axis (>= 3; default 11).
        margin: extra room around the three points, as a share of the span (default 0.2).
        chunk: grid points evaluated together.
        curve_points_n: points of the curve projected onto the plane for drawing.

    Returns:
        ``{"xs": (size,), "ys": (size,), "errors": (size, size) (rows = ys), "marks": {w0, w1, bend: (x, y)},
        "curve_xy": (xs, ys)}`` (the curve's projection; for k > 3 it may leave the plane).
    """
    if not curve.bends:
        raise ConfigError("the plane needs a curve with a free bend (num_bends >= 3)")
    if size < 3:
        raise ConfigError(f"plane grid size must be >= 3, got {size}")
    w0, w1, b = _flat(curve.w0), _flat(curve.w1), _flat(curve.bends[0])
    du = w1 - w0
    u = du / du.norm()
    r = (b - w0) - ((b - w0) @ u) * u
    if float(r.norm()) < 1e-12:
        raise ConfigError("the bend lies on the straight segment (an untrained curve): the plane is undefined")
    v = r / r.norm()

    def coords(w: torch.Tensor) -> tuple[float, float]:
        return float((w - w0) @ u), float((w - w0) @ v)

    marks = {"w0": (0.0, 0.0), "w1": coords(w1), "bend": coords(b)}
    px, py = [p[0] for p in marks.values()], [p[1] for p in marks.values()]
    span_x, span_y = max(px) - min(px), max(py) - min(py)
    xs = np.linspace(min(px) - margin * span_x, max(px) + margin * span_x, size)
    ys = np.linspace(min(py) - margin * span_y, max(py) + margin * span_y, size)
    shapes = [(k, t.shape, t.numel()) for k, t in curve.w0.items()]
    flat_pts = [w0 + float(x) * u + float(y) * v for y in ys for x in xs]
    errors = []
    yte = data.test.tensors()[1]  # type: ignore[union-attr]
    for start in range(0, len(flat_pts), chunk):
        part = flat_pts[start:start + chunk]
        ens = curve_points(_as_line(curve, part, shapes), [i / max(len(part) - 1, 1) for i in range(len(part))], data.train)
        probs = ens.predict_proba(data.test)  # type: ignore[arg-type]
        errors.append((100.0 * (1.0 - accuracy(probs, yte.to(probs.device)))).cpu().numpy())
    cxy = [coords(_flat(curve.point(t))) for t in np.linspace(0, 1, curve_points_n)]
    return {"xs": xs, "ys": ys, "errors": np.concatenate(errors).reshape(size, size), "marks": marks,
            "curve_xy": ([c[0] for c in cxy], [c[1] for c in cxy])}


def _unflatten(flat: torch.Tensor, shapes: Sequence[tuple[str, torch.Size, int]]) -> dict[str, torch.Tensor]:
    out, i = OrderedDict(), 0
    for k, shape, n in shapes:
        out[k] = flat[i:i + n].reshape(shape)
        i += n
    return out


def _as_line(curve: CurveModel, pts: list[torch.Tensor], shapes: Sequence[tuple[str, torch.Size, int]]) -> CurveModel:
    """A polygonal chain through ``pts`` (its points at ``j / (n - 1)`` are exactly ``pts``), to reuse
    :func:`curve_points` for arbitrary weights."""
    n = len(pts)
    if n == 1:
        pts = [pts[0], pts[0]]
        n = 2
    dicts = [_unflatten(p, shapes) for p in pts]
    chain = CurveModel(curve.template, dicts[0], dicts[-1], curve.buffers, num_bends=n, curve="polychain", spec=curve.spec)
    with torch.no_grad():
        for bend, d in zip(chain.bends, dicts[1:-1]):
            for k in bend:
                bend[k].copy_(d[k])
    return chain
