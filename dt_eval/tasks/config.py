"""Declarative task configs (one YAML file per benchmark) and where they are found.

Search path, first match wins: folders given with `--tasks-dir` (`add_task_dirs`), then the
folders in $DT_EVAL_TASKS_PATH (os.pathsep-separated), then dt-eval's own `tasks/`. A path to a
YAML file works as a task name too. Adding a benchmark whose scoring rule exists is one YAML
file: its `family`, `title` and breakdown fields drive the report, export and leaderboard.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import msgspec

from dt_eval.errors import DtEvalError
from dt_eval.util.resources import resource_paths
from dt_eval.util.schema import Schema, SchemaError


class Breakdown(Schema, kw_only=True):
    """One official breakdown table: accuracy grouped by a metadata field."""

    field: str
    title: str
    # Fixed keys, printed in this order even when empty (as the official scripts do).
    # Values outside this list are a data error. None = open set, first-seen order.
    keys: list[str] | None = None
    # Heading of this breakdown's per-category table on the leaderboard (None: not shown there).
    leaderboard: str | None = None


class Family(Schema, kw_only=True):
    """The benchmark a task belongs to: its tasks share one leaderboard column (e.g. two releases
    of one metadata file, told apart there by their sha256)."""

    name: str  # the column key; published.yaml scores name it
    title: str | None = None  # column heading (default: the name)
    rank: int | None = None  # column order, lower first; unranked families follow, first seen first


class LocalSource(Schema, kw_only=True):
    metadata: str  # file name inside the data directory, as the benchmark ships it
    format: Literal["json", "jsonl", "auto", "parquet"] = "auto"
    audio_field: str  # record field holding the audio path, relative to the data directory


class HubSource(Schema, kw_only=True):
    dataset: str
    split: str
    config: str | None = None
    audio_column: str = "audio"


class DataSource(Schema, kw_only=True):
    local: LocalSource | None = None
    hub: HubSource | None = None
    default_dir_env: str | None = None  # env var users may set instead of --data-dir
    expected_items: int | None = None
    # sha256 of metadata files we know, with a human label; runs on other files get a warning.
    known_sha256: dict[str, str] = msgspec.field(default_factory=dict)


class Fields(Schema, kw_only=True):
    id: str = "id"
    question: str = "question"
    choices: str | None = "choices"  # a list-valued field ...
    choice_columns: list[str] | None = None  # ... or one column per option (MMSU)
    answer: str | None = "answer"
    reference_thinking: str | None = None


class PromptSpec(Schema, kw_only=True):
    # Python str.format template; fields: question, options (rendered), and any raw record key.
    template: str = "{question}\n\nOptions:\n{options}\n\n{instruction}"
    option_format: str = "({label}) {text}"
    labels: str = "ABCDEFGHIJ"
    instruction: str = "Answer with the option's letter and text."
    system: str | None = None


class TaskConfig(Schema, kw_only=True):
    """Everything dt-eval needs to know about a benchmark. Loaded from `tasks/<name>.yaml`."""

    name: str
    description: str
    version: str
    citation: str | None = None
    homepage: str | None = None
    license: str | None = None
    title: str | None = None  # display name (report, leaderboard); default: the name
    family: Family | None = None  # default: a family of its own, named and titled like the task
    # How predictions are scored: a registered official scorer (dt_eval/scoring/scorers.py), e.g.
    # mcq_official (the MMAU/MMAR token match) or mmsu_official (MMSU's letter rule).
    scorer: str
    prediction_key: str  # key the official script reads the prediction from
    # How the official script loads a prediction file (dt-eval score reads it the same way, and
    # dt-eval export writes what it can load): "json" one JSON document whatever the name (MMAU's
    # json.load), "jsonl" one record per line (MMSU), "json_or_jsonl" picked by the file name:
    # .json a JSON document, .jsonl JSON lines (MMAR). Default: the scorer's.
    submission_reader: Literal["json", "jsonl", "json_or_jsonl"] | None = None
    answers_available: bool = True  # False: answers hidden (export only)
    metric: str = "accuracy"
    data: DataSource
    fields: Fields = msgspec.field(default_factory=Fields)
    breakdowns: list[Breakdown] = msgspec.field(default_factory=list)
    prompt: PromptSpec = msgspec.field(default_factory=PromptSpec)
    # Extra keys an export submission carries (MMAR-Rubrics adds thinking_prediction).
    export_formats: list[str] = msgspec.field(default_factory=lambda: ["official"])
    # Reference reasoning chains for the hybrid reward (`dt-eval refs build`): a dt-eval-refs
    # JSONL file; a relative path resolves against the task's data directory.
    references: str | None = None

    def __post_init__(self) -> None:
        from dt_eval.scoring.registry import get_scorer

        scorer = get_scorer(self.scorer)  # UnknownScorerError (a ValueError) lists the registered ones
        if self.title is None:
            self.title = self.name
        if self.family is None:
            self.family = Family(name=self.name, title=self.title)
        elif self.family.title is None:
            self.family.title = self.family.name
        if self.submission_reader is None:
            self.submission_reader = scorer.submission_reader

    @property
    def group_fields(self) -> list[str]:
        return [b.field for b in self.breakdowns]

    @property
    def leaderboard_categories(self) -> list[tuple[str, str]]:
        """(breakdown field, heading) of the per-category tables the leaderboard shows."""
        return [(b.field, b.leaderboard) for b in self.breakdowns if b.leaderboard]


class UnknownTaskError(DtEvalError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class TaskConfigError(DtEvalError, ValueError):
    """A task YAML (or a run's recorded task config) that does not validate."""


TASKS_PATH_ENV = "DT_EVAL_TASKS_PATH"
_extra_dirs: list[Path] = []  # --tasks-dir folders, searched first


def builtin_task_dirs() -> list[Path]:
    """dt-eval's own task configs: the repo's `tasks/` (editable install) or the wheel's bundled copy."""
    return [d for d in resource_paths("tasks") if d.is_dir()]


def add_task_dirs(dirs: list[str | Path]) -> None:
    """Search these folders first (`--tasks-dir`); a folder that does not exist is an error."""
    for d in reversed([Path(x).expanduser() for x in dirs]):
        if not d.is_dir():
            raise UnknownTaskError(f"--tasks-dir {d}: no such folder")
        if d not in _extra_dirs:
            _extra_dirs.insert(0, d)


def task_dirs() -> list[Path]:
    """The task search path, first match first."""
    env = [Path(x).expanduser() for x in os.environ.get(TASKS_PATH_ENV, "").split(os.pathsep) if x.strip()]
    return list(dict.fromkeys([*_extra_dirs, *[d for d in env if d.is_dir()], *builtin_task_dirs()]))


def _registry() -> dict[str, Path]:
    return _scan_dirs(tuple(task_dirs()))


@lru_cache(maxsize=None)
def _scan_dirs(dirs: tuple[Path, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def task_names() -> list[str]:
    return sorted(_registry())


def task_path(name: str) -> Path | None:
    """The YAML file a task name resolves to on the search path (None: unknown)."""
    return _registry().get(name)


def is_builtin_task(path: Path) -> bool:
    return any(path.parent == d for d in builtin_task_dirs())


def load_task(name_or_path: str) -> TaskConfig:
    """Load a task by name (`mmau`, searched on the task path) or by path to a YAML file."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) and path.is_file():
        return _parse(path.resolve())
    reg = _registry()
    if name_or_path not in reg:
        raise UnknownTaskError(
            f"unknown task {name_or_path!r}; known tasks: {', '.join(sorted(reg)) or '(none found)'} "
            f"(more folders: --tasks-dir DIR or ${TASKS_PATH_ENV}; or give the path to a task YAML)"
        )
    return _parse(reg[name_or_path])


@lru_cache(maxsize=None)
def _parse(path: Path) -> TaskConfig:
    from dt_eval.util.yamlfile import load_yaml

    try:
        raw = load_yaml(path)
    except ValueError as e:  # not YAML
        raise TaskConfigError(f"{path}: not a valid task config: {e}") from None
    try:
        cfg = TaskConfig.model_validate(raw)
    except SchemaError as e:
        raise TaskConfigError(f"{path}: not a valid task config: {e}") from None
    if cfg.name != path.stem:
        raise TaskConfigError(f"{path}: task name {cfg.name!r} must match the file name {path.stem!r}")
    return cfg


def task_config_record(cfg: TaskConfig) -> dict[str, Any]:
    """The task config as loaded, for the run's config.json: a run of a custom task can then be
    reported, exported and put on a leaderboard in a process that does not have its YAML."""
    return cfg.model_dump(mode="json")


def run_task_config(name: str, run_config: Any) -> TaskConfig:
    """The config a run used for task `name`: the one recorded in its config.json (given as a dict
    or a dt_eval.records.RunConfig), else (runs made before configs were recorded) the task of that
    name on the search path."""
    if run_config is None or isinstance(run_config, dict):
        info = ((run_config or {}).get("tasks") or {}).get(name) or {}
        recorded = info.get("task_config") if isinstance(info, dict) else None
    else:
        info = run_config.tasks.get(name)
        recorded = info.task_config if info is not None else None
    if isinstance(recorded, dict):
        return _from_record(json.dumps(recorded, sort_keys=True))
    return load_task(name)


@lru_cache(maxsize=64)
def _from_record(text: str) -> TaskConfig:
    try:
        return TaskConfig.model_validate(json.loads(text))
    except SchemaError as e:
        raise TaskConfigError(f"the run's recorded task config does not validate: {e}") from None
