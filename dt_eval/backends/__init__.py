"""Inference backends behind one small async protocol (see `base.py`), chosen by name from a
registry (`registry.py`: built-ins hf, openai, vllm; plugins through the `dt_eval.backends`
entry-point group or `register_backend`).

Imports are lazy: choosing the `openai` backend never imports torch.
"""

from __future__ import annotations

from typing import Any

from dt_eval.backends.registry import (
    BUILTIN_BACKENDS,
    BackendSettings,
    UnknownBackendError,
    backend_factory,
    backend_names,
    create_backend,
    register_backend,
    unregister_backend,
)

__all__ = ["BUILTIN_BACKENDS", "BackendSettings", "UnknownBackendError", "backend_factory", "backend_names",
           "create_backend", "make_backend", "register_backend", "unregister_backend"]


def make_backend(name: str, model: str, **kw: Any):
    """`create_backend` with the settings as keyword arguments (see BackendSettings)."""
    return create_backend(name, BackendSettings(model=model, **kw))
