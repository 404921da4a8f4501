"""Content hashes of specs and data: a unit of work is keyed by what it computes."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import sys
from typing import Any

import torch

__all__ = ["spec_hash", "tensor_digest", "code_fingerprint", "COMPUTING_LIBRARIES"]

#: The libraries whose versions can change a result (their kernels and algorithms compute it).
COMPUTING_LIBRARIES = ("torch", "numpy", "scipy", "scikit-learn")


def spec_hash(spec: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able spec, independent of key order (``sort_keys``).

    Example:
        >>> spec_hash({"b": 1, "a": [1, 2]}) == spec_hash({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """Hex digest of tensors' dtypes, shapes and bytes (``None`` entries count as absent)."""
    h = hashlib.sha1()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the code that computes a result: every ``.py`` file of the installed ensemblekit
    package (path and contents) and the versions of Python and of :data:`COMPUTING_LIBRARIES`.

    Two results with the same fingerprint were computed by the same code; an upgrade, a local
    edit of the package or a new torch changes it. A unit of work records it beside its spec
    (:mod:`ensemblekit.experiments.units`), so that a cached result is never silently reused
    by other code.
    """
    root = os.path.dirname(os.path.abspath(__file__))  # the ensemblekit package
    h = hashlib.sha1()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read() + b"\0")
    h.update(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode())
    for lib in COMPUTING_LIBRARIES:
        try:
            version = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{lib} {version}".encode())
    return h.hexdigest()[:12]
