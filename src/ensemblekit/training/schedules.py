"""Learning-rate policies as pure ``step -> lr`` functions.

Every policy is a closed-form function of the global iteration ``step`` (0-based)
built by a small factory; policies compose with :func:`warmup` and :func:`join`.
They meet ``torch.optim`` only through ``LambdaLR`` (see :func:`lambda_lr`), which
scales each parameter group's own initial learning rate, so groups (or members)
with different learning rates keep their ratios.

Example:
    >>> sched = warmup(cosine(0.1, total_steps=900), steps=100)
    >>> sched(0), sched(100), round(sched(550), 4)
    (0.0, 0.1, 0.05)
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "cosine",
    "linear",
    "inverse_sqrt",
    "warmup",
    "cosine_restarts",
    "fge_triangle",
    "join",
    "piecewise",
    "lambda_lr",
    "SCHEDULES",
    "ScheduleContext",
    "register_schedule",
    "schedule_names",
    "build_schedule",
    "check_schedule_spec",
]

Schedule = Callable[[int], float]


def _named(fn: Schedule, text: str) -> Schedule:
    fn.__name__ = fn.__qualname__ = text  # type: ignore[attr-defined]
    return fn


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return float(value)


def _steps(value: int, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ConfigError(f"{name} must be an integer number of iterations >= {minimum}, got {value}")
    return int(value)


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    lr = _positive(lr, "lr")
    return _named(lambda step: lr, f"constant({lr:g})")


def step_decay(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** k`` where k is the number of milestones <= step."""
    lr = _positive(lr, "lr")
    ms = sorted(_steps(m, "milestones", 0) for m in milestones)
    if not 0 < gamma:
        raise ConfigError(f"gamma must be > 0, got {gamma}")
    return _named(lambda step: lr * gamma ** bisect.bisect_right(ms, step), f"step_decay({lr:g}, {ms}, {gamma:g})")


def cosine(lr: float, total_steps: int, min_lr: float = 0.0) -> Schedule:
    """Cosine decay from ``lr`` at step 0 to ``min_lr`` at ``total_steps`` (held after)."""
    lr, total = _positive(lr, "lr"), _steps(total_steps, "total_steps")

    def fn(step: int) -> float:
        s = min(max(step, 0), total)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * s / total))

    return _named(fn, f"cosine({lr:g}, {total}, min_lr={min_lr:g})")


def linear(lr: float, total_steps: int, end_lr: float = 0.0) -> Schedule:
    """Linear decay from ``lr`` at step 0 to ``end_lr`` at ``total_steps`` (held after)."""
    lr, total = _positive(lr, "lr"), _steps(total_steps, "total_steps")
    return _named(lambda step: lr + (end_lr - lr) * min(max(step, 0), total) / total, f"linear({lr:g}, {total}, end_lr={end_lr:g})")


def inverse_sqrt(lr: float, timescale: int) -> Schedule:
    """``lr`` until ``timescale`` steps, then ``lr * sqrt(timescale / step)``."""
    lr, ts = _positive(lr, "lr"), _steps(timescale, "timescale")
    return _named(lambda step: lr * math.sqrt(ts / max(step, ts)), f"inverse_sqrt({lr:g}, {ts})")


def warmup(policy: Schedule, steps: int, start_lr: float = 0.0) -> Schedule:
    """Linear warm-up in front of ``policy``: from ``start_lr`` to ``policy(0)`` over ``steps``, then ``policy(step - steps)``."""
    w = _steps(steps, "warmup steps", 0)
    if w == 0:
        return policy
    peak = policy(0)

    def fn(step: int) -> float:
        if step < w:
            return start_lr + (peak - start_lr) * step / w
        return policy(step - w)

    return _named(fn, f"warmup({w}) -> {getattr(policy, '__name__', 'policy')}")


