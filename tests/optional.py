"""Optional dependencies of the test suite: a promise that needs one is skipped, visibly, where it
is not installed, and fails in CI (``CI=true``), where the test extras install every one of them."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

__all__ = ["need", "have"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def have(module: str) -> bool:
    """Whether ``module`` imports (a missing one fails in CI: see :func:`need`)."""
    try:
        need(module, "")
        return True
    except pytest.skip.Exception:
        return False


def need(module: str, promise: str) -> ModuleType:
    """Import ``module``; skip the test with ``promise`` named when it is missing, or fail in CI."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f"{module} is not installed ({exc}), so this is not checked: {promise}"
        if _in_ci():
            pytest.fail(f"CI: {why}; pip install -e '.[test]' installs it", pytrace=False)
        pytest.skip(why)
