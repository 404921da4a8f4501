"""Mixed precision for stacked members: autocast, and fp16 loss scaling that skips per member.

``train.precision`` chooses the arithmetic of the training forward pass and loss:

- ``fp32`` (default): no autocast.
- ``bf16``: ``torch.autocast`` with bfloat16 (CPU and CUDA); bfloat16 has fp32's exponent
  range, so no loss scaling is needed.
- ``fp16``: ``torch.autocast`` with float16 and dynamic loss scaling (Micikevicius et al.,
  "Mixed Precision Training", ICLR 2018). torch's ``GradScaler`` skips the *whole*
  optimizer step when any gradient overflows; with M independent members that would let
  one member's overflow stall all of them. :class:`MemberLossScaler` checks the unscaled
  gradients per member: only the members whose gradient is not finite skip the step, and
  the overflows are counted per member in the epoch log (``fp16_skipped``). A tensor shared
  by all members that overflows skips the step for every member, as ``GradScaler`` would.

A skipped member ends the step exactly as if it had never taken it. Its weights and the
rows of the optimizer state shaped like the parameter (Adam's moments, SGD's momentum, ...)
are put back, which also undoes any weight decay of the step (AdamW's decoupled decay,
Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, and the engine's).
The members are stacked along dim 0 of one parameter tensor, though, and torch's
optimizers keep one ``step`` count per tensor; Adam's bias correction (Kingma & Ba, "Adam:
A Method for Stochastic Optimization", ICLR 2015) and Adagrad's ``lr_decay`` read it, and
a member whose state was not yet created (an overflow on its first step) must start as
new (SGD's first momentum is the gradient itself). So the scaler counts the steps of every
row of every stacked tensor; when the rows of a tensor disagree, the optimizer's own step
runs with the count of most rows, and the others are stepped again from their saved
pre-step values by the same optimizer, one extra pass per other count (a fresh state for
rows that never stepped), so every member follows its own history (tested for SGD, Adam,
AdamW, Adagrad and RMSprop against members trained alone). Per-member leaf tensors
(``optimizer.per_member``) have their own optimizer state and are restored whole.

Master weights stay fp32 (autocast casts copies for the matmuls and convolutions),
BatchNorm statistics are kept in fp32 by autocast, the loss is computed from fp32 logits,
and checkpoints hold fp32 tensors; evaluation runs in fp32.
"""

from __future__ import annotations

import collections
import contextlib
import copy
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


Stepped = Sequence[tuple[torch.Tensor, slice | int | None]]


