"""Mixed precision for stacked members: autocast, and fp16 loss scaling that skips per member.

``train.precision`` chooses the arithmetic of the training forward pass and loss:

- ``fp32`` (default): no autocast.
- ``bf16``: ``torch.autocast`` with bfloat16 (CPU and CUDA); bfloat16 has fp32's exponent
  range, so no loss scaling is needed.
- ``fp16``: ``torch.autocast`` with float16 and dynamic loss scaling (Micikevicius et al.,
  "Mixed Precision Training", ICLR 2018). torch's ``GradScaler`` skips the *whole*
  optimizer step when any gradient overflows; with M independent members that would let
  one member's overflow stall all of them. :class:`MemberLossScaler` checks the unscaled
  gradients per member: only the members whose gradient is not finite skip the step (their
  weights and optimizer state are restored after it), and the overflows are counted per
  member in the epoch log (``fp16_skipped``). A tensor shared by all members that
  overflows skips the step for every member, as ``GradScaler`` would.

Master weights stay fp32 (autocast casts copies for the matmuls and convolutions),
BatchNorm statistics are kept in fp32 by autocast, the loss is computed from fp32 logits,
and checkpoints hold fp32 tensors; evaluation runs in fp32.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch

from ..errors import ConfigError

__all__ = ["PRECISIONS", "autocast", "MemberLossScaler", "compiled_forward"]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision {precision} needs a cpu or cuda device, got {device}")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def _owned(owner: slice | int | None, bad: torch.Tensor) -> list[int]:
    """Positions along a tensor's leading axis (or ``[-1]``: the whole tensor) of bad members."""
    if owner is None:
        return []
    if isinstance(owner, int):
        return [-1] if bool(bad[owner]) else []
    return [i for i, m in enumerate(range(owner.start, owner.stop)) if bool(bad[m])]


class MemberLossScaler:
    """Dynamic loss scaling with per-member overflow skipping (see the module docstring).

    Args:
        num_members: M.
        init_scale: the first scale (default 2**16, as ``torch.amp.GradScaler``).
        growth_factor, backoff_factor: multiply the scale after ``growth_interval`` clean
            steps / after a step with an overflow.
        growth_interval: clean steps before the scale grows (default 2000).

    Attributes:
        scale: the current scale. skipped: ``(M,)`` overflow-skipped steps per member
            since the last :meth:`pop_skipped`. total_skipped: the same, over the run.
    """

    def __init__(self, num_members: int, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        self.num_members = int(num_members)
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.clean_steps = 0
        self.skipped = [0] * self.num_members
        self.total_skipped = [0] * self.num_members

    def unscale_(self, stepped: Sequence[tuple[torch.Tensor, slice | int | None]]) -> torch.Tensor:
        """Divide every gradient by the scale; return the ``(M,)`` mask of members whose
        gradient has an inf or NaN (all members when a shared tensor's has), and zero
        those members' gradients so that clipping norms stay finite."""
        inv = 1.0 / self.scale
        device = stepped[0][0].device if stepped else torch.device("cpu")
        bad = torch.zeros(self.num_members, dtype=torch.bool, device=device)
        for t, owner in stepped:
            g = t.grad
            if g is None:
                continue
            g.mul_(inv)
            finite = torch.isfinite(g)
            if owner is None:
                bad |= ~finite.all()
            elif isinstance(owner, int):
                bad[owner] |= ~finite.all()
            else:
                bad[owner] |= ~finite.reshape(g.shape[0], -1).all(1)
        bad = bad.cpu()
        if bad.any():
            for t, owner in stepped:
                if t.grad is None:
                    continue
                if owner is None:  # shared: finite unless every member skips
                    if bad.all():
                        t.grad.zero_()
                elif isinstance(owner, int):
                    if bad[owner]:
                        t.grad.zero_()
                else:
                    rows = _owned(owner, bad)
                    if rows:
                        t.grad[rows] = 0.0
        return bad

    @contextlib.contextmanager
    def skipping(self, optimizer: torch.optim.Optimizer, stepped: Sequence[tuple[torch.Tensor, slice | int | None]],
                 bad: torch.Tensor) -> Iterator[None]:
        """Around the weight decay and optimizer step: restore the weights and optimizer
        state of the ``bad`` members afterwards (they skip this step), then update the scale."""
        saved: list[tuple[torch.Tensor, list[int], torch.Tensor, dict[str, torch.Tensor]]] = []
        if bad.any():
            for t, owner in stepped:
                rows = _owned(owner, bad) if owner is not None else ([-1] if bad.all() else [])
                if not rows:
                    continue
                sel: Any = slice(None) if rows == [-1] else rows
                state = {k: v[sel].clone() for k, v in optimizer.state.get(t, {}).items()
                         if torch.is_tensor(v) and v.shape == t.shape}
                saved.append((t, rows, t.detach()[sel].clone(), state))
        yield
        with torch.no_grad():
            for t, rows, value, state in saved:
                sel = slice(None) if rows == [-1] else rows
                t[sel] = value
                for k, v in state.items():
                    optimizer.state[t][k][sel] = v
        self._update(bad)

    def _update(self, bad: torch.Tensor) -> None:
        if bad.any():
            for m in torch.nonzero(bad).flatten().tolist():
                self.skipped[m] += 1
                self.total_skipped[m] += 1
            self.scale *= self.backoff_factor
            self.clean_steps = 0
            return
        self.clean_steps += 1
        if self.clean_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self.clean_steps = 0

    def pop_skipped(self) -> list[int]:
        """The per-member skipped steps since the last call (then reset)."""
        out, self.skipped = self.skipped, [0] * self.num_members
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "clean_steps": self.clean_steps, "skipped": list(self.skipped), "total_skipped": list(self.total_skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.clean_steps = int(state["clean_steps"])
        self.skipped = [int(v) for v in state.get("skipped", self.skipped)]
        self.total_skipped = [int(v) for v in state.get("total_skipped", self.total_skipped)]


def compiled_forward(model: Any, stage: str) -> Any:
    """``torch.compile`` of ``model``'s forward call, falling back to eager (with one
    warning) when compilation fails on the first call."""
    import warnings

    compiled = torch.compile(model.__call__, dynamic=False)
    state = {"fn": compiled}

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        try:
            return state["fn"](*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly
            if state["fn"] is model.__call__:
                raise
            warnings.warn(f"{stage}: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "training without compilation", RuntimeWarning, stacklevel=2)
            state["fn"] = model.__call__
            return model(*args, **kwargs)

    return forward
