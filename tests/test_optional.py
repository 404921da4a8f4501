"""The suite's optional dependencies skip visibly outside CI and fail in CI (tests/optional.py)."""

from __future__ import annotations

import pytest
from optional import have, need


def test_a_missing_optional_dependency_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_module_xyz is not installed .*: the promise"):
        need("no_such_module_xyz", "the promise")
    assert not have("no_such_module_xyz") and have("json")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: no_such_module_xyz is not installed"):
        need("no_such_module_xyz", "the promise")
    assert need("json", "the promise").dumps([1]) == "[1]"