def _row_names(state: dict[str, Any], t: torch.Tensor) -> list[str]:
    """The entries of ``t``'s optimizer state that hold one value per element of ``t``."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.shape == t.shape]


def _copy(value: Any) -> Any:
    return value.clone() if torch.is_tensor(value) else copy.deepcopy(value)


def _set_step(state: dict[str, Any], value: int) -> None:
    if torch.is_tensor(state["step"]):
        state["step"].fill_(value)
    else:
        state["step"] = type(state["step"])(value)


def _row_key(state: dict[str, Any], steps: int) -> int | str:
    """Which rows one optimizer pass can step together: with no state yet (a first step, or
    a stateless optimizer) all of them; with a ``step`` count, the rows of equal count
    (state rows of a row that never stepped hold the optimizer's initial values); without
    one, rows that never stepped start fresh and every other row is alike."""
    if not state:
        return "all"
    if "step" in state:
        return steps
    return "fresh" if steps == 0 else "stepped"


def _initial_steps(state: dict[str, Any]) -> int:
    """A tensor's step count before the scaler counted it (a fresh run, or an old checkpoint)."""
    if "step" in state:
        return int(state["step"])
    return 1 if state else 0


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
            steps: the optimizer steps each member's row of each stacked tensor took
            (:meth:`member_steps`; saved with the scaler's state).
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
        # per stepped tensor: the optimizer steps each row took (None: not a stacked tensor)
        self.steps: list[list[int] | None] | None = None

    def unscale_(self, stepped: Stepped) -> torch.Tensor:
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
    def skipping(self, optimizer: torch.optim.Optimizer, stepped: Stepped, bad: torch.Tensor) -> Iterator[None]:
        """Around the weight decay and optimizer step: the ``bad`` members skip this step
        (their weights and optimizer state are as before it), every other member steps with
        its own step count (see the module docstring); then update the scale."""
        self._ensure_steps(optimizer, stepped)
        saved = self._save_bad(optimizer, stepped, bad)
        plan: list[tuple[int, torch.Tensor, list[int], bool, dict[Any, tuple]]] = []

        def before_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if not plan:
                plan.extend(self._plan(opt, stepped, bad))

        handle = optimizer.register_step_pre_hook(before_step)
        try:
            yield
        finally:
            handle.remove()
        with torch.no_grad():
            self._replay(optimizer, plan)
            self._restore(optimizer, saved)
            self._count(optimizer, plan)
        self._update(bad)

    def member_steps(self) -> list[list[int] | None]:
        """Per stepped tensor (in the order the scaler is given them), the optimizer steps
        each member's row has taken; ``None`` for shared and per-member leaf tensors, whose
        optimizer state counts for itself. Empty before the first step."""
        return [None if s is None else list(s) for s in self.steps or []]

    def _ensure_steps(self, optimizer: torch.optim.Optimizer, stepped: Stepped) -> None:
        if self.steps is not None and len(self.steps) == len(stepped):
            return
        self.steps = [[_initial_steps(optimizer.state.get(t, {}))] * t.shape[0] if isinstance(owner, slice) else None
                      for t, owner in stepped]

    @staticmethod
    def _save_bad(optimizer: torch.optim.Optimizer, stepped: Stepped, bad: torch.Tensor) -> list[tuple]:
        """The bad members' weights and optimizer state before the step (and its weight decay)."""
        saved: list[tuple] = []
        if not bad.any():
            return saved
        for t, owner in stepped:
            rows = _owned(owner, bad) if owner is not None else ([-1] if bad.all() else [])
            if not rows:
                continue
            state = optimizer.state.get(t) or {}
            if rows == [-1]:  # the whole tensor and its whole state (None: it has none yet)
                saved.append((t, None, t.detach().clone(), {k: _copy(v) for k, v in state.items()} if state else None))
            else:
                saved.append((t, rows, t.detach()[rows].clone(), {k: state[k][rows].clone() for k in _row_names(state, t)}))
        return saved

    def _plan(self, optimizer: torch.optim.Optimizer, stepped: Stepped, bad: torch.Tensor) -> list[tuple]:
        """Just before the optimizer's step: per stacked tensor it will step, the rows that
        step, and the rows its own pass cannot step right (saved for :meth:`_replay`)."""
        plan, skip = [], bad.tolist()
        for i, (t, owner) in enumerate(stepped):
            if not isinstance(owner, slice) or t.grad is None:
                continue
            steps, state = self.steps[i], optimizer.state.get(t) or {}  # type: ignore[index]
            good = [r for r in range(len(steps)) if not skip[owner.start + r]]
            even = len(good) == len(steps) and len(set(steps)) == 1 and _row_key(state, steps[0]) != "fresh"
            plan.append((i, t, good, not even, {} if even else self._others(state, t, steps, good)))
        return plan

    @staticmethod
    def _others(state: dict[str, Any], t: torch.Tensor, steps: list[int], good: list[int]) -> dict[Any, tuple]:
        """Sets ``t``'s ``step`` to the count of most of its stepping rows; returns the other
        stepping rows by :func:`_row_key`, with their pre-step weights, gradients and state."""
        keys = {r: _row_key(state, steps[r]) for r in good}
        counts = collections.Counter(k for k in keys.values() if k != "fresh")
        main = counts.most_common(1)[0][0] if counts else None
        if isinstance(main, int):
            _set_step(state, main)
        names = _row_names(state, t)
        scalars = {k: v for k, v in state.items() if k not in names}
        out: dict[Any, tuple] = {}
        for key in dict.fromkeys(k for k in keys.values() if k != main):
            rows = [r for r in good if keys[r] == key]
            own = {} if key == "fresh" else {**{k: _copy(v) for k, v in scalars.items()}, **{n: state[n][rows].clone() for n in names}}
            if isinstance(key, int):
                _set_step(own, key)
            out[key] = (rows, t.detach()[rows].clone(), t.grad.detach()[rows].clone(), own)
        return out

    @staticmethod
    def _replay(optimizer: torch.optim.Optimizer, plan: list[tuple]) -> None:
        """Step the rows :meth:`_others` set aside: one pass of the same optimizer (its
        groups' settings) per step count, over copies of the rows, written back after."""
        passes: dict[Any, list[tuple[torch.Tensor, list[int], torch.Tensor]]] = {}
        for _, t, _, _, others in plan:
            for key, (rows, weights, grad, own) in others.items():
                part = weights.requires_grad_(True)
                part.grad = grad
                if own:
                    optimizer.state[part] = own
                passes.setdefault(key, []).append((t, rows, part))
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]} if passes else {}
        for items in passes.values():
            groups: dict[int, tuple[dict[str, Any], list[torch.Tensor]]] = {}
            for t, _, part in items:
                g = group_of[id(t)]
                groups.setdefault(id(g), ({k: v for k, v in g.items() if k != "params"}, []))[1].append(part)
            kept = optimizer.param_groups
            optimizer.param_groups = [{**settings, "params": params} for settings, params in groups.values()]
            try:
                optimizer.step()
            finally:
                optimizer.param_groups = kept
            for t, rows, part in items:
                t[rows] = part.detach()
                new, state = optimizer.state.pop(part, {}), optimizer.state[t]
                for n in _row_names(state, t):
                    if torch.is_tensor(new.get(n)):
                        state[n][rows] = new[n]

    @staticmethod
    def _restore(optimizer: torch.optim.Optimizer, saved: list[tuple]) -> None:
        """Put the bad members back; state rows the step created for them are zeroed (a
        member that never stepped starts fresh, see :func:`_row_key`)."""
        for t, rows, weights, state in saved:
            if rows is None:
                t.copy_(weights)
                if state is None:
                    optimizer.state.pop(t, None)
                else:
                    optimizer.state[t] = state
                continue
            t[rows] = weights
            now = optimizer.state.get(t) or {}
            for k in _row_names(now, t):
                now[k][rows] = state[k] if k in state else 0.0

    def _count(self, optimizer: torch.optim.Optimizer, plan: list[tuple]) -> None:
        """Count the step for the rows that took it; a tensor whose rows differ keeps its
        optimizer ``step`` at the largest count (what a checkpoint of it holds)."""
        for i, t, good, uneven, _ in plan:
            steps = self.steps[i]  # type: ignore[index]
            for r in good:
                steps[r] += 1
            state = optimizer.state.get(t) or {}
            if uneven and "step" in state:
                _set_step(state, max(steps))

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
        return {"scale": self.scale, "clean_steps": self.clean_steps, "skipped": list(self.skipped), "total_skipped": list(self.total_skipped),
                "steps": self.member_steps()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.clean_steps = int(state["clean_steps"])
        self.skipped = [int(v) for v in state.get("skipped", self.skipped)]
        self.total_skipped = [int(v) for v in state.get("total_skipped", self.total_skipped)]
        steps = state.get("steps")  # absent in older checkpoints: counted from the optimizer's state
        self.steps = [None if s is None else [int(v) for v in s] for s in steps] if steps else None


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
