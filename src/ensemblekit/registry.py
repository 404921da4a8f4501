"""One registry mechanism for datasets, models, methods and predictor kinds (timm's ``register_model`` idea).

A registered thing registers itself where it is defined (a decorator); nothing imports a
module only for that side effect. A registry names the packages that hold its entries
(``discover=``) and imports every module of them the first time a lookup misses, so a
module that defines an entry is found however the registry was reached.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import threading
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from .errors import ConfigError

__all__ = ["Registry", "import_submodules"]

T = TypeVar("T")


def import_submodules(package: str) -> list[str]:
    """Import ``package`` and every module below it (``pkgutil.walk_packages``); their names, in import order."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=f"{package}."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names


class Registry(Generic[T]):
    """A name -> object table whose unknown-name error lists the valid names.

    Args:
        kind: what is registered ("model", "dataset", "method"), used in messages.
        discover: dotted names of the packages whose modules define entries; on the first
            lookup that misses (:meth:`get`, ``in``) and before the first listing
            (:meth:`names`, iteration) every module of them is imported once (default: none).

    Example:
        >>> models = Registry("model")
        >>> @models.register("tiny")
        ... def tiny(): ...
        >>> models.get("tiny") is tiny
        True
    """

    def __init__(self, kind: str, discover: Sequence[str] = ()) -> None:
        self.kind = kind
        self.discover = tuple(discover)
        self._items: dict[str, T] = {}
        self._discovered = not self.discover
        self._discovering = False
        self._lock = threading.RLock()

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def _discover(self) -> None:
        """Import every module of the ``discover`` packages, once (a lookup during it does not recurse)."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered or self._discovering:
                return
            self._discovering = True
            try:
                for package in self.discover:
                    import_submodules(package)
                self._discovered = True
            finally:
                self._discovering = False

    def get(self, name: str) -> T:
        key = str(name).lower()
        if key not in self._items:
            self._discover()
        if key not in self._items:
            close = difflib.get_close_matches(key, self._items, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(sorted(self._items))}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name.lower() not in self._items:
            self._discover()
        return name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
