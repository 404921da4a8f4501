"""Units of work keyed by their spec: reuse only exactly the same work, never train one twice at once.

A unit (a compare cell, a preset's method run) lives in its own folder. When it starts it
writes ``spec.json``: its fully resolved spec and that spec's hash (data contents and the
ensemblekit version included). A later run of the same folder

- reuses the finished row (``results.json``) or resumes the checkpoints only when the hash
  is the same;
- otherwise refuses with one line naming both hashes (``force=True`` / ``--force`` wipes the
  folder and retrains it under the new spec).

While a unit trains it holds ``<folder>/.lock`` (created atomically, holding the owner's pid
and host). A second process that reaches the same unit gets :class:`UnitBusyError` naming
that pid; a lock whose process died on this host is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, EnsembleKitError
from ..hashing import spec_hash
from ..serialization import read_json, write_json
from .results import load_row

__all__ = ["UnitBusyError", "StaleResultError", "unit_hash", "finished_row", "claim", "wait_for"]

_LOCK, _SPEC = ".lock", "spec.json"


class UnitBusyError(EnsembleKitError):
    """Another live process is training this unit."""

    def __init__(self, message: str, lock: str) -> None:
        super().__init__(message)
        self.lock = lock


class StaleResultError(ConfigError):
    """The folder holds a unit trained (or started) under another spec."""


def _shaping(obj: Any) -> Any:
    """The spec without what cannot change a result (``progress``: whether a bar is drawn)."""
    if isinstance(obj, Mapping):
        return {k: _shaping(v) for k, v in obj.items() if k != "progress"}
    if isinstance(obj, (list, tuple)):
        return [_shaping(v) for v in obj]
    return obj


def unit_hash(spec: Mapping[str, Any], data_digest: str) -> str:
    """The hash a unit is keyed by: its resolved spec, the data's contents and the ensemblekit version."""
    from .. import __version__

    return spec_hash({"spec": _shaping(spec), "data": data_digest, "ensemblekit": __version__})


def _recorded(folder: str) -> str | None:
    path = os.path.join(folder, _SPEC)
    if not os.path.exists(path):
        return None
    try:
        return str(read_json(path).get("hash"))
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def finished_row(folder: str, digest: str, *, force: bool = False) -> dict[str, Any] | None:
    """The unit's row when it finished under ``digest``; None when it must (still) be trained.

    Raises:
        StaleResultError: the folder holds work of another spec and ``force`` is off.
    """
    recorded = _recorded(folder)
    row = load_row(folder)
    if recorded is None and row is None:
        return None if not os.path.isdir(os.path.join(folder, "checkpoints")) or force else _stale(folder, "unknown", digest)
    if recorded == digest:
        return row
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return _stale(folder, recorded or "unknown", digest)


def _stale(folder: str, recorded: str, digest: str) -> None:
    raise StaleResultError(f"{folder} holds work of another config (spec {recorded}, now {digest}); "
                           "use --force (force=True) to retrain it under the new config, or another --out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(lock: str) -> dict[str, Any] | None:
    try:
        with open(lock, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def claim(folder: str, digest: str, spec: Mapping[str, Any]) -> Iterator[None]:
    """Hold the unit's lock while it trains and record its spec; released on exit (also on errors).

    Raises:
        UnitBusyError: a live process on this host (or any process on another host) holds the lock.
    """
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, _LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock) or {}
            same_host = holder.get("host") == me["host"]
            if same_host and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                os.unlink(lock)  # its owner died: take it over
                continue
            raise UnitBusyError(f"{folder} is being trained by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                                f"(since {holder.get('since', '?')}; lock {lock}); wait for it, or delete the lock if that process is gone",
                                lock) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        break
    try:
        write_json(os.path.join(folder, _SPEC), {"hash": digest, "spec": spec})
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)


def wait_for(lock: str, poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Block until ``lock`` is released (its unit finished elsewhere) or its owner died."""
    start = time.monotonic()
    while os.path.exists(lock):
        holder = _holder(lock) or {}
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            return
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return
        time.sleep(poll_s)
