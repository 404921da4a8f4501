"""Config files: safe YAML (1.2-style floats), string keys only, ``--set path=value`` overrides,
and validation into a schema with one-line errors."""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .base import StrictModel, format_validation_error

__all__ = ["parse_yaml", "load_yaml", "set_paths", "apply_overrides", "parse_config", "load_config"]


class _Loader(yaml.SafeLoader):
    """YAML with 1.2-style floats: ``1e-4`` is a number (PyYAML's 1.1 rules read it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?(?:[0-9][0-9_]*)\.[0-9_]*$|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely (no object construction), with 1.2-style floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)


def load_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = parse_yaml(f.read())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty (nothing would be configured: write at least `data:` and `method:`)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    _check_keys(raw, path)
    return raw


def _check_keys(node: Any, path: str, where: str = "") -> None:
    """Every mapping key of a config must be a string (``1: 2`` is a typo, not a field)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path}: keys must be strings, got {k!r} ({type(k).__name__}){f' under {where}' if where else ''}")
            _check_keys(v, path, f"{where}.{k}" if where else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_keys(v, path, f"{where}[{i}]")


def set_paths(raw: Mapping[str, Any], values: Mapping[str, Any], full: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted path set to its value (what ``--set path=value`` does).

    A number in a path indexes a list (``methods.2.members``). Shorthands on the way are
    expanded (``model: mlp`` -> ``{name: mlp}``); a missing parent is copied from ``full``
    (the resolved config) when given, so ``train.optimizer.lr`` keeps the default
    optimizer's name, else it starts empty.

    Raises:
        ConfigError: a path runs through a value that is neither a mapping nor a list it can index.
    """
    out = copy.deepcopy(dict(raw))
    for key, value in values.items():
        node: Any = out
        ref: Any = full
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if isinstance(node, list):
                if not (part.isdigit() and int(part) < len(node)):
                    raise ConfigError(f"{key}: {part!r} is not an index of a list of {len(node)}")
                ref = ref[int(part)] if isinstance(ref, list) and int(part) < len(ref) else None
                child = node[int(part)]
                if isinstance(child, str):
                    child = node[int(part)] = {"name": child}
                node = child
                continue
            ref = ref.get(part) if isinstance(ref, Mapping) else None
            child = node.get(part)
            if isinstance(child, str):  # shorthand such as data: mnist1d -> {name: mnist1d}
                child = {"name": child}
            if child is None:
                child = copy.deepcopy(ref) if isinstance(ref, (Mapping, list)) else {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"{key}: {part!r} is not a mapping (it is {type(child).__name__} {child!r})")
            node[part] = child
            node = child
        if isinstance(node, list):
            if not (leaf.isdigit() and int(leaf) < len(node)):
                raise ConfigError(f"{key}: {leaf!r} is not an index of a list of {len(node)}")
            node[int(leaf)] = copy.deepcopy(value)
        elif isinstance(node, dict):
            node[leaf] = copy.deepcopy(value)
        else:
            raise ConfigError(f"{key}: cannot set {leaf!r} inside {type(node).__name__} {node!r}")
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config dict."""
    values: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, _, text = item.partition("=")
        try:
            values[key.strip()] = parse_yaml(text)
        except yaml.YAMLError:
            values[key.strip()] = text
    try:
        return set_paths(raw, values)
    except ConfigError as exc:
        raise ConfigError(f"--set {exc}") from None


def parse_config(raw: Any, kind: type[StrictModel]) -> Any:
    """Validate a raw value (a dict, or a shorthand such as ``"mnist1d"``) as ``kind``; a one-line ConfigError on failure."""
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("config: " + format_validation_error(exc, root=kind)) from None
    except ConfigError as exc:
        raise ConfigError(f"config: {exc}") from None


def load_config(path: str, kind: type[StrictModel], overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read YAML, apply ``--set`` overrides, validate as ``kind`` (RunConfig, CompareConfig, ...)."""
    return parse_config(apply_overrides(load_yaml(path), overrides), kind)
