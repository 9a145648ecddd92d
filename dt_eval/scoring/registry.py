"""The official-scorer registry: task YAML `scorer:` name -> implementation.

Built-ins are import paths resolved on first use, so naming a scorer (a task config validating
its `scorer:`) imports no scoring code; plugins register at run time (`register_scorer`) or
through the entry-point group `dt_eval.scorers`. The protocol and the two built-in rules live in
dt_eval/scoring/scorers.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dt_eval.util.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from dt_eval.scoring.scorers import OfficialScorer
    from dt_eval.tasks.config import TaskConfig

ENTRY_POINT_GROUP = "dt_eval.scorers"


class UnknownScorerError(UnknownNameError, ValueError):
    """ValueError too, so that a task YAML naming an unknown scorer fails validation."""


_REGISTRY: Registry[OfficialScorer] = Registry("official scorer", ENTRY_POINT_GROUP, {
    "mcq_official": "dt_eval.scoring.scorers:MCQ_OFFICIAL",
    "mmsu_official": "dt_eval.scoring.scorers:MMSU_OFFICIAL",
})


def register_scorer(scorer: OfficialScorer, *, replace: bool = False) -> OfficialScorer:
    """Make `scorer: <scorer.name>` in a task YAML use `scorer`."""
    return _REGISTRY.register(scorer.name, scorer, replace=replace)


def unregister_scorer(name: str) -> None:
    _REGISTRY.unregister(name)


def is_scorer(name: str) -> bool:
    """Whether `name` is known, without loading any scorer code (entry points are scanned only
    for names that are not built in)."""
    return name in _REGISTRY.builtin_names() or name in _REGISTRY.names()


def get_scorer(name: str) -> OfficialScorer:
    try:
        obj = _REGISTRY.get(name)
    except UnknownNameError as e:
        raise UnknownScorerError(e.kind, e.name, e.known) from None
    return obj() if isinstance(obj, type) else obj  # an entry point may name the class


def scorer_names() -> list[str]:
    return _REGISTRY.names()


def task_scorer(cfg: TaskConfig) -> OfficialScorer:
    return get_scorer(cfg.scorer)
