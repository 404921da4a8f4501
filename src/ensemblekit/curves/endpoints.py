"""Curve endpoints: two members of a trained ensemble or two saved ensemble files.

Endpoints must share one architecture (same module type and structure, same parameter
names, shapes and dtypes); otherwise there is no weight space to draw a curve in and a
:class:`~ensemblekit.errors.ConfigError` says what differs.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from torch import nn

from ..ensemble import Ensemble, MemberGroup
from ..errors import ConfigError, DataError
from .model import CurveModel

__all__ = ["curve_from_ensembles", "curve_from_files", "check_same_architecture"]


def _locate(ens: Ensemble, i: int) -> tuple[MemberGroup, int]:
    if not 0 <= i < ens.num_members:
        raise ConfigError(f"endpoint member index must be in [0, {ens.num_members - 1}], got {i}")
    for g in ens.groups:
        if i < g.num_members:
            return g, i
        i -= g.num_members
    raise ConfigError(f"endpoint member index out of range: {i}")


def check_same_architecture(a: nn.Module, b: nn.Module) -> None:
    """Raise ConfigError naming the first difference between two modules' architectures."""
    if type(a) is not type(b):
        raise ConfigError(f"curve endpoints must share one architecture: {type(a).__name__} vs {type(b).__name__}")
    sa = [(k, tuple(v.shape), v.dtype) for k, v in [*a.named_parameters(), *a.named_buffers()]]
    sb = [(k, tuple(v.shape), v.dtype) for k, v in [*b.named_parameters(), *b.named_buffers()]]
    if sa != sb:
        diff = next(((x, y) for x, y in zip(sa, sb) if x != y), (sa[len(sb):len(sb) + 1], sb[len(sa):len(sa) + 1]))
        raise ConfigError(f"curve endpoints must share one architecture: tensors differ ({diff[0]} vs {diff[1]}; {len(sa)} vs {len(sb)} tensors)")
    if repr(a) != repr(b):
        raise ConfigError(f"curve endpoints must share one architecture: the modules differ ({repr(a)[:120]!r} vs {repr(b)[:120]!r})")


def curve_from_ensembles(a: Ensemble, i: int, b: Ensemble, j: int, **kwargs: Any) -> CurveModel:
    """A curve from member ``i`` of ``a`` (w0) to member ``j`` of ``b`` (w1); ``a`` may be ``b``.

    Args:
        a, b: trained ensembles. i, j: member indices. **kwargs: :class:`CurveModel` options.

    Returns:
        a :class:`CurveModel` whose buffers start as w0's.

    Raises:
        ConfigError: an index out of range or endpoints of different architectures.

    Example:
        >>> curve = curve_from_ensembles(ens, 0, ens, 1, curve="bezier", num_bends=3)
    """
    ga, ia = _locate(a, i)
    gb, ib = _locate(b, j)
    check_same_architecture(ga.template, gb.template)
    w0 = {k: v[ia] for k, v in ga.params.items()}
    w1 = {k: v[ib] for k, v in gb.params.items()}
    buffers = {k: v[ia] for k, v in ga.buffers.items()}
    return CurveModel(copy.deepcopy(ga.template), w0, w1, buffers, spec=ga.spec, **kwargs)


def curve_from_files(path0: str, path1: str, member0: int = 0, member1: int = 0, factory: Callable[[], nn.Module] | None = None, **kwargs: Any) -> CurveModel:
    """A curve between members of two ensembles saved with :meth:`Ensemble.save` (e.g. two runs' ``ensemble.safetensors``).

    Raises:
        DataError: a file that is not an ensemble. ConfigError: different architectures.
    """
    try:
        a, b = Ensemble.load(path0, factory=factory), Ensemble.load(path1, factory=factory)
    except FileNotFoundError as exc:
        raise DataError(f"curve endpoint file not found: {exc.filename}") from None
    return curve_from_ensembles(a, member0, b, member1, **kwargs)
