"""The backend registry: `--backend NAME` -> a factory that builds the backend from one settings
object.

Built-ins (hf, openai, vllm) are import paths, loaded only when chosen (choosing `openai` never
imports torch). A third-party package adds a backend without editing dt-eval through an entry
point in the group `dt_eval.backends`, e.g. in its pyproject.toml:

    [project.entry-points."dt_eval.backends"]
    mybackend = "my_package.backend:create"      # create(settings: BackendSettings) -> Backend

or, in-process, with `register_backend("mybackend", create)`. The factory gets a
`BackendSettings` and returns an object with the `Backend` protocol (dt_eval/backends/base.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dt_eval.backends.base import Backend
from dt_eval.errors import UsageError
from dt_eval.util.registry import Registry, UnknownNameError

ENTRY_POINT_GROUP = "dt_eval.backends"


@dataclass
class BackendSettings:
    """Everything `dt-eval run` knows that a backend may need; each factory reads its part."""

    model: str  # hub id or local path (openai: the served model name)
    base_urls: list[str] = field(default_factory=list)  # OpenAI-compatible endpoints
    concurrency: int = 32  # requests in flight (remote backends)
    batch_size: int | None = None  # batch size (local backends); None: the backend's default
    timeout_s: float = 600.0
    max_retries: int = 4
    device: str | None = None
    dtype: str | None = None
    preset: str | None = None  # the model family preset's name (tasks/presets), if any
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific extras (library callers)

    def family_preset(self):
        """The family preset object (serve/presets/<family>.yaml), or None."""
        if not self.preset:
            return None
        from dt_eval.tasks.presets import load_preset

        return load_preset(self.preset)


BackendFactory = Callable[[BackendSettings], Backend]

_REGISTRY: Registry[BackendFactory] = Registry("backend", ENTRY_POINT_GROUP, {
    "hf": "dt_eval.backends.hf:from_settings",
    "openai": "dt_eval.backends.openai_compat:from_settings",
    "vllm": "dt_eval.backends.vllm_engine:from_settings",
})
BUILTIN_BACKENDS = ("hf", "openai", "vllm")


class UnknownBackendError(UnknownNameError, UsageError):
    """An unknown `--backend` / `backend=` name: a bad argument (UsageError) like any other."""


def register_backend(name: str, factory: BackendFactory, *, replace: bool = False) -> BackendFactory:
    """Make `--backend name` build its backend with `factory(settings)`."""
    return _REGISTRY.register(name, factory, replace=replace)


def unregister_backend(name: str) -> None:
    _REGISTRY.unregister(name)


def backend_factory(name: str) -> BackendFactory:
    """The factory of a backend name; UnknownBackendError lists the known names (plugins included)."""
    try:
        return _REGISTRY.get(name)
    except UnknownNameError as e:
        raise UnknownBackendError(e.kind, e.name, e.known) from None


def backend_names(plugins: bool = True) -> list[str]:
    """Known backend names; plugins=False skips the (slow) scan of installed entry points."""
    return _REGISTRY.names() if plugins else _REGISTRY.builtin_names()


def create_backend(name: str, settings: BackendSettings) -> Backend:
    return backend_factory(name)(settings)
