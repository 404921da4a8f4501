"""The Ray execution backend: independent units of work as Ray tasks on a local or remote cluster.

Every unit (a compare cell, a tuning trial...) becomes one Ray task that reserves
``num_cpus`` CPUs and ``num_gpus`` GPUs. A task whose worker dies (killed, out of
memory, a lost node) is retried up to ``max_retries`` times; since each unit writes its
own run directory with atomic per-epoch checkpoints and resumes from them, the retry
continues where the dead worker stopped. A unit that raises is reported as an
:class:`~ensemblekit.experiments.backends.Outcome` with its error; the other units go on.

Artefacts are written by the workers, so the output directory must be a path every node
sees (a shared file system on a cluster; any local folder on one machine). Relative
paths are resolved against the driver's working directory when a worker can see it.

Ray is an optional dependency (``pip install 'ensemblekit[ray]'``): this module imports
it only when :meth:`RayBackend.map` runs, so importing ensemblekit never imports ray.

Example:
    >>> from ensemblekit.experiments.backends import get_backend
    >>> backend = get_backend("ray", num_cpus=2)            # a local Ray instance
    >>> backend = get_backend("ray", address="ray://head:10001", num_gpus=1)  # one run per GPU
    >>> rows = run_compare(cfg, "/shared/runs/cmp", backend=backend)
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
import traceback
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from .backends import Backend, OnDone, Outcome, UnitFn

__all__ = ["RayBackend", "run_unit"]


def run_unit(fn: UnitFn, spec: Mapping[str, Any], context: Mapping[str, Any], num_threads: int, cwd: str | None) -> dict[str, Any]:
    """Run one unit inside a Ray worker; returns ``{"value"| "error", "elapsed_s", ...}``.

    Exceptions are caught here (not left to Ray) so that an error reaches the driver as
    one line plus its traceback, and is never retried: only a dead worker is.
    """
    import torch

    torch.set_num_threads(num_threads)  # Ray sets OMP_NUM_THREADS, but torch may already be initialised
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # a relative out_dir means the same folder as on the driver
    t0 = time.perf_counter()
    try:
        value = fn(spec, **dict(context))
        return {"value": value, "elapsed_s": round(time.perf_counter() - t0, 3), "node": os.uname().nodename}
    except Exception as exc:  # noqa: BLE001 - reported to the driver, the other units go on
        return {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "elapsed_s": round(time.perf_counter() - t0, 3),
            "node": os.uname().nodename,
        }


def _number(name: str, value: Any, low: float, *, integer: bool = False, positive: bool = False, flag: str = "") -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if positive else value >= low) and (not integer or float(value).is_integer())
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {low:g}" if positive else f">= {low:g}"
        raise ConfigError(f"ray backend: `{name}`{f' ({flag})' if flag else ''} must be {kind} {bound}, got {value!r}")
    return int(value) if integer else value


class RayBackend(Backend):
    """Runs units of work as Ray tasks, one task per unit, results in spec order.

    Args:
        address: the cluster to join: ``None`` (default) starts a local Ray instance
            (or reuses the one this process already started); ``"auto"`` joins the
            cluster started with ``ray start`` on this machine; ``"ray://host:10001"``
            a remote head through Ray Client; ``"host:6379"`` a head this node can reach.
        num_cpus: CPUs reserved per unit (default 1, > 0); also the number of torch
            threads each unit uses.
        num_gpus: GPUs reserved per unit (default 0, >= 0; 1 = one run per GPU,
            0.5 = two runs share a GPU). Ray sets ``CUDA_VISIBLE_DEVICES`` for the task,
            so a unit whose device is ``auto`` or ``cuda`` uses its own GPU.
        max_retries: how many times a unit whose worker died is started again
            (default 2, >= 0). Errors raised by the unit are not retried.
        progress: show a progress bar of finished units, and a status line per unit
            when :meth:`map` has no ``on_done`` (``None``, the default: only when stderr
            is a terminal).
        init_options: extra keyword arguments of ``ray.init`` (e.g. ``num_cpus`` of a
            local instance, ``runtime_env``); used only when this backend starts Ray.

    Raises:
        ConfigError: an option out of range, or ray is not installed.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 2,
        progress: bool | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigError(f"ray backend: `address` must be a non-empty string (auto, host:port, ray://host:port) or None, got {address!r}")
        self.address = address
        self.num_cpus = _number("num_cpus", num_cpus, 0, positive=True, flag="--cpus-per-run")
        self.num_gpus = _number("num_gpus", num_gpus, 0, flag="--gpus-per-run")
        self.max_retries = _number("max_retries", max_retries, 0, integer=True)
        self.progress = progress
        self.init_options = dict(init_options or {})
        self._started = False
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("the ray backend needs ray: pip install 'ensemblekit[ray]' (or pip install 'ray[default]>=2.9')")

    def _connect(self) -> Any:
        """The ray module, connected: to the Ray this process already runs, else as configured.

        Ray stays up between :meth:`map` calls (a search maps several times; starting Ray
        takes seconds); it stops at :meth:`close` or when the process exits.
        """
        import ray

        if ray.is_initialized():
            return ray
        options = {"log_to_driver": True, **self.init_options}
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"ray backend: cannot connect to the Ray cluster at {self.address!r}: {exc}") from exc
        self._started = True
        return ray

    def close(self) -> None:
        """Stop the local Ray instance (or leave the cluster) if this backend started the connection."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def map(self, fn: UnitFn, specs: Sequence[Mapping[str, Any]], *, context: Mapping[str, Any] | None = None, on_done: OnDone | None = None) -> list[Outcome]:
        """Submit every spec as a task, gather outcomes as they finish; returns them in spec order.

        ``context`` is put into the object store once and shared by every task.
        Ctrl-C cancels the tasks still pending; finished units keep their artefacts.
        """
        if not specs:
            return []
        ray = self._connect()
        task = ray.remote(run_unit).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries, retry_exceptions=False)
        ctx = ray.put(dict(context or {}))
        threads = max(1, int(self.num_cpus))
        pending = {task.remote(fn, dict(spec), ctx, threads, os.getcwd()): i for i, spec in enumerate(specs)}
        try:
            return self._gather(ray, pending, specs, on_done)
        except BaseException:  # Ctrl-C or a failing on_done: the driver stops, so do the tasks
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _gather(self, ray: Any, pending: dict[Any, int], specs: Sequence[Mapping[str, Any]], on_done: OnDone | None) -> list[Outcome]:
        """Outcomes as tasks finish (``pending`` shrinks as they do), with the progress bar."""
        from tqdm.auto import tqdm

        outcomes: list[Outcome | None] = [None] * len(specs)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        desc = f"runs (ray, {self.num_cpus:g} cpu / {self.num_gpus:g} gpu each)"
        with tqdm(total=len(specs), desc=desc, disable=not show, file=sys.stderr) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    out = outcomes[i] = self._outcome(ray, ref, specs[i])
                    bar.update(1)
                    if on_done is not None:
                        on_done(specs[i], out)
                    elif show:  # no caller to print a status line: print one here
                        status = f"done in {out.elapsed_s:.1f} s" if out.ok else f"FAILED {out.error}"
                        bar.write(f"[{bar.n}/{len(specs)}] {out.key}: {status}", file=sys.stderr)
        return [o for o in outcomes if o is not None]

    def _outcome(self, ray: Any, ref: Any, spec: Mapping[str, Any]) -> Outcome:
        key = str(spec["key"])
        try:
            res = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died more than max_retries times, or the task could not run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(key, error=f"{type(exc).__name__} (after {self.max_retries} retries): {first}")
        info = {"node": res.get("node")}
        if "error" in res:
            info["traceback"] = res["traceback"]
            return Outcome(key, error=res["error"], elapsed_s=res["elapsed_s"], info=info)
        return Outcome(key, value=res["value"], elapsed_s=res["elapsed_s"], info=info)
