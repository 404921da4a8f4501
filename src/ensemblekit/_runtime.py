"""Process-level tuning for CPU training.

glibc serves large allocations (activations of stacked members are megabytes) with
fresh ``mmap`` pages and returns them on free, so every training step pays page
faults that zero memory again. Raising the mmap and trim thresholds keeps those
pages in the heap for reuse (what jemalloc/tcmalloc do for PyTorch); measured here
it made M=10 ensemble training 1.3-1.4x faster on 2 cores. Set
``ENSEMBLEKIT_NO_MALLOPT=1`` to keep glibc's defaults (lower resident memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator() -> bool:
    """Keep large freed blocks for reuse (glibc only, once per process). Returns True if applied."""
    global _done
    if _done:
        return True
    if os.environ.get("ENSEMBLEKIT_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    _done = bool(ok)
    return _done
