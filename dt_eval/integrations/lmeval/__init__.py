"""lm-evaluation-harness interop (optional extra: ``pip install dt-eval[lm-eval]``).

Two directions:
- ``dt-eval run --tasks mmar,lm-eval:gsm8k`` runs lm-eval's own text tasks against the same
  model (text-reasoning retention after audio RL), through :mod:`.textrun`.
- ``lm_eval --include_path $(dt-eval tasks --lm-eval-path) --model dt-audio --tasks dt_mmau``
  runs our audio tasks inside lm-eval: task configs in ``tasks/``, the model class in
  :mod:`.model`.

lm-eval has no plugin entry point for models, so the ``dt-audio`` name is registered by
:func:`register` (called on import of :mod:`.model`, by ``dt-eval run``, and, for the ``lm_eval``
command, by the one-line ``dt_eval_lm_eval.pth`` hook that the wheel installs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PREFIX = "lm-eval:"
MODEL_NAME = "dt-audio"
TASK_PREFIX = "dt_"  # our tasks inside lm-eval: dt_mmau, dt_mmar, dt_mmsu


def is_lm_eval_task(name: str) -> bool:
    return name.startswith(PREFIX)


def lm_eval_name(name: str) -> str:
    """``lm-eval:gsm8k`` -> ``gsm8k``."""
    return name[len(PREFIX):] if is_lm_eval_task(name) else name


@lru_cache(maxsize=None)
def task_config(name: str):
    """dt-eval's TaskConfig, parsed once per process: lm-eval calls our task functions per doc."""
    from dt_eval.tasks.config import load_task

    return load_task(name)


def tasks_path() -> Path:
    """The folder to pass to ``lm_eval --include_path``."""
    return Path(__file__).resolve().parent / "tasks"


def register() -> None:
    """Register the ``dt-audio`` model with lm-eval (idempotent; imports only lm-eval's registry)."""
    import lm_eval.models  # noqa: F401  lm-eval fills its registry only when it finds it empty
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target="dt_eval.integrations.lmeval.model:DtAudioLM")
