"""Units of work keyed by their spec: reuse only exactly the same work, never train one twice at once.

A unit (a cell of a comparison or of a preset, :mod:`~ensemblekit.experiments.cells`) lives
in its own folder. When it starts it writes ``spec.json``: its fully resolved spec, that
spec's hash (data contents included) and the fingerprint of the code that computes it
(:func:`~ensemblekit.hashing.code_fingerprint`: ensemblekit's source files and
the versions of torch and the other computing libraries). A later run of the same folder

- reuses the finished row (``results.json``) or resumes the checkpoints only when the hash
  and the code are the same;
- under another spec refuses with one line naming both hashes (``force=True`` / ``--force``
  wipes the folder and retrains it);
- under other code refuses with one line naming both fingerprints, offering ``--force``
  (retrain) or ``--accept-code-change`` (keep the row; the acceptance is recorded in
  ``spec.json`` and in the row, and the report says which rows other code computed).

While a unit trains it holds an exclusive kernel lock (``flock``) on ``<folder>/.lock``, which
also names the holder's pid and host. A second process that reaches the same unit gets
:class:`UnitBusyError` naming that pid. The kernel releases the lock when its holder dies
(also on ``kill -9``), so a dead holder's lock is free without anyone deciding it is dead: two
processes can never both take it over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, EnsembleKitError
from .. import hashing
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
    """The hash a unit's config is keyed by: its resolved spec and the data's contents (the code
    that computes it is checked separately, so that a refusal can say which of the two changed)."""
    return spec_hash({"spec": _shaping(spec), "data": data_digest})


def _recorded(folder: str) -> dict[str, Any] | None:
    path = os.path.join(folder, _SPEC)
    if not os.path.exists(path):
        return None
    try:
        record = read_json(path)
        return record if isinstance(record, dict) else {"hash": "unreadable"}
    except (OSError, ValueError):
        return {"hash": "unreadable"}


def finished_row(folder: str, digest: str, *, force: bool = False, accept_code_change: bool = False) -> dict[str, Any] | None:
    """The unit's row when it finished under ``digest`` and this code; None when it must (still) be trained.

    ``accept_code_change``: a unit of the same spec computed by other code is kept (its
    row, or its checkpoints to resume), and the acceptance is recorded in ``spec.json`` and in
    the row (``code_accepted``).

    Raises:
        StaleResultError: the folder holds work of another spec, or of other code, and neither
            ``force`` nor (for a code change) ``accept_code_change`` is on.
    """
    record = _recorded(folder)
    row = load_row(folder)
    if record is None and row is None:
        return None if not os.path.isdir(os.path.join(folder, "checkpoints")) or force else _stale(folder, "unknown", digest)
    recorded = str((record or {}).get("hash", "unknown"))
    if recorded != digest:
        if force:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return _stale(folder, recorded, digest)
    code, now = str((record or {}).get("code", "unrecorded")), hashing.code_fingerprint()
    if code == now:
        return row
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    if not accept_code_change:
        raise StaleResultError(f"{folder} was computed by other code (code {code}, now {now}: ensemblekit or torch changed); "
                               "use --force to recompute it, or --accept-code-change to keep it (recorded)")
    return _accept(folder, dict(record or {}), row, code, now)


def _accept(folder: str, record: dict[str, Any], row: dict[str, Any] | None, code: str, now: str) -> dict[str, Any] | None:
    """Keep a unit computed by other code: record the acceptance in ``spec.json`` and in the row."""
    accepted = {"computed_by": code, "accepted_under": now, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    record["accepted_code_changes"] = [*record.get("accepted_code_changes", []), accepted]
    record["code"] = now  # later runs under this code reuse it without asking again
    write_json(os.path.join(folder, _SPEC), record)
    if row is None:
        return None
    row = {**row, "code_accepted": row.get("code_accepted") or accepted}
    write_json(os.path.join(folder, "results.json"), row)
    return row


def _stale(folder: str, recorded: str, digest: str) -> None:
    raise StaleResultError(f"{folder} holds work of another config (spec {recorded}, now {digest}); "
                           "use --force (force=True) to retrain it under the new config, or another --out / --run-dir")


def _holder(lock: str) -> dict[str, Any]:
    try:
        with open(lock, encoding="utf-8") as f:
            holder = json.load(f)
            return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _flock(fd: int, lock: str, flags: int) -> bool:
    """``flock(fd, flags)``; False when another process holds it (``LOCK_NB``)."""
    try:
        fcntl.flock(fd, flags)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise EnsembleKitError(f"cannot lock {lock}: {exc.strerror} (the run directory's filesystem must support flock)") from None


def _acquire(lock: str) -> int:
    """An open descriptor holding the exclusive lock on the file now at ``lock``.

    A holder unlinks the file before releasing it, so a lock taken on a file that is no longer
    at ``lock`` is stale: it is dropped and the file at ``lock`` is tried again."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if not _flock(fd, lock, fcntl.LOCK_EX | fcntl.LOCK_NB):
            os.close(fd)
            holder = _holder(lock)
            raise UnitBusyError(f"{os.path.dirname(lock)} is being trained by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                                f"(since {holder.get('since', '?')}; lock {lock}); wait for it, or stop that process", lock)
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def claim(folder: str, digest: str, spec: Mapping[str, Any]) -> Iterator[None]:
    """Hold the unit's lock while it trains and record its spec and code; released on exit (also on errors).

    Raises:
        UnitBusyError: another live process holds the lock.
    """
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, _LOCK)
    fd = _acquire(lock)
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        record = {"hash": digest, "spec": spec, "code": hashing.code_fingerprint()}
        previous = _recorded(folder) or {}
        if previous.get("hash") == digest and previous.get("accepted_code_changes"):
            record["accepted_code_changes"] = previous["accepted_code_changes"]
        write_json(os.path.join(folder, _SPEC), record)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # before the release: a process that locks the old file sees it is gone
        os.close(fd)


def wait_for(lock: str, poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Block until ``lock`` is released (its unit finished elsewhere, or its holder died)."""
    start = time.monotonic()
    while True:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            if _flock(fd, lock, fcntl.LOCK_SH | (fcntl.LOCK_NB if timeout_s is not None else 0)):
                return
        finally:
            os.close(fd)
        if time.monotonic() - start > float(timeout_s or 0):
            return
        time.sleep(poll_s)
