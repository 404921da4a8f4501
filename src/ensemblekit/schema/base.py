"""The strict base of every config schema, and one-line validation errors."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["StrictModel", "format_validation_error", "valid_keys"]


class StrictModel(BaseModel):
    """Pydantic model that refuses unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)


def valid_keys(root: type | None, loc: tuple) -> list[str]:
    """Field names of the model that holds the unknown key at ``loc`` (walking from ``root``)."""
    node = root
    for part in loc[:-1]:
        if node is None or not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return []
        node = node.model_fields[str(part)].annotation
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def format_validation_error(exc: ValidationError, prefix: str = "", root: type | None = None) -> str:
    """One line naming the first invalid field, the value received and what is allowed."""
    err = exc.errors()[0]
    parts = tuple(p for p in err["loc"] if not str(p).startswith(("function-", "union[")))
    loc = ".".join(str(p) for p in parts)
    where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        valid = valid_keys(root, parts)
        return f"{where}: unknown key" + (f"; valid keys: {', '.join(valid)}" if valid else "")
    if err["type"] == "value_error":
        if not where:
            return msg
        # a nested config's own one-line error ("cycles: unknown key; ...") joins the path: one location
        if re.match(r"^[\w\[\]]+(\.[\w\[\]]+)*: (unknown key|Input should|Field required)", msg):
            return f"{where}.{msg}"
        return f"{where}: {msg}"
    return f"{where}: {msg} (got {err.get('input')!r})"