def cosine_restarts(lr: float, cycle_steps: int, min_lr: float = 0.0) -> Schedule:
    """Cosine annealing with warm restarts (snapshot ensembles, Huang et al. 2017).

    Inside every cycle of ``cycle_steps`` iterations, ``lr(t) = min_lr + 0.5 (lr - min_lr)
    (1 + cos(pi t / T))`` with ``t = step mod T``; a snapshot is taken after the last
    step of each cycle (``(step + 1) % T == 0``), where the rate is at its minimum.
    """
    lr, T = _positive(lr, "lr"), _steps(cycle_steps, "cycle_steps")
    return _named(
        lambda step: min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (step % T) / T)),
        f"cosine_restarts({lr:g}, {T}, min_lr={min_lr:g})",
    )


def fge_triangle(a1: float, a2: float, cycle_steps: int) -> Schedule:
    """The cyclic piecewise-linear policy of Fast Geometric Ensembling (Garipov et al. 2018).

    With ``i = step + 1`` and ``t(i) = (((i - 1) mod c) + 1) / c``:
    ``lr = (1 - 2t) a1 + 2t a2`` for ``t <= 1/2`` and ``lr = (2 - 2t) a2 + (2t - 1) a1``
    otherwise. The rate reaches ``a2`` at the middle of each cycle (``t = 1/2``, where
    FGE collects a member) and ``a1`` at its end.

    Args:
        a1: the largest rate (> a2).
        a2: the smallest rate (> 0).
        cycle_steps: c, an even number of iterations >= 2.

    Raises:
        ConfigError: ``c`` odd or < 2, ``a1 <= a2`` or ``a2 <= 0``.
    """
    if int(cycle_steps) != cycle_steps or cycle_steps < 2 or cycle_steps % 2:
        raise ConfigError(f"cycle must be an even number of iterations >= 2, got {cycle_steps}")
    _positive(a2, "a2")
    if not a1 > a2:
        raise ConfigError(f"FGE needs a1 > a2, got a1={a1} and a2={a2}")
    c = int(cycle_steps)

    def fn(step: int) -> float:
        t = ((step % c) + 1) / c
        if t <= 0.5:
            return (1.0 - 2.0 * t) * a1 + 2.0 * t * a2
        return (2.0 - 2.0 * t) * a2 + (2.0 * t - 1.0) * a1

    return _named(fn, f"fge_triangle({a1:g}, {a2:g}, {c})")


def piecewise(lr: float, total_steps: int, points: Sequence[Sequence[float]]) -> Schedule:
    """Piecewise-linear multiplier of ``lr`` over the run: ``points`` are ``(fraction of the run, factor)``.

    Example: the FGE/SWA papers' reference schedule is
    ``piecewise(lr, T, [(0, 1), (0.5, 1), (0.9, 0.01), (1, 0.01)])``: constant for half the
    run, linear down to 1% by 90%, then constant.
    """
    lr, total = _positive(lr, "lr"), _steps(total_steps, "total_steps")
    pts = sorted((float(f), float(v)) for f, v in points)
    if len(pts) < 2 or pts[0][0] != 0.0 or pts[-1][0] != 1.0:
        raise ConfigError(f"piecewise points must start at fraction 0 and end at 1, got {list(points)}")
    xs = [f * total for f, _ in pts]

    def fn(step: int) -> float:
        s = min(max(step, 0), total)
        k = max(0, min(bisect.bisect_right(xs, s) - 1, len(xs) - 2))
        (x0, y0), (x1, y1) = (xs[k], pts[k][1]), (xs[k + 1], pts[k + 1][1])
        return lr * (y0 if x1 == x0 else y0 + (y1 - y0) * (s - x0) / (x1 - x0))

    return _named(fn, f"piecewise({lr:g}, {pts})")


