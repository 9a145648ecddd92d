"""Checkpoint analyses of what training changed (`dt-eval analyze`; the definitions are in the
project README, "Analyses of training checkpoints").

    dt_eval.analyze.gating(base, [tuned, ...], tasks=["mmar"], output="out/gating", responses="runs/x")
    dt_eval.analyze.tokens(["runs/step0", "runs/step100", ...], output="out/tokens")

Importing this package imports neither torch nor transformers; the functions do, when needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dt_eval.analyze.runs import AnalyzeError

__all__ = ["AnalyzeError", "gating", "tokens"]


def gating(base: str, tuned: list[str] | str, tasks: list[str] | str | None = None, *, output: str | Path,
           **kwargs: Any) -> dict[str, Any]:
    """MoE routing of `tuned` checkpoints vs `base`, per layer and token segment; see
    dt_eval.analyze.moe_gating.gating for the options. Returns the gating.json data."""
    from dt_eval.analyze.moe_gating import gating as _gating

    tuned_list = [tuned] if isinstance(tuned, str) else list(tuned)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else tasks
    return _gating(base, tuned_list, task_list, output=output, **kwargs)


def tokens(runs: list[str | Path], steps: list[int] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Reasoning length, entropy, distribution drift and crystallized n-grams across checkpoints;
    see dt_eval.analyze.reasoning_tokens.tokens for the options. Returns the tokens.json data."""
    from dt_eval.analyze.reasoning_tokens import tokens as _tokens

    return _tokens(runs, steps, **kwargs)
