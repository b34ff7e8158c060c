"""Name -> object registries that are complete no matter what was imported first.

MMF's registries stayed empty until the right module happened to be imported. Here each
registry knows the packages that hold its built-ins and imports all of them on first
lookup, then loads third-party additions from a Python entry-point group. Registration
itself is a decorator in the module that defines the object: one file, one line.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
import re
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from mmbench.core.errors import MMBenchError

T = TypeVar("T")


def did_you_mean(word: str, choices: Any) -> str:
    """'; did you mean X?' for the closest of `choices` (difflib's ratio at least 0.6), else ''."""
    close = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, word: str, choices: Any) -> str:
    """``unknown KIND 'word'; did you mean 'X'? (known: ...)``, or ``...; known: ...`` when none is close."""
    known = ", ".join(sorted(map(str, choices))) or "(none)"
    hint = did_you_mean(word, choices)
    return f"unknown {kind} {str(word)!r}{hint} (known: {known})" if hint else f"unknown {kind} {str(word)!r}; known: {known}"


def nearest(word: str, choices: Any) -> str:
    """'; did you mean X?' for the closest of `choices`, else the list of them."""
    return did_you_mean(word, choices) or f" (one of: {', '.join(sorted(map(str, choices)))})"


class Registry(Generic[T]):
    def __init__(self, kind: str, packages: tuple[str, ...] = (), entry_point_group: str | None = None):
        self.kind = kind
        self._packages = packages
        self._group = entry_point_group
        self._items: dict[str, T] = {}
        self._loaded = False
        self._loading = False

    def register(self, name: str, obj: T | None = None) -> Any:
        """`@REG.register("name")` on a class or function, or `REG.register("name", obj)`."""

        def add(o: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not o and _qualname(existing) != _qualname(o):
                raise MMBenchError(f"{self.kind} {name!r} is already registered by {_qualname(existing)}")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for package in self._packages:
                _import_all(package)
            if self._group:
                for ep in entry_points(group=self._group):
                    loaded = ep.load()
                    if ep.name not in self._items:
                        self._items[ep.name] = loaded
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: str) -> T:
        if name not in self._items and not self._loaded:
            # fast path: import just the built-in module whose source registers `name`
            module = self._index().get(name)
            if module is not None:
                importlib.import_module(module)
        if name not in self._items:
            self._load()
        try:
            return self._items[name]
        except KeyError:
            raise MMBenchError(unknown_name(self.kind, name, self.names())) from None

    def _index(self) -> dict[str, str]:
        """{registered name: module} for built-ins, read from the sources without importing them."""
        if not hasattr(self, "_index_cache"):
            var = {"dataset": "DATASETS", "encoder": "ENCODERS", "fusion": "FUSIONS"}.get(self.kind, "")
            pattern = re.compile(r"@" + var + r'\.register\(\s*["\']([^"\']+)["\']') if var else None
            index: dict[str, str] = {}
            for package in self._packages if pattern else ():
                for module in _module_names(package):
                    spec = importlib.util.find_spec(module)
                    if spec and spec.origin and spec.origin.endswith(".py"):
                        with open(spec.origin, encoding="utf-8") as f:
                            for found in pattern.findall(f.read()):
                                index.setdefault(found, module)
            self._index_cache = index
        return self._index_cache

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        if name in self._items or name in self._index():
            return True
        self._load()
        return name in self._items


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _module_names(package: str) -> list[str]:
    module = importlib.import_module(package)
    if not hasattr(module, "__path__"):
        return [package]
    return [info.name for info in pkgutil.walk_packages(module.__path__, prefix=package + ".")
            if not info.name.rsplit(".", 1)[-1].startswith("_")]


def _import_all(package: str) -> None:
    for name in _module_names(package):
        importlib.import_module(name)


def lazy(fn: Callable[[], T]) -> Callable[[], T]:
    """Cache a zero-argument factory (used for heavy imports on first use)."""
    cache: list[T] = []

    def wrapper() -> T:
        if not cache:
            cache.append(fn())
        return cache[0]

    return wrapper


DATASETS: Registry = Registry("dataset", ("mmbench.data.datasets",), "mmbench.datasets")
ENCODERS: Registry = Registry("encoder", ("mmbench.models.encoders",), "mmbench.encoders")
FUSIONS: Registry = Registry("fusion", ("mmbench.models.fusions",), "mmbench.fusions")
