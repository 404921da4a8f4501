"""Model registry, ``create_model`` and model specifications that survive a save/load.

A *model spec* is a JSON-able dict that rebuilds an architecture without unpickling:
``{"name": "cnn1d", "kwargs": {...}}`` for a registered model or
``{"factory": "package.module:function", "kwargs": {...}}`` for a user's function.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "MODELS",
    "register_model",
    "create_model",
    "list_models",
    "ModelFactory",
    "model_factory",
    "import_factory",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# Arguments a builder may declare to receive the data's shape; filled in from the data.
_DATA_ARGS = ("input_shape", "num_classes")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``name``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def _check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(f"{what} got unknown argument {key!r}; valid: {', '.join(valid)}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered name (``ensemblekit list`` shows them): mlp, cnn1d, cnn2d,
            resnet, vgg, wrn, ...
        **kwargs: the builder's arguments, e.g. ``input_shape=(1, 40), num_classes=10``.

    Raises:
        ConfigError: unknown name (the valid ones are listed) or unknown argument.

    Example:
        >>> net = create_model("cnn1d", input_shape=(1, 40), num_classes=10)
    """
    builder = MODELS.get(name)
    _check_kwargs(builder, kwargs, f"model {name!r}")
    return builder(**kwargs)


def import_factory(path: str) -> Callable[..., nn.Module]:
    """Import ``"package.module:function"``; a clear ConfigError when it cannot be found."""
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(f"model factory must look like 'package.module:function', got {path!r}")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model factory {path!r}: cannot import module {module_name!r} ({exc})") from exc
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"model factory {path!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"model factory {path!r} is not callable")
    return fn  # type: ignore[return-value]


class ModelFactory:
    """A zero-argument callable that builds one fresh member, with a JSON-able spec.

    ``spec`` is ``None`` for a plain Python callable (it cannot be rebuilt from a file;
    pass the factory again when loading).
    """

    def __init__(self, fn: Callable[[], nn.Module], spec: dict[str, Any] | None, label: str) -> None:
        self._fn = fn
        self.spec = spec
        self.label = label

    def __call__(self) -> nn.Module:
        module = self._fn()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model factory {self.label!r} returned {type(module).__name__}, not an nn.Module")
        return module

    def __repr__(self) -> str:
        return f"ModelFactory({self.label})"


def _json_spec(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The spec as it will read back from a file (tuples become lists), or None if not JSON-able."""
    import json

    try:
        return json.loads(json.dumps(spec))
    except (TypeError, ValueError):
        return None


def _with_data_args(fn: Callable[..., Any], kwargs: dict[str, Any], data_args: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    out = dict(kwargs)
    for key in _DATA_ARGS:
        if key in params and key not in out and data_args.get(key) is not None:
            value = data_args[key]
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def model_factory(
    model: str | Mapping[str, Any] | Callable[[], nn.Module] | ModelFactory,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> ModelFactory:
    """Turn any model description into a :class:`ModelFactory`.

    Args:
        model: a registered name (``"cnn1d"``), ``{"name": ..., "kwargs": {...}}``,
            ``{"factory": "pkg.mod:fn", "kwargs": {...}}``, or a zero-argument callable
            returning an ``nn.Module``.
        input_shape, num_classes: taken from the data and passed to builders that
            declare these arguments and were not given them explicitly.

    Raises:
        ConfigError: unknown model name, unknown argument, unimportable factory.
    """
    if isinstance(model, ModelFactory):
        return model
    data_args = {"input_shape": input_shape, "num_classes": num_classes}
    if isinstance(model, str):
        model = {"name": model}
    if isinstance(model, Mapping):
        unknown = set(model) - {"name", "factory", "kwargs", "dropconnect", "frozen_head"}
        if unknown or ("name" in model) == ("factory" in model):
            raise ConfigError(
                "model must be a registered name, {name: ..., kwargs: {...}} or "
                f"{{factory: 'pkg.mod:fn', kwargs: {{...}}}}, got {dict(model)!r}"
            )
        kwargs = dict(model.get("kwargs") or {})
        dropconnect = float(model.get("dropconnect") or 0.0)
        if dropconnect:
            inner = model_factory({k: v for k, v in model.items() if k != "dropconnect"}, input_shape=input_shape, num_classes=num_classes)
            from .dropconnect import apply_dropconnect

            apply_dropconnect(inner(), dropconnect)  # validate p now, not at the first member
            spec = dict(inner.spec, dropconnect=dropconnect) if inner.spec is not None else None
            return ModelFactory(lambda: apply_dropconnect(inner(), dropconnect), spec, f"{inner.label}+dropconnect")
        head_scale = float(model.get("frozen_head") or 0.0)
        if head_scale:
            inner = model_factory({k: v for k, v in model.items() if k != "frozen_head"}, input_shape=input_shape, num_classes=num_classes)
            from .frozen_head import apply_frozen_head

            apply_frozen_head(inner(), head_scale)  # validate now, not at the first member
            spec = dict(inner.spec, frozen_head=head_scale) if inner.spec is not None else None
            return ModelFactory(lambda: apply_frozen_head(inner(), head_scale), spec, f"{inner.label}+frozen_head")
        if "name" in model:
            name = str(model["name"]).lower()
            builder = MODELS.get(name)
            kwargs = _with_data_args(builder, kwargs, data_args)
            _check_kwargs(builder, kwargs, f"model {name!r}")
            return ModelFactory(lambda: builder(**kwargs), _json_spec({"name": name, "kwargs": kwargs}), name)
        path = str(model["factory"])
        fn = import_factory(path)
        kwargs = _with_data_args(fn, kwargs, data_args)
        _check_kwargs(fn, kwargs, f"model factory {path!r}")
        return ModelFactory(lambda: fn(**kwargs), _json_spec({"factory": path, "kwargs": kwargs}), path)
    if callable(model):
        label = getattr(model, "__qualname__", type(model).__name__)
        return ModelFactory(model, None, label)
    raise ConfigError(f"model must be a name, a dict or a callable returning nn.Module, got {type(model).__name__}")
