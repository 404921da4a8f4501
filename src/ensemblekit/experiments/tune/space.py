"""Search-space helpers: narrowing ranges for the refine stage (dotted paths are set by :func:`ensemblekit.config.set_paths`)."""

from __future__ import annotations

import math
from typing import Any, Mapping


from ...errors import ConfigError
from .config import ParamSpec, RefineConfig

__all__ = ["narrow_param", "refine_space"]


# ---------------------------------------------------------------------- refine
def narrow_param(spec: ParamSpec, best: Any, shrink: float) -> ParamSpec | None:
    """A range narrowed around ``best``; ``None`` when it collapses to the single value ``best``.

    Log ranges keep ``[best / f, best * f]`` with ``f = (high / low) ** (shrink / 2)``;
    linear ranges a window ``shrink * (high - low)`` wide centred on ``best``; both
    clipped to ``[low, high]``, ints rounded (and kept on their ``step`` lattice).

    Example:
        >>> s = narrow_param(ParamSpec(type="float", low=1e-4, high=1e-1, log=True), 1e-2, 0.5)
        >>> round(s.low, 6), round(s.high, 5)     # f = 1000 ** 0.25 = 5.623
        (0.001778, 0.05623)
    """
    if spec.type == "categorical":
        raise ConfigError("narrow_param takes a float or int range, not a categorical parameter")
    low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    if spec.log:
        f = (high / low) ** (shrink / 2)
        lo, hi = best / f, best * f
    else:
        half = shrink * (high - low) / 2
        lo, hi = best - half, best + half
    lo, hi = max(lo, low), min(hi, high)
    if spec.type == "int":
        step = int(spec.step or 1)
        lo = int(spec.low) + math.ceil(round((math.floor(lo + 0.5) - low) / step, 9)) * step  # type: ignore[arg-type]
        hi = int(spec.low) + math.floor(round((math.floor(hi + 0.5) - low) / step, 9)) * step  # type: ignore[arg-type]
        lo, hi = min(lo, int(best)), max(hi, int(best))
    elif spec.step is not None:
        lo = low + math.ceil(round((lo - low) / spec.step, 9)) * spec.step
        hi = low + math.floor(round((hi - low) / spec.step, 9)) * spec.step
    if not lo < hi:
        return None
    return ParamSpec(type=spec.type, low=lo, high=hi, log=spec.log, step=spec.step)


def refine_space(params: Mapping[str, ParamSpec], best: Mapping[str, Any], refine: RefineConfig) -> tuple[dict[str, ParamSpec], dict[str, Any]]:
    """The refine stage's space around ``best``: ``(searched params, fixed values)``."""
    space: dict[str, ParamSpec] = {}
    fixed: dict[str, Any] = {}
    for name, spec in params.items():
        if spec.type == "categorical":
            if refine.keep_categorical:
                space[name] = spec
            else:
                fixed[name] = best[name]
            continue
        narrowed = narrow_param(spec, best[name], refine.shrink)
        if narrowed is None:
            fixed[name] = best[name]
        else:
            space[name] = narrowed
    return space, fixed


# ---------------------------------------------------------------------- trials