def join(policies: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``policies[k]`` from ``boundaries[k-1]`` on, each seeing steps counted from its own start.

    Example: ``join([cosine(0.05, 800), fge_triangle(0.1, 0.001, 80)], [800])``.
    """
    if len(boundaries) != len(policies) - 1:
        raise ConfigError(f"join needs {len(policies) - 1} boundaries for {len(policies)} policies, got {len(boundaries)}")
    bounds = [_steps(b, "boundaries", 0) for b in boundaries]
    if bounds != sorted(bounds):
        raise ConfigError(f"boundaries must increase, got {bounds}")
    starts = [0, *bounds]

    def fn(step: int) -> float:
        k = bisect.bisect_right(bounds, step)
        return policies[k](step - starts[k])

    return _named(fn, " | ".join(getattr(p, "__name__", "policy") for p in policies))


def lambda_lr(optimizer, policy: Schedule, base_lr: float, last_step: int = -1):  # noqa: ANN001, ANN201
    """``torch.optim.lr_scheduler.LambdaLR`` applying ``policy`` relative to ``base_lr``.

    Every parameter group's rate becomes ``group_initial_lr * policy(step) / base_lr``,
    so a group configured with ``base_lr`` follows the policy exactly and groups with
    other rates keep their ratio to it.
    """
    from torch.optim.lr_scheduler import LambdaLR

    base = _positive(base_lr, "base lr")
    if last_step >= 0:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    return LambdaLR(optimizer, lambda step: policy(step) / base, last_epoch=last_step)


# --------------------------------------------------------------------------- from config
@dataclass(frozen=True)
class ScheduleContext:
    """What a registered schedule builder gets: the base rate, the run's length and a
    converter of the user's durations (epochs, or iterations with ``unit: iteration``)."""

    lr: float
    total_steps: int
    warmup_steps: int
    dur: Callable[[float], int]

    @property
    def body_steps(self) -> int:
        """Iterations after the warm-up."""
        return self.total_steps - self.warmup_steps


@dataclass(frozen=True)
class ScheduleBuilder:
    """A registered policy: its options and ``build(options, context) -> Schedule``."""

    name: str
    options: tuple[str, ...]
    build: Callable[[dict, ScheduleContext], Schedule]


SCHEDULES: Registry[ScheduleBuilder] = Registry("schedule")
_COMMON = ("name", "unit", "warmup", "warmup_start_lr")


def register_schedule(name: str, options: Sequence[str] = ()) -> Callable[[Callable[[dict, ScheduleContext], Schedule]], Callable[[dict, ScheduleContext], Schedule]]:
    """Decorator registering ``build(options, context) -> Schedule`` as the config name ``name``.

    ``options`` are the keys the config may give besides ``name``, ``unit``, ``warmup`` and
    ``warmup_start_lr`` (handled for every policy).

    Example:
        >>> @register_schedule("half", options=("at",))
        ... def _half(s, ctx):
        ...     return step_decay(ctx.lr, [ctx.dur(s.get("at", 1))], 0.5)
    """

    def decorator(fn: Callable[[dict, ScheduleContext], Schedule]) -> Callable[[dict, ScheduleContext], Schedule]:
        SCHEDULES.register(name)(ScheduleBuilder(name, tuple(options), fn))
        return fn

    return decorator


@register_schedule("constant")
def _build_constant(s: dict, ctx: ScheduleContext) -> Schedule:
    return constant(ctx.lr)


@register_schedule("step", ("milestones", "gamma"))
def _build_step(s: dict, ctx: ScheduleContext) -> Schedule:
    return step_decay(ctx.lr, [ctx.dur(m) - ctx.warmup_steps for m in s.get("milestones", [])], s.get("gamma", 0.1))


@register_schedule("cosine", ("min_lr",))
def _build_cosine(s: dict, ctx: ScheduleContext) -> Schedule:
    return cosine(ctx.lr, ctx.body_steps, s.get("min_lr", 0.0))


@register_schedule("linear", ("end_lr",))
def _build_linear(s: dict, ctx: ScheduleContext) -> Schedule:
    return linear(ctx.lr, ctx.body_steps, s.get("end_lr", 0.0))


@register_schedule("inverse_sqrt", ("timescale",))
def _build_inverse_sqrt(s: dict, ctx: ScheduleContext) -> Schedule:
    return inverse_sqrt(ctx.lr, max(1, ctx.dur(s.get("timescale", 1))))


@register_schedule("cosine_restarts", ("cycles", "cycle", "min_lr"))
def _build_cosine_restarts(s: dict, ctx: ScheduleContext) -> Schedule:
    if "cycle" in s:
        cycle = ctx.dur(s["cycle"])
    else:
        cycles = int(s.get("cycles", 5))
        if cycles < 1:
            raise ConfigError(f"cycles must be >= 1, got {cycles}")
        cycle = max(1, ctx.body_steps // cycles)
    return cosine_restarts(ctx.lr, cycle, s.get("min_lr", 0.0))


@register_schedule("fge", ("a1", "a2", "cycle"))
def _build_fge(s: dict, ctx: ScheduleContext) -> Schedule:
    return fge_triangle(s.get("a1", ctx.lr), s.get("a2", ctx.lr / 100), ctx.dur(s.get("cycle", 2)))


@register_schedule("piecewise", ("points",))
def _build_piecewise(s: dict, ctx: ScheduleContext) -> Schedule:
    return piecewise(ctx.lr, ctx.body_steps, s.get("points", [[0, 1], [0.5, 1], [0.9, 0.01], [1, 0.01]]))


def schedule_names() -> list[str]:
    return SCHEDULES.names()


def check_schedule_spec(spec: object) -> None:
    """Validate a schedule spec's name and keys without building it (for config validation)."""
    if callable(spec):
        return
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"schedule must be a name ({', '.join(schedule_names())}) or {{name: ..., ...}}, got {spec!r}")
    builder = SCHEDULES.get(str(spec["name"]))
    for key in spec:
        if key not in builder.options + _COMMON:
            raise ConfigError(f"schedule {builder.name!r} got unknown option {key!r}; valid: {', '.join(builder.options + _COMMON[1:])}")
    unit = spec.get("unit", "epoch")
    if unit not in ("epoch", "iteration"):
        raise ConfigError(f"schedule unit must be 'epoch' or 'iteration', got {unit!r}")


def build_schedule(spec: object, *, lr: float, total_steps: int, steps_per_epoch: int) -> Schedule:
    """Build a policy from a config value.

    Args:
        spec: a name (``"cosine"``), a dict such as ``{name: step, milestones: [15, 25],
            gamma: 0.1, warmup: 1}``, or a callable ``step -> lr`` (returned as is).
            Durations (``milestones``, ``cycle``, ``timescale``, ``warmup``) are in
            epochs unless ``unit: iteration``; fractional epochs are rounded to whole
            iterations. ``cosine_restarts`` takes ``cycles`` (how many over the run) or
            ``cycle`` (length). ``fge`` defaults to ``a1 = lr``, ``a2 = lr / 100``,
            ``cycle = 2`` epochs. ``piecewise`` takes ``points`` ``[[fraction, factor], ...]``
            (default: the FGE/SWA papers' schedule, constant to 50%, linear to 1% at 90%).
            Names are those registered with :func:`register_schedule`.
        lr: the base (peak) learning rate, the optimizer's ``lr``.
        total_steps: iterations of the whole run.
        steps_per_epoch: iterations per epoch (for epoch units).

    Raises:
        ConfigError: unknown name or option, out-of-range value.
    """
    if callable(spec):
        return spec  # type: ignore[return-value]
    check_schedule_spec(spec)
    s = {"name": spec} if isinstance(spec, str) else dict(spec)  # type: ignore[arg-type]
    per = steps_per_epoch if s.get("unit", "epoch") == "epoch" else 1

    def dur(value: float) -> int:
        return int(round(float(value) * per))

    warm = dur(s.get("warmup", 0))
    if warm >= total_steps:
        unit = s.get("unit", "epoch")
        raise ConfigError(f"schedule.warmup = {s['warmup']} {unit}(s) ({warm} iterations) must be shorter than the run "
                          f"({total_steps / per:g} {unit}s, {total_steps} iterations)")
    policy = SCHEDULES.get(s["name"]).build(s, ScheduleContext(lr, total_steps, warm, dur))
    return warmup(policy, warm, s.get("warmup_start_lr", 0.0)) if warm else policy
