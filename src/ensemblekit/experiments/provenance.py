"""What produced a result: versions, code commit, machine, threads, time."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
from typing import Any

import torch

from .. import hashing
from ..threads import current_choice

__all__ = ["provenance", "code_version", "code_note"]



@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """ensemblekit's version and the git commit of its source tree (``None`` outside a checkout)."""
    from .._version import __version__

    commit = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"ensemblekit": __version__, "commit": commit}


def provenance() -> dict[str, Any]:
    """Versions, code commit, machine, torch threads, CUDA device and the time, for ``results.json``."""
    return {
        **code_version(),
        "code": hashing.code_fingerprint(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "thread_policy": current_choice(),  # how the count was chosen (ensemblekit.threads)
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def code_note(rows: Any) -> str:
    """A Markdown note when ``rows`` were not all computed by the running code: which rows
    came from which code fingerprint, and which were kept by ``--accept-code-change``
    (empty when every row is this code's)."""
    now = hashing.code_fingerprint()
    by_code: dict[str, list[str]] = {}
    accepted = []
    for r in rows:
        if not isinstance(r, dict) or "failed" in r or "skipped" in r:
            continue
        name = " ".join(str(r[k]) for k in ("method", "kind", "budget", "seed") if r.get(k) is not None) or str(r.get("name", "?"))
        code = str((r.get("code_accepted") or {}).get("computed_by") or (r.get("provenance") or {}).get("code", "unrecorded"))
        by_code.setdefault(code, []).append(name)
        if r.get("code_accepted"):
            accepted.append(name)
    if set(by_code) <= {now}:
        return ""
    lines = ["## Code", "", f"Not every row was computed by this code (fingerprint {now}):", ""]
    for code, names in by_code.items():
        lines.append(f"- code {code}{' (this code)' if code == now else ''}: {', '.join(names)}")
    if accepted:
        lines += ["", f"Kept under a code change (--accept-code-change, recorded in each cell's spec.json): {', '.join(accepted)}."]
    return "\n".join(lines) + "\n"
