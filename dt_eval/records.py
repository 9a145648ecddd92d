"""The persisted, versioned records of a run directory (pydantic models).

* `SampleRecord`: one line of samples.jsonl, one kind for audio tasks and lm-eval tasks
  (`kind="lm-eval"` and its optional fields). `schema_version` is written by every writer since
  it was introduced (2); a line without it is version 1, written by dt-eval 0.1.0.
* `RunConfig`: config.json (what was run, with which settings; never secrets).
* `TaskResults` (+ `RepeatResults`) and `RunResults`: results.json, recomputed from the samples.

Every model keeps fields it does not know (`extra="allow"`), so a record written by a newer
dt-eval, or annotated by a user's tool, survives a read and rewrite. Serialising writes exactly
the fields that were set (`exclude_unset`): a record read from an old file is written back as it
was, without fields that file never had.

Records are turned into JSON with `to_json_dict()` (Python objects) and the run directory's
surrogate-safe encoder (storage/rundir.py `json_text`), never with pydantic's JSON writer, which
refuses the lone surrogates a model output or a broken metadata string can hold. The dump is in
"python" mode so that a metadata value JSON cannot hold (a parquet timestamp) still fails the
encode and becomes that sample's error, as it always has, instead of being silently restringed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from dt_eval.types import Extraction

SCHEMA_VERSION = 2  # of SampleRecord; 1 = the records of dt-eval 0.1.0 (no schema_version field)
LM_EVAL = "lm-eval"
_IDENTITY = ("key", "task", "id", "index", "repeat")  # written on every samples.jsonl line


def _json_object(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    raise ValueError(f"expected a JSON object or null, not {type(value).__name__}")


# A free-form JSON object (a benchmark's metadata record, per-token log-probabilities): checked to
# be an object and kept as it is, not copied key by key (that would slow every read of a large run).
JsonObject = Annotated[dict[str, Any] | None, PlainValidator(_json_object)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json_dict(self) -> dict[str, Any]:
        """The fields that were set (read from a file, or given when built), as plain Python."""
        return self.model_dump(mode="python", exclude_unset=True)


class ExtractedAnswer(_Record):
    """The answer read from a model output (dt_eval.pipeline.extract)."""

    reasoning: str | None = None
    answer_text: str | None = None  # the cleaned final answer (None: nothing could be read)
    matched_choice: int | None = None  # index into the options when the answer maps to one
    truncated: bool = False  # reasoning opened but never closed: the output was cut off
    unparsed: bool = False  # no answer could be read: scored wrong
    ambiguous: bool = False  # a bare letter that is also another option's text: scored wrong

    @classmethod
    def from_extraction(cls, ext: Extraction) -> ExtractedAnswer:
        return cls(**ext.to_dict())

    def to_extraction(self) -> Extraction:
        return Extraction(reasoning=self.reasoning, answer_text=self.answer_text, matched_choice=self.matched_choice,
                          truncated=self.truncated, unparsed=self.unparsed, ambiguous=self.ambiguous)


class SampleRecord(_Record):
    """One sample (task, item, repeat) of a run: what was asked, what came back, how it scored."""

    schema_version: int = 1  # absent in the files of dt-eval 0.1.0
    key: str  # task/item/repeat: the resume key (the last record of a key wins)
    task: str
    kind: str = "audio"  # "audio" (dt-eval's tasks) or "lm-eval" (lm-eval:NAME tasks)
    id: str
    index: int = 0  # position in the benchmark file (lm-eval: the doc id)
    repeat: int = 0
    subtask: str | None = None  # lm-eval: the (sub)task the doc belongs to
    meta: JsonObject = None  # the benchmark's own record, untouched
    audio: str | None = None  # a path or a placeholder, never audio bytes
    prompt: JsonObject = None  # role -> text of what was asked (audio as <audio>)
    task_gen_kwargs: Any = None  # lm-eval: the task's generation settings
    request_sha: str | None = None  # lm-eval: what was asked; a changed task never reuses an answer
    output: str | None = None  # the model's answer content
    reasoning: str | None = None  # reasoning the server returned separately
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None  # why the sample failed (it then counts as a wrong answer)
    data_error: bool = False  # metadata the official scorer cannot score: out of the accuracy
    warnings: list[str] = Field(default_factory=list)
    backend_info: JsonObject = Field(default_factory=dict)  # e.g. which server answered, attempts
    time: float | None = None
    prediction: str | None = None  # the post-reasoning output: what the official raw number scores
    reasoning_text: str | None = None  # the reasoning, split from the output
    returned: str | None = None  # lm-eval: what its filters saw (the answer without reasoning)
    extracted: ExtractedAnswer | None = None
    correct: bool | None = None  # the official scorer on the extracted answer (None: answers hidden)
    correct_raw: bool | None = None  # ... on the raw post-reasoning output
    metrics: JsonObject = None  # lm-eval: its per-sample metrics
    target: Any = None  # lm-eval: the doc's target
    logprobs: JsonObject = None  # per-token log-probabilities and entropies (runs with logprobs=K;
    #                              the compact format of dt_eval/pipeline/logprobs.py)

    @field_validator("id", "key", "task", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # a numeric item id

    def to_json_dict(self) -> dict[str, Any]:
        out = super().to_json_dict()
        if not all(k in out for k in _IDENTITY):  # what identifies a sample is on every line, given or not
            out |= {k: getattr(self, k) for k in _IDENTITY}
            out = {k: out[k] for k in [*type(self).model_fields, *(self.__pydantic_extra__ or {})] if k in out}
        return out

    @property
    def is_lm_eval(self) -> bool:
        return self.kind == LM_EVAL

    @property
    def failed(self) -> bool:
        """The sample has an error record (a failed generation or an item that could not be asked)."""
        return bool(self.error)

    def get(self, name: str, default: Any = None) -> Any:
        """A field the record carries (or an unknown one the file had) by name, `default` when it
        carries none: reads a record the way the dict records of 0.1.0 were read."""
        if name in type(self).model_fields:
            return getattr(self, name) if name in self.model_fields_set else default
        return (self.__pydantic_extra__ or {}).get(name, default)

    def __contains__(self, name: object) -> bool:
        """Whether the record carries `name` (set when built, or present in the file)."""
        return name in self.model_fields_set or name in (self.__pydantic_extra__ or {})


def as_sample(rec: SampleRecord | Mapping[str, Any]) -> SampleRecord:
    return rec if isinstance(rec, SampleRecord) else SampleRecord.model_validate(dict(rec))


def as_samples(records: Iterable[SampleRecord | Mapping[str, Any]]) -> list[SampleRecord]:
    return [as_sample(r) for r in records]


# ------------------------------------------------------------------------------- config.json


class TaskInfo(_Record):
    """What config.json records about one task of the run (its data file, its size, ...)."""

    kind: str = "audio"
    task: str | None = None
    task_version: str | None = None
    source: str | None = None  # the metadata file (or hub:dataset)
    sha256: str | None = None  # of the metadata file: numbers on other files are not comparable
    version_label: str | None = None
    items: int | None = None
    warnings: list[str] = Field(default_factory=list)
    limit: int | None = None
    repeats: int = 1
    task_config: JsonObject = None  # the task's config as the run used it (absent in older runs)


class RunConfig(_Record):
    """config.json: how the run was made. `identity` holds what a resumed run must match."""

    dt_eval_version: str | None = None
    git_hash: str | None = None
    created: str | None = None
    updated: str | None = None
    identity: dict[str, Any] = Field(default_factory=dict)  # model, sampling, prompt, seed, audio
    backend: dict[str, Any] = Field(default_factory=dict)  # the backend's describe(): never secrets
    preset: str | None = None
    concurrency: int | None = None
    tasks: dict[str, TaskInfo] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)  # redacted argv
    python: str | None = None

    @property
    def model(self) -> str | None:
        return self.identity.get("model")

    @property
    def backend_name(self) -> str | None:
        """The backend's name: "name" (every backend since the backend registry), or "backend"
        (the OpenAI-compatible backend of older runs)."""
        for key in ("name", "backend"):
            value = self.backend.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None


def as_config(config: RunConfig | Mapping[str, Any] | None) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    return RunConfig.model_validate(dict(config or {}))


# ------------------------------------------------------------------------------- results.json


class RepeatResults(_Record):
    """One repeat of one task: the official numbers, the breakdowns and dt-eval's counts."""

    repeat: int
    accuracy: float | None = None  # percent, official match on the extracted answers
    correct: int | None = None
    total: int | None = None
    accuracy_official_raw: float | None = None  # percent, official match on the raw output
    correct_official_raw: int | None = None
    breakdowns: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    official_lines: list[str] = Field(default_factory=list)  # what the official script prints
    invalid_records: list[str] = Field(default_factory=list)
    errors: int = 0  # failed samples, counted as wrong
    data_errors: int = 0  # items the official scorer cannot score: not in the accuracy
    data_error_items: list[str] = Field(default_factory=list)
    unparsed: int = 0
    ambiguous: int = 0
    truncated: int = 0
    cut_by_length: int = 0
    warnings: int = 0
    mean_reasoning_chars: float = 0.0
    mean_completion_tokens: float | None = None


class AccuracyInterval(_Record):
    """An accuracy's 95% confidence interval, in percent (dt_eval/scoring/stats.py says why these
    methods): `method` "wilson" (one sample per item) or "wilson-effective-n" (repeats averaged per
    item); `stderr` is lm-eval's standard error of the mean over the items (percent)."""

    low: float
    high: float
    method: str
    level: float = 0.95
    stderr: float | None = None
    n: int = 0  # items in the interval (scored, data errors left out)
    n_eff: float | None = None  # effective sample size (repeats only)
    repeat_std: float | None = None  # std of the per-repeat accuracies (repeats only), percent

    @classmethod
    def from_stats(cls, ci: Any) -> AccuracyInterval:
        """From a scoring.stats.AccuracyCI (fractions) to percent."""
        d = ci.to_dict(scale=100)
        return cls(low=d["ci_low"], high=d["ci_high"], method=d["method"], level=d["level"], stderr=d["stderr"],
                   n=d["n"], n_eff=d["n_eff"], repeat_std=d["repeat_std"])

    def text(self, digits: int = 2) -> str:
        """'[30.57, 86.32]'"""
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


class TaskResults(_Record):
    """One task of a run. `accuracy` is the mean over repeats, in percent (None: answers hidden)."""

    task: str
    kind: str = "audio"
    task_version: str | None = None
    scorer: str | None = None
    answers_available: bool = False
    samples: int = 0
    items: int = 0
    expected_items: int | None = None
    benchmark_items: int | None = None  # items of the whole benchmark (the task config's), when known
    limit: int | None = None  # the run's --limit
    repeats: list[RepeatResults] = Field(default_factory=list)
    accuracy_mean: float | None = None
    accuracy_std: float | None = None
    accuracy_official_raw_mean: float | None = None
    accuracy_official_raw_std: float | None = None
    k: int | None = None  # repeats, when there are several
    pass_at_k: float | None = None  # written as pass_at_{k} in results.json
    majority_vote_accuracy: float | None = None
    complete: bool = True
    data_sha256: str | None = None
    data_version_label: str | None = None
    cot: dict[str, Any] | None = None  # reasoning scores (dt-eval rescore)
    # the accuracy's 95% CI and standard error, and per breakdown category (field -> key -> CI)
    accuracy_ci: AccuracyInterval | None = None
    categories_ci: dict[str, dict[str, AccuracyInterval]] | None = None
    # per-item official verdicts {item id: {repeat: correct}}, what paired comparisons use; held in
    # memory only (recomputed from samples.jsonl), never written to results.json
    item_outcomes: dict[str, dict[int, bool]] | None = Field(default=None, exclude=True)
    # lm-eval tasks: lm-eval's own numbers
    lm_eval_task: str | None = None
    metrics: dict[str, Any] | None = None
    primary_metric: str | None = None
    n_shot: Any = None

    @model_validator(mode="before")
    @classmethod
    def _pass_at(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            keys = [k for k in data if isinstance(k, str) and k.startswith("pass_at_") and k[8:].isdigit()]
            if keys:
                data = dict(data)
                for k in keys:
                    data["pass_at_k"] = data.pop(k)
                    data.setdefault("k", int(k[8:]))
        return data

    def to_json_dict(self) -> dict[str, Any]:
        out = super().to_json_dict()
        if "pass_at_k" in out:  # results.json names it by k: pass_at_4
            value = out.pop("pass_at_k")
            out[f"pass_at_{self.k or len(self.repeats)}"] = value
        return out

    # -- what a user reads
    @property
    def accuracy(self) -> float | None:
        """Official accuracy on the extracted answers, percent, mean over repeats."""
        return self.accuracy_mean

    @property
    def subset(self) -> str | None:
        """'subset: 8 of 1000 items (--limit 8)' when the accuracy is not on the whole benchmark."""
        items = self.expected_items if self.expected_items is not None else self.items
        bench = self.benchmark_items
        if not self.limit and not (bench and items is not None and items < bench):
            return None
        what = f"subset: {items} of {bench} items" if bench else f"subset: {items} items"
        return what + (f" (--limit {self.limit})" if self.limit else "")

    @property
    def stderr(self) -> float | None:
        """Standard error of the accuracy (percent; lm-eval's definition), None when not computed."""
        return self.accuracy_ci.stderr if self.accuracy_ci else None

    @property
    def official_raw(self) -> float | None:
        """The official script's number on the raw post-reasoning output (no extraction), percent."""
        return self.accuracy_official_raw_mean

    @property
    def breakdowns(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The official breakdown tables of the first repeat (`repeats[r].breakdowns` for others)."""
        return self.repeats[0].breakdowns if self.repeats else {}

    def _total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.repeats)

    @property
    def errors(self) -> int:
        """Failed samples over all repeats (each counts as a wrong answer)."""
        return self._total("errors")

    @property
    def data_errors(self) -> int:
        return self._total("data_errors")

    @property
    def unparsed(self) -> int:
        return self._total("unparsed")

    @property
    def ambiguous(self) -> int:
        return self._total("ambiguous")

    @property
    def truncated(self) -> int:
        return self._total("truncated")

    @property
    def cut_by_length(self) -> int:
        return self._total("cut_by_length")


class RunResults(_Record):
    """A run's results (results.json), plus, when loaded, its config and its sample records.

    `tasks["mmau"].accuracy` is the headline number; `samples` are the latest record per key."""

    dt_eval_version: str | None = None
    model: str | None = None
    tasks: dict[str, TaskResults] = Field(default_factory=dict)
    run_dir: str | None = None
    config: RunConfig | None = Field(default=None, exclude=True)
    samples: list[SampleRecord] = Field(default_factory=list, exclude=True)

    def to_json_dict(self) -> dict[str, Any]:
        """results.json: the keys it has always had (and new ones)."""
        out = super().to_json_dict()
        out["tasks"] = {name: t.to_json_dict() for name, t in self.tasks.items()}
        return out

    @property
    def accuracy(self) -> dict[str, float | None]:
        """Task -> accuracy (percent)."""
        return {name: t.accuracy for name, t in self.tasks.items()}

    @property
    def errors(self) -> int:
        """Failed samples over all tasks: a run with any is not a clean measurement."""
        return sum(t.errors for t in self.tasks.values())

    def samples_of(self, task: str, repeat: int | None = None) -> list[SampleRecord]:
        return [s for s in self.samples if s.task == task and (repeat is None or s.repeat == repeat)]
