"""Name -> implementation tables behind dt-eval's extension points (backends, official scorers,
reasoning scorers).

Three sources, in this order of precedence:
1. objects registered at run time (`register`), e.g. by a test or a script;
2. built-ins, given as objects or as "module:attribute" import paths loaded on first use (so
   choosing the `openai` backend never imports torch);
3. entry points of installed packages in the registry's group (a third-party package adds an
   implementation without editing dt-eval). Scanning them is slow, so it happens only when a
   name is not found above, or when listing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from dt_eval.errors import DtEvalError

T = TypeVar("T")


class UnknownNameError(DtEvalError, LookupError):
    """A name no registry source knows; the message lists the known ones."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:
        return str(self.args[0])


def load_import_path(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtins: dict[str, T | str] | None = None):
        self.kind = kind  # "backend", "scorer" ...: used in error messages
        self.group = group  # the entry-point group third-party packages register under
        self._builtins: dict[str, T | str] = dict(builtins or {})
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}
        self._entry_points: dict[str, Any] | None = None  # name -> importlib.metadata.EntryPoint

    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Add `obj` under `name`. A name that is taken (built-in or registered) needs
        replace=True, so that a plugin cannot silently change what a built-in name means."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if not replace and (name in self._registered or name in self._builtins):
            raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to replace it)")
        self._registered[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove a run-time registration (built-ins and entry points stay)."""
        self._registered.pop(name, None)

    def builtin_names(self) -> list[str]:
        """Built-in and run-time names, without scanning entry points (cheap: for help texts)."""
        return list(dict.fromkeys([*self._builtins, *self._registered]))

    def names(self) -> list[str]:
        """Every known name: built-ins, run-time registrations, then installed plugins."""
        return list(dict.fromkeys([*self.builtin_names(), *self._scan()]))

    def get(self, name: str) -> T:
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        if name in self._builtins:
            ref = self._builtins[name]
            obj = load_import_path(ref) if isinstance(ref, str) else ref
        else:
            ep = self._scan().get(name)
            if ep is None:
                raise UnknownNameError(self.kind, name, self.names())
            try:
                obj = ep.load()
            except Exception as e:  # a broken plugin names itself instead of a bare traceback
                raise ImportError(f"{self.kind} {name!r} (entry point {ep.value} of group {self.group}) "
                                  f"failed to load: {type(e).__name__}: {e}") from e
        self._loaded[name] = obj
        return obj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._registered or name in self._builtins or name in self._scan())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _scan(self) -> dict[str, Any]:
        if self._entry_points is None:
            from importlib.metadata import entry_points

            self._entry_points = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._entry_points

    def rescan(self) -> None:
        """Forget the entry-point scan (after installing a plugin into a running process)."""
        self._entry_points = None
        self._loaded = {k: v for k, v in self._loaded.items() if k in self._builtins}
