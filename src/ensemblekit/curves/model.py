"""A mode-connecting curve over the parameters of any ``nn.Module`` (docs/methods.md, curve_ensemble).

``phi(t) = sum_j c_j(t) theta_j`` with ``theta_0 = w0``, ``theta_{k-1} = w1`` fixed and
the ``k - 2`` bends in between free; the network at ``t`` runs through
``torch.func.functional_call`` on the template, so no layer is rewritten. The model has
the Trainer's small surface (``num_members = 1``): in train mode every call (one
mini-batch) draws one ``t ~ U[0, 1]`` from the global generator, which the Trainer seeds
and checkpoints, so a resumed run draws the same ``t`` sequence.
Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs" (2018).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..ensemble import Ensemble, MemberGroup
from ..errors import ConfigError
from ..serialization import copy_state_
from ..training.protocol import ParamGroup
from .parametrizations import Coefficients, check_parametrization, get_parametrization

__all__ = ["CurveModel"]

Tensors = Mapping[str, torch.Tensor]


class CurveModel:
    """A curve ``phi(t)`` between two networks of one architecture.

    Args:
        template: a module of the architecture (only its structure is used).
        w0, w1: the endpoints' parameters, ``name -> tensor`` as in ``template.named_parameters()``.
        buffers: the buffers used in the forward pass (BatchNorm statistics; default the
            template's own). They are meaningless along the curve during training;
            evaluate with :func:`~ensemblekit.curves.evaluate.curve_points`, which recomputes them.
        num_bends: k, bends including the endpoints (default 3 = one free bend; >= 2,
            and 2 is the straight segment with nothing to train).
        curve: ``bezier``, ``polychain`` or a callable ``(t, k) -> (k,)`` coefficients.
        weight_decay: ``0.5 * weight_decay * ||phi(t)||^2`` over all parameters at the
            sampled point, added to the loss by :meth:`regularized` (default 0; >= 0).
            Decay acts on the point, not on each bend (docs/methods.md, curve_ensemble).
        eval_t: the ``t`` used by calls in eval mode (default 0.5).
        spec: JSON-able model spec (kept so point ensembles can be saved and reloaded).

    Raises:
        ConfigError: endpoints that do not match the template, bad ``num_bends`` / ``curve``.

    Example:
        >>> curve = CurveModel(net, dict(a.named_parameters()), dict(b.named_parameters()))
        >>> curve.point(torch.tensor(0.0))["fc.weight"] is not None
        True
    """

    def __init__(self, template: nn.Module, w0: Tensors, w1: Tensors, buffers: Tensors | None = None, *, num_bends: int = 3,
                 curve: str | Coefficients = "bezier", weight_decay: float = 0.0, eval_t: float = 0.5, spec: dict[str, Any] | None = None) -> None:
        if not isinstance(num_bends, int) or num_bends < 2:
            raise ConfigError(f"num_bends must be an integer >= 2 (endpoints included), got {num_bends!r}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0.0 <= eval_t <= 1.0:
            raise ConfigError(f"eval_t must be in [0, 1], got {eval_t}")
        self.coefficients = get_parametrization(curve)
        check_parametrization(self.coefficients, num_bends)
        self.curve_name = curve if isinstance(curve, str) else getattr(curve, "__name__", "custom")
        self.template = template
        self.spec = spec
        self.num_bends = num_bends
        self.weight_decay = float(weight_decay)
        self.eval_t = float(eval_t)
        shapes = {k: v.shape for k, v in template.named_parameters()}
        trainable = {k: v.requires_grad for k, v in template.named_parameters()}
        for label, w in (("w0", w0), ("w1", w1)):
            got = {k: v.shape for k, v in w.items()}
            if got != shapes:
                raise ConfigError(f"endpoint {label} does not match the template's parameters (names/shapes differ: {sorted(set(got) ^ set(shapes)) or 'shapes'})")
        self.w0 = OrderedDict((k, w0[k].detach().clone()) for k in shapes)
        self.w1 = OrderedDict((k, w1[k].detach().clone()) for k in shapes)
        # bends start evenly spaced on the straight segment, so the initial curve is the line
        # for both Bezier (linear precision of Bernstein polynomials) and the polygonal chain
        self.bends = [
            OrderedDict((k, (self.w0[k] + (j / (num_bends - 1)) * (self.w1[k] - self.w0[k])).requires_grad_(trainable[k])) for k in shapes)
            for j in range(1, num_bends - 1)
        ]
        src = buffers if buffers is not None else dict(template.named_buffers())
        self.buffers = OrderedDict((k, v.detach().clone()) for k, v in src.items())
        self.training = False
        self.fixed_t: float | None = None
        self.last_t: float | None = None
        self.last_sq_norm: torch.Tensor | None = None

    # ----------------------------------------------------------------- the curve
    def point(self, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters ``phi(t)`` (differentiable with respect to the bends, never the endpoints)."""
        c = self.coefficients(torch.as_tensor(float(t)), self.num_bends).to(self.device)
        thetas = [self.w0, *self.bends, self.w1]
        return {k: sum(c[j] * th[k] for j, th in enumerate(thetas)) for k in self.w0}

    def _sample_t(self) -> float:
        if self.fixed_t is not None:
            return self.fixed_t
        if self.training:
            return float(torch.rand(()))
        return self.eval_t

    def __call__(self, x: torch.Tensor, per_member: bool = False, params: Sequence[Tensors] | None = None) -> torch.Tensor:
        """Logits ``(1, B, C)`` of the network at one ``t`` (sampled in train mode)."""
        if params is not None:
            raise ConfigError("a curve takes no external parameters (optimizer.per_member does not apply)")
        xs = x[0] if per_member else x
        t = self._sample_t()
        p = self.point(t)
        self.last_t = t
        self.last_sq_norm = sum((v * v).sum() for v in p.values())
        return functional_call(self.template, (p, self.buffers), (xs,)).unsqueeze(0)

    forward = __call__

    def regularized(self, loss_fn: Any) -> Any:
        """``loss_fn`` plus ``0.5 * weight_decay * ||phi(t)||^2`` at the point of the last call."""
        def loss(logits: torch.Tensor, batch: Any) -> torch.Tensor:
            base = loss_fn(logits, batch)
            if self.weight_decay and self.last_sq_norm is not None:
                base = base + 0.5 * self.weight_decay * self.last_sq_norm
            return base
        return loss

    def line(self) -> "CurveModel":
        """The straight segment between the same endpoints (``num_bends = 2``)."""
        return CurveModel(self.template, self.w0, self.w1, self.buffers, num_bends=2, curve=self.coefficients, spec=self.spec)

    @torch.no_grad()
    def points(self, ts: Sequence[float]) -> Ensemble:
        """The networks at ``ts`` as one stacked Ensemble (M = len(ts)); BatchNorm statistics
        are copies of the curve's buffers (recompute them before use)."""
        ts = [float(t) for t in ts]
        if not ts or any(not 0.0 <= t <= 1.0 for t in ts):
            raise ConfigError(f"curve points need t values in [0, 1], got {ts}")
        pts = [self.point(t) for t in ts]
        params = OrderedDict((k, torch.stack([p[k].detach() for p in pts])) for k in self.w0)
        buffers = OrderedDict((k, v.unsqueeze(0).repeat(len(ts), *([1] * v.dim())).clone()) for k, v in self.buffers.items())
        group = MemberGroup(copy.deepcopy(self.template), params, buffers, self.spec)
        return Ensemble([group], [{"t": t, "curve": self.curve_name} for t in ts])

    # ----------------------------------------------------------------- the trainable-model protocol
    @property
    def num_members(self) -> int:
        return 1

    def param_groups(self) -> list[ParamGroup]:
        """The free bends, one group (the endpoints are fixed); never penalised: the curve's
        weight decay acts on ``phi(t)`` (:meth:`regularized`), not on the bends."""
        tensors = OrderedDict((f"bend{j}.{k}", v) for j, b in enumerate(self.bends, start=1) for k, v in b.items())
        return [ParamGroup("bends", tensors, members=None, regularized=False)]

    def member_slices(self) -> dict[str, slice | None]:
        """Every tensor belongs to the curve as a whole (no member axis)."""
        return {k: None for k in self.state_tensors()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.w0.values())).device

    def parameters(self) -> list[torch.Tensor]:
        """The free bends' leaf tensors (the endpoints are never stepped)."""
        return [v for b in self.bends for v in b.values() if v.requires_grad]

    def train(self, mode: bool = True) -> "CurveModel":
        self.training = mode
        self.template.train(mode)
        return self

    def eval(self) -> "CurveModel":
        return self.train(False)

    def to(self, device: torch.device | str) -> "CurveModel":
        """A copy on ``device`` (new leaf tensors)."""
        out = CurveModel(copy.deepcopy(self.template).to(device), {k: v.to(device) for k, v in self.w0.items()},
                         {k: v.to(device) for k, v in self.w1.items()}, {k: v.to(device) for k, v in self.buffers.items()},
                         num_bends=self.num_bends, curve=self.coefficients, weight_decay=self.weight_decay, eval_t=self.eval_t, spec=self.spec)
        out.curve_name = self.curve_name
        with torch.no_grad():
            for b_out, b in zip(out.bends, self.bends):
                for k in b:
                    b_out[k].copy_(b[k])
        return out.train(self.training)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"end0.{k}": v for k, v in self.w0.items()}
        out.update({f"end1.{k}": v for k, v in self.w1.items()})
        for j, b in enumerate(self.bends, start=1):
            out.update({f"bend{j}.{k}": v for k, v in b.items()})
        out.update({f"buffer.{k}": v for k, v in self.buffers.items()})
        return out

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy saved tensors in place (a mismatch names the tensor)."""
        copy_state_(self.state_tensors(), tensors, "saved curve state")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Inference logits ``(1, B, C)`` of the network at ``eval_t`` (the curve's current buffers)."""
        return self.points([self.eval_t]).train(self.training).logits(x)

    @torch.no_grad()
    def predict_proba(self, x: Any, batch_size: int = 1024) -> torch.Tensor:
        """Probabilities ``(1, N, C)`` at ``eval_t`` with the current buffers (use
        :func:`~ensemblekit.curves.evaluate.evaluate_curve` for BatchNorm-correct figures)."""
        was = self.training
        self.eval()
        try:
            return self.points([self.eval_t]).predict_proba(x, batch_size=batch_size)
        finally:
            self.train(was)

    def __repr__(self) -> str:
        return f"CurveModel({self.curve_name}, num_bends={self.num_bends}, {type(self.template).__name__})"
