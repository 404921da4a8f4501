"""Model registry, ``create_model`` and model specifications that survive a save/load.

A *model spec* is a JSON-able dict that rebuilds an architecture without unpickling:
``{"name": "cnn1d", "kwargs": {...}}`` for a registered model or
``{"factory": "package.module:function", "kwargs": {...}}`` for a user's function, plus
any registered *wrappers* (``{"name": "cnn1d", "frozen_head": 3.0, "dropconnect": 0.1}``):
transformations applied to every member after it is built (:func:`register_wrapper`).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "DISCOVER",
    "MODELS",
    "register_model",
    "create_model",
    "list_models",
    "ModelFactory",
    "model_factory",
    "import_factory",
    "WRAPPERS",
    "ModelWrapper",
    "register_wrapper",
    "list_wrappers",
]

DISCOVER = ("ensemblekit.models", "ensemblekit.nas", "ensemblekit.efficient", "ensemblekit.distance")
"""The packages whose modules register models and wrappers (imported on a lookup that misses)."""

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", discover=DISCOVER)

# Arguments a builder may declare to receive the data's shape; filled in from the data.
_DATA_ARGS = ("input_shape", "num_classes")


@dataclass(frozen=True)
class ModelWrapper:
    """A registered transformation of every member: ``apply(module, value) -> module``.

    Attributes:
        name: the model-spec key (``frozen_head``, ``dropconnect``).
        apply: builds the wrapped module from a freshly built one and the key's value.
        check: validates and normalises the value (raises ConfigError naming the range);
            a false value (0, None) leaves the model unwrapped.
        order: wrappers apply in ascending order (the last one is outermost).
    """

    name: str
    apply: Callable[[nn.Module, Any], nn.Module]
    check: Callable[[Any], Any]
    order: int


WRAPPERS: Registry[ModelWrapper] = Registry("model wrapper", discover=DISCOVER)
_SPEC_KEYS = ("name", "factory", "kwargs")


def register_wrapper(name: str, *, check: Callable[[Any], Any], order: int) -> Callable[[Callable[[nn.Module, Any], nn.Module]], Callable[[nn.Module, Any], nn.Module]]:
    """Decorator registering ``apply(module, value) -> module`` as the model-spec key ``name``.

    Example:
        >>> @register_wrapper("dropconnect", check=check_p, order=20)
        ... def apply_dropconnect(model, p): ...
    """

    def decorator(fn: Callable[[nn.Module, Any], nn.Module]) -> Callable[[nn.Module, Any], nn.Module]:
        WRAPPERS.register(name)(ModelWrapper(name, fn, check, order))
        return fn

    return decorator


def list_wrappers() -> list[str]:
    return WRAPPERS.names()


def resolve_wrappers(options: Mapping[str, Any]) -> list[tuple[ModelWrapper, Any]]:
    """The active wrappers of a spec's extra keys, validated, in the order they apply.

    Raises:
        ConfigError: an unknown key (the valid ones listed) or a bad value.
    """
    out = []
    for key, value in options.items():
        if key not in WRAPPERS:
            raise ConfigError(f"unknown model key {key!r}; valid: {', '.join([*_SPEC_KEYS, *WRAPPERS.names()])}")
        wrapper = WRAPPERS.get(key)
        value = wrapper.check(value)
        if value:
            out.append((wrapper, value))
    return sorted(out, key=lambda wv: wv[0].order)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``name``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
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
    check_kwargs(builder, kwargs, f"model {name!r}")
    return builder(**kwargs)


def import_factory(path: str) -> Callable[..., nn.Module]:
    """Import ``"package.module:function"``; one clear ConfigError when it cannot be found or
    its module fails while importing (any exception it raises, a syntax error)."""
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(f"model factory must look like 'package.module:function', got {path!r}")
    module_name, _, attr = path.partition(":")
    if module_name.startswith(".") or "/" in module_name or not module_name:
        raise ConfigError(f"model factory {path!r}: {module_name!r} is not an absolute module name; "
                          "give 'package.module:function', importable from the working directory or PYTHONPATH")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing is not None and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(f"model factory {path!r}: cannot import module {module_name!r} ({exc})") from None
        raise ConfigError(f"model factory {path!r}: importing module {module_name!r} failed ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # the module itself failed: a SyntaxError, or what its top-level code raised
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(f"model factory {path!r}: importing module {module_name!r} failed ({detail})") from None
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
        if ("name" in model) == ("factory" in model):
            raise ConfigError(
                "model must be a registered name, {name: ..., kwargs: {...}} or "
                f"{{factory: 'pkg.mod:fn', kwargs: {{...}}}}, got {dict(model)!r}"
            )
        wrappers = resolve_wrappers({k: v for k, v in model.items() if k not in _SPEC_KEYS})
        base = _base_factory(model, data_args)
        if not wrappers:
            return base
        _wrap(base(), wrappers)  # a bad value or an unsupported model fails now, not at the first member
        spec = dict(base.spec, **{w.name: v for w, v in wrappers}) if base.spec is not None else None
        label = "+".join([base.label, *(w.name for w, _ in wrappers)])
        return ModelFactory(lambda: _wrap(base(), wrappers), spec, label)
    if callable(model):
        label = getattr(model, "__qualname__", type(model).__name__)
        return ModelFactory(model, None, label)
    raise ConfigError(f"model must be a name, a dict or a callable returning nn.Module, got {type(model).__name__}")


def _wrap(module: nn.Module, wrappers: list[tuple[ModelWrapper, Any]]) -> nn.Module:
    for wrapper, value in wrappers:
        module = wrapper.apply(module, value)
    return module


def _base_factory(model: Mapping[str, Any], data_args: Mapping[str, Any]) -> ModelFactory:
    """The factory of a spec's ``name`` or ``factory`` with its ``kwargs`` (no wrappers)."""
    kwargs = dict(model.get("kwargs") or {})
    if "name" in model:
        name = str(model["name"]).lower()
        builder = MODELS.get(name)
        kwargs = _with_data_args(builder, kwargs, data_args)
        check_kwargs(builder, kwargs, f"model {name!r}")
        return ModelFactory(lambda: builder(**kwargs), _json_spec({"name": name, "kwargs": kwargs}), name)
    path = str(model["factory"])
    fn = import_factory(path)
    kwargs = _with_data_args(fn, kwargs, data_args)
    check_kwargs(fn, kwargs, f"model factory {path!r}")
    return ModelFactory(lambda: fn(**kwargs), _json_spec({"factory": path, "kwargs": kwargs}), path)
