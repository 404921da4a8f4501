"""What produced a result: versions, code commit, machine, threads, time."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
from typing import Any

import torch

from ..threads import current_choice

__all__ = ["provenance", "code_version"]


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """ensemblekit's version and the git commit of its source tree (``None`` outside a checkout)."""
    from .. import __version__

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
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "thread_policy": current_choice(),  # how the count was chosen (ensemblekit.threads)
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }
