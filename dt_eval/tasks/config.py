"""Declarative task configs (one YAML file per benchmark in `tasks/`) and their registry."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from dt_eval.errors import DtEvalError
from dt_eval.util.resources import resource_paths


class Breakdown(BaseModel):
    """One official breakdown table: accuracy grouped by a metadata field."""

    model_config = ConfigDict(extra="forbid")
    field: str
    title: str
    # Fixed keys, printed in this order even when empty (as the official scripts do).
    # Values outside this list are a data error. None = open set, first-seen order.
    keys: list[str] | None = None


class LocalSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: str  # file name inside the data directory, as the benchmark ships it
    format: Literal["json", "jsonl", "auto", "parquet"] = "auto"
    audio_field: str  # record field holding the audio path, relative to the data directory


class HubSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    split: str
    config: str | None = None
    audio_column: str = "audio"


class DataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    local: LocalSource | None = None
    hub: HubSource | None = None
    default_dir_env: str | None = None  # env var users may set instead of --data-dir
    expected_items: int | None = None
    # sha256 of metadata files we know, with a human label; runs on other files get a warning.
    known_sha256: dict[str, str] = Field(default_factory=dict)


class Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = "id"
    question: str = "question"
    choices: str | None = "choices"  # a list-valued field ...
    choice_columns: list[str] | None = None  # ... or one column per option (MMSU)
    answer: str | None = "answer"
    reference_thinking: str | None = None


class PromptSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Python str.format template; fields: question, options (rendered), and any raw record key.
    template: str = "{question}\n\nOptions:\n{options}\n\n{instruction}"
    option_format: str = "({label}) {text}"
    labels: str = "ABCDEFGHIJ"
    instruction: str = "Answer with the option's letter and text."
    system: str | None = None


class TaskConfig(BaseModel):
    """Everything dt-eval needs to know about a benchmark. Loaded from `tasks/<name>.yaml`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    version: str
    citation: str | None = None
    homepage: str | None = None
    license: str | None = None
    # How predictions are scored: the official MMAU/MMAR token match, or MMSU's letter rule.
    scorer: Literal["mcq_official", "mmsu_official"]
    prediction_key: str  # key the official script reads the prediction from
    # How the official script loads a prediction file (dt-eval score reads it the same way, and
    # dt-eval export writes what it can load): "json" one JSON document whatever the name (MMAU's
    # json.load), "jsonl" one record per line (MMSU), "json_or_jsonl" picked by the file name:
    # .json a JSON document, .jsonl JSON lines (MMAR).
    submission_reader: Literal["json", "jsonl", "json_or_jsonl"] = "json_or_jsonl"
    answers_available: bool = True  # False: answers hidden (export only)
    metric: str = "accuracy"
    data: DataSource
    fields: Fields = Field(default_factory=Fields)
    breakdowns: list[Breakdown] = Field(default_factory=list)
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    # Extra keys an export submission carries (MMAR-Rubrics adds thinking_prediction).
    export_formats: list[str] = Field(default_factory=lambda: ["official"])
    # Reference reasoning chains for the hybrid reward (`dt-eval refs build`): a dt-eval-refs
    # JSONL file; a relative path resolves against the task's data directory.
    references: str | None = None

    @property
    def group_fields(self) -> list[str]:
        return [b.field for b in self.breakdowns]


class UnknownTaskError(DtEvalError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def task_dirs() -> list[Path]:
    """Where task configs live: the repo's `tasks/` (editable install) or the wheel's bundled copy."""
    return [d for d in resource_paths("tasks") if d.is_dir()]


@lru_cache(maxsize=None)
def _registry() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in task_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def task_names() -> list[str]:
    return sorted(_registry())


def load_task(name_or_path: str) -> TaskConfig:
    """Load a task by registered name (`mmau`) or by path to a YAML file."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) and path.is_file():
        return _parse(path)
    reg = _registry()
    if name_or_path not in reg:
        raise UnknownTaskError(
            f"unknown task {name_or_path!r}; known tasks: {', '.join(sorted(reg)) or '(none found)'}"
        )
    return _parse(reg[name_or_path])


@lru_cache(maxsize=None)
def _parse(path: Path) -> TaskConfig:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    cfg = TaskConfig.model_validate(raw)
    if cfg.name != path.stem:
        raise ValueError(f"{path}: task name {cfg.name!r} must match the file name {path.stem!r}")
    return cfg
