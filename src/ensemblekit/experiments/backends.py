"""Execution backends: where independent units of work (compare cells, candidate
architectures, tuning trials) run.

A *unit of work* is a pure, importable function ``fn(spec, **context) -> dict`` of a
JSON-able ``spec`` (which carries a unique ``key``): it writes its artefacts into a
folder named by the spec, resumes from the checkpoints it finds there and returns a
JSON-able row. It must not depend on process-global state, so a backend may run it in
this process (``local``, the default) or on another machine.

Example:
    >>> backend = get_backend("local")
    >>> outcomes = backend.map(train_cell, specs, context={"data": data})
    >>> [o.value for o in outcomes if o.ok]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, EnsembleKitError

__all__ = ["Outcome", "Backend", "LocalBackend", "get_backend", "backend_from_cli", "BACKENDS"]

UnitFn = Callable[..., dict[str, Any]]
OnDone = Callable[[Mapping[str, Any], "Outcome"], None]


@dataclass
class Outcome:
    """What one unit of work gave: its row (``value``) or the error that stopped it."""

    key: str
    value: dict[str, Any] | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class Backend:
    """Runs units of work; :meth:`map` returns one :class:`Outcome` per spec, in spec order."""

    name = "backend"

    def map(self, fn: UnitFn, specs: Sequence[Mapping[str, Any]], *, context: Mapping[str, Any] | None = None, on_done: OnDone | None = None) -> list[Outcome]:
        raise NotImplementedError


class LocalBackend(Backend):
    """One unit after another in this process (the default).

    ``context`` (e.g. an already loaded dataset) is passed to ``fn`` as keyword
    arguments so that the units need not reload it. A unit that raises an
    :class:`~ensemblekit.errors.EnsembleKitError` (bad config, diverged loss) is
    reported with its error and the others still run; any other exception is a bug
    and propagates with its traceback.
    """

    name = "local"

    def map(self, fn: UnitFn, specs: Sequence[Mapping[str, Any]], *, context: Mapping[str, Any] | None = None, on_done: OnDone | None = None) -> list[Outcome]:
        outcomes = []
        for spec in specs:
            t0 = time.perf_counter()
            try:
                out = Outcome(str(spec["key"]), value=fn(spec, **dict(context or {})))
            except EnsembleKitError as exc:
                out = Outcome(str(spec["key"]), error=f"{type(exc).__name__}: {exc}")
            out.elapsed_s = round(time.perf_counter() - t0, 3)
            outcomes.append(out)
            if on_done is not None:
                on_done(spec, out)
        return outcomes


def _ray_backend(**options: Any) -> Backend:
    # imported on demand: ray is an optional extra and the base package never imports it
    from .ray_backend import RayBackend

    return RayBackend(**options)


BACKENDS: dict[str, Callable[..., Backend]] = {"local": LocalBackend, "ray": _ray_backend}


def get_backend(name: str = "local", **options: Any) -> Backend:
    """A backend by name: ``local`` (default) or ``ray`` (options: see :class:`~ensemblekit.experiments.ray_backend.RayBackend`)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; valid: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](**options)


def backend_from_cli(name: str = "local", address: str | None = None, cpus_per_run: float | None = None, gpus_per_run: float | None = None) -> Backend:
    """The backend of the ``--backend/--address/--cpus-per-run/--gpus-per-run`` options.

    Raises:
        ConfigError: an unknown backend, or a Ray option given with ``--backend local``.
    """
    ray_opts = {"address": address, "num_cpus": cpus_per_run, "num_gpus": gpus_per_run}
    given = {k: v for k, v in ray_opts.items() if v is not None}
    if name == "local" and given:
        flags = {"address": "--address", "num_cpus": "--cpus-per-run", "num_gpus": "--gpus-per-run"}
        raise ConfigError(f"{', '.join(flags[k] for k in given)} need(s) --backend ray, got --backend local")
    return get_backend(name, **given)
