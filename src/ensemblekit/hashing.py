"""Content hashes of specs and data: a unit of work is keyed by what it computes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["spec_hash", "tensor_digest"]


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
