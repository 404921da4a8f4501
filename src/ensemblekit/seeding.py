"""Reproducible seeds derived from a run seed (no process-global state)."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(seed: int, *labels: object) -> int:
    """A 31-bit seed that depends only on ``seed`` and ``labels`` (e.g. ``derive_seed(0, "member", 3)``)."""
    text = "/".join([str(int(seed)), *map(str, labels)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") % (2**31 - 1)
