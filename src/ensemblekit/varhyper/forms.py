"""Hypernetwork forms G(l): encoded complexity ``l in [0, 1]`` -> every target tensor (docs/methods.md, varhyper).

A form is an object with ``init(targets) -> leaves`` (the trainable tensors, named)
and ``generate(leaves, l) -> {target: (K, *shape)}`` for a vector ``l`` of K encoded
complexities. Targets are the means and log-stds of every weight and bias
(``"<param>.mu"``, ``"<param>.log_sigma"``). All constants start at the target's
initial value, so at initialisation G(l) is the same network for every l.

- ``linear``: ``G(l) = l * C1 + (1 - l) * C2`` (the seed's ``lambda * b2 + b3``).
- ``lowrank``: ``G(l) = C + (A1 h)(A2 h)^T``, ``h = ReLU(W_h l + b)`` (``hidden`` units,
  shared by all targets, default 50 as in the seed), rank ``r``; a tensor of shape
  ``(out, ...)`` is treated as the ``(out, rest)`` matrix, a bias as ``(out, 1)``.
  ``A1`` starts at N(0, 0.01^2) and ``A2`` at 0, so the correction starts at 0.
- ``piecewise`` ("kernel"): K pivots ``P_0..P_{K-1}`` at ``l_j = j / (K - 1)``, linear
  interpolation between neighbours (K = 6 by default).
- ``separate``: one independent tensor per fixed level (the per-lambda baseline); a
  level that was not trained is refused.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import torch

from ..errors import ConfigError

__all__ = ["Form", "LinearForm", "LowRankForm", "PiecewiseForm", "SeparateForm", "create_form", "FORMS"]

Tensors = dict[str, torch.Tensor]


class Form(Protocol):
    def init(self, targets: Mapping[str, torch.Tensor]) -> Tensors: ...

    def generate(self, leaves: Mapping[str, torch.Tensor], l: torch.Tensor) -> Tensors: ...


def _bcast(l: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return l.reshape(-1, *([1] * t.dim()))


class LinearForm:
    """``G(l) = l * C1 + (1 - l) * C2``: C1 at l = 1, C2 at l = 0."""

    name = "linear"

    def init(self, targets: Mapping[str, torch.Tensor]) -> Tensors:
        out = {}
        for k, v in targets.items():
            out[f"{k}.c1"], out[f"{k}.c2"] = v.clone(), v.clone()
        return out

    def generate(self, leaves: Mapping[str, torch.Tensor], l: torch.Tensor) -> Tensors:
        keys = [k[: -len(".c1")] for k in leaves if k.endswith(".c1")]
        return {k: _bcast(l, leaves[f"{k}.c1"]) * leaves[f"{k}.c1"] + (1 - _bcast(l, leaves[f"{k}.c2"])) * leaves[f"{k}.c2"] for k in keys}


class PiecewiseForm:
    """Linear interpolation between ``pivots`` tensors placed evenly on [0, 1]."""

    name = "piecewise"

    def __init__(self, pivots: int = 6) -> None:
        if pivots < 2:
            raise ConfigError(f"piecewise form: pivots must be >= 2, got {pivots}")
        self.pivots = int(pivots)

    def init(self, targets: Mapping[str, torch.Tensor]) -> Tensors:
        return {f"{k}.pivots": v.unsqueeze(0).repeat(self.pivots, *([1] * v.dim())).clone() for k, v in targets.items()}

    def generate(self, leaves: Mapping[str, torch.Tensor], l: torch.Tensor) -> Tensors:
        s = l.clamp(0, 1) * (self.pivots - 1)
        j = s.floor().long().clamp(max=self.pivots - 2)
        frac = s - j
        out = {}
        for key, p in leaves.items():
            f = _bcast(frac, p[0])
            out[key[: -len(".pivots")]] = (1 - f) * p[j] + f * p[j + 1]
        return out


class LowRankForm:
    """``G(l) = C + (A1 h)(A2 h)^T`` with ``h = ReLU(W_h l + b)``."""

    name = "lowrank"

    def __init__(self, rank: int = 1, hidden: int = 50) -> None:
        if rank < 1 or hidden < 1:
            raise ConfigError(f"lowrank form: rank and hidden must be >= 1, got rank={rank}, hidden={hidden}")
        self.rank, self.hidden = int(rank), int(hidden)

    def init(self, targets: Mapping[str, torch.Tensor]) -> Tensors:
        out: Tensors = {"h.weight": torch.rand(self.hidden) * 2 - 1, "h.bias": torch.full((self.hidden,), 0.1)}
        for k, v in targets.items():
            rows, cols = v.shape[0], max(1, v[0].numel())
            out[f"{k}.c"] = v.clone()
            out[f"{k}.a1"] = 0.01 * torch.randn(rows, self.rank, self.hidden)
            out[f"{k}.a2"] = torch.zeros(cols, self.rank, self.hidden)
        return out

    def generate(self, leaves: Mapping[str, torch.Tensor], l: torch.Tensor) -> Tensors:
        h = torch.relu(l.unsqueeze(-1) * leaves["h.weight"] + leaves["h.bias"])  # (K, H)
        out = {}
        for key in [k[: -len(".c")] for k in leaves if k.endswith(".c")]:
            c = leaves[f"{key}.c"]
            u = torch.einsum("orh,kh->kor", leaves[f"{key}.a1"], h)
            v = torch.einsum("irh,kh->kir", leaves[f"{key}.a2"], h)
            out[key] = c + torch.einsum("kor,kir->koi", u, v).reshape(l.shape[0], *c.shape)
        return out


class SeparateForm:
    """Independent tensors per fixed level ``levels`` (encoded complexities): separately trained nets."""

    name = "separate"

    def __init__(self, levels: Sequence[float]) -> None:
        if not levels:
            raise ConfigError("separate form needs at least one level")
        self.levels = torch.tensor([float(v) for v in levels])

    def init(self, targets: Mapping[str, torch.Tensor]) -> Tensors:
        n = len(self.levels)
        return {f"{k}.each": v.unsqueeze(0).repeat(n, *([1] * v.dim())).clone() for k, v in targets.items()}

    def generate(self, leaves: Mapping[str, torch.Tensor], l: torch.Tensor) -> Tensors:
        dist = (l.detach().cpu().unsqueeze(-1) - self.levels).abs()
        best = dist.min(-1)
        if bool((best.values > 1e-6).any()):
            raise ConfigError(f"separate nets exist only at encoded levels {self.levels.tolist()}, asked for {l.tolist()}")
        idx = best.indices.to(next(iter(leaves.values())).device)
        return {k[: -len(".each")]: v[idx] for k, v in leaves.items()}


FORMS = {"linear": LinearForm, "lowrank": LowRankForm, "piecewise": PiecewiseForm}


def create_form(name: str, *, rank: int = 1, hidden: int = 50, pivots: int = 6) -> Form:
    """A hypernetwork form by name: linear | lowrank | piecewise."""
    if name == "linear":
        return LinearForm()
    if name == "lowrank":
        return LowRankForm(rank=rank, hidden=hidden)
    if name == "piecewise":
        return PiecewiseForm(pivots=pivots)
    raise ConfigError(f"form must be one of {sorted(FORMS)}, got {name!r}")
