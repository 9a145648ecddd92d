"""Score records in a benchmark's official submission format, exactly like the official scripts.

The same function scores `dt-eval score` files and `dt-eval run` outputs (a run builds the
submission records and scores them here), so the two can never disagree. What differs between
benchmarks lives in the task's official scorer (dt_eval/scoring/scorers.py); this module holds
the report, the file reader and the dispatch.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.scoring.tally import Tally
from dt_eval.tasks.config import TaskConfig
from dt_eval.types import Extraction

SEPARATOR = "*" * 30
OFFICIAL_HEADING = "=== official script's rule: the whole prediction string, no extraction (the official number) ==="
EXTRACTION_HEADING = (
    "=== dt-eval extraction: final answer extracted, then the official match "
    "(dt-eval's number, not the official script's) ==="
)
EXTRACTION_MARK = "[dt-eval extraction]"


class SubmissionError(DtEvalError, ValueError):
    """A prediction file or record the official script could not score meaningfully."""


@dataclass
class ItemResult:
    id: str
    correct: bool
    extraction: Extraction | None = None
    index: int | None = None  # position of its record in the scored list (None: a scorer that does not say)


@dataclass
class ScoreReport:
    task: str
    scorer: str
    prediction_key: str
    extracted: bool
    overall: Tally
    items: list[ItemResult]
    breakdowns: dict[str, dict[str, Tally]]
    missing_ids: list[str] = field(default_factory=list)  # no prediction key: excluded
    invalid: list[str] = field(default_factory=list)  # malformed records left out (invalid="exclude")
    skipped_ids: list[str] = field(default_factory=list)  # MMSU wrong format: out of denominator
    # MMSU null/non-string responses: (id, JSON type); the official script prints 'Error prediction!'
    # and leaves them out of the denominator
    non_string: list[tuple[str, str]] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)  # lines the official script prints inline
    nested: dict[str, dict[str, Tally]] | None = None  # MMSU: category -> sub-category
    official_raw: ScoreReport | None = None  # with extraction: the no-extraction official number
    breakdown_titles: dict[str, str] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    @property
    def unparsed(self) -> int:
        return sum(1 for r in self.items if r.extraction and r.extraction.unparsed)

    @property
    def truncated(self) -> int:
        return sum(1 for r in self.items if r.extraction and r.extraction.truncated)

    @property
    def ambiguous(self) -> int:
        return sum(1 for r in self.items if r.extraction and r.extraction.ambiguous)

    def official_lines(self) -> list[str]:
        """What the official script prints for these records, line for line."""
        return _scorer(self.scorer).official_lines(self)

    def stdout_lines(self) -> list[str]:
        """What `dt-eval score` prints on stdout. Without extraction: the official script's lines.
        With it: the official script's block first, then dt-eval's extraction block, each under
        a heading and every extraction line marked, so that no part of it passes for official."""
        if not self.extracted or self.official_raw is None:
            return self.official_lines()
        raw = self.official_raw
        ours = self.official_lines() + [
            f"{self.unparsed} unparsed, {self.ambiguous} ambiguous ({self.truncated} truncated): "
            "no answer read, scored wrong"
        ]
        return (
            [OFFICIAL_HEADING, *raw.official_lines(), "", EXTRACTION_HEADING]
            + [f"{EXTRACTION_MARK} {line}" for line in ours]
        )

    def dt_eval_lines(self) -> list[str]:
        """Our notes on the official rule's treatment of the file (stderr)."""
        official = self.official_raw or self  # the block that follows the official script's rule
        lines = []
        if self.missing_ids:
            what = (
                "were counted wrong, as the official script does"
                if _scorer(self.scorer).missing_counts_wrong
                else "were excluded (the official script skips them silently)"
            )
            lines.append(f"[dt-eval] {len(self.missing_ids)} record(s) lack '{self.prediction_key}' and {what}")
        if official.non_string:
            kinds = Counter(kind for _, kind in official.non_string)
            shown = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
            lines.append(
                f"[dt-eval] {len(official.non_string)} record(s) have a null or non-string '{self.prediction_key}' "
                f"({shown}; first: id {official.non_string[0][0]}): the official script prints 'Error prediction!' "
                "for each and leaves it out of the denominator, which inflates the accuracy; "
                "--strict refuses such files"
            )
        if official.skipped_ids:
            lines.append(
                f"[dt-eval] {len(official.skipped_ids)} response(s) had no readable letter and were left out of "
                "the denominator, as the official script does (this inflates the accuracy)"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "scorer": self.scorer,
            "extracted": self.extracted,
            "accuracy": self.accuracy,
            "correct": self.overall.correct,
            "total": self.overall.total,
            "missing": len(self.missing_ids),
            "missing_ids": self.missing_ids,
            "items": [{"id": r.id, "correct": r.correct} for r in self.items],
            "breakdowns": {
                name: {k: t.to_dict() for k, t in table.items()} for name, table in self.breakdowns.items()
            },
        }
        out |= _scorer(self.scorer).report_json(self)
        if self.extracted:
            out["unparsed"] = self.unparsed
            out["ambiguous"] = self.ambiguous
            out["truncated"] = self.truncated
            if self.official_raw is not None:
                raw = self.official_raw
                out["official_raw"] = {
                    "accuracy": raw.accuracy,
                    "correct": raw.overall.correct,
                    "total": raw.overall.total,
                }
                out["official_raw"] |= _scorer(raw.scorer).report_json(raw, summary=True)
        return out


def _scorer(name: str):
    from dt_eval.scoring.registry import get_scorer

    return get_scorer(name)


# ---------------------------------------------------------------- reading files


def read_prediction_file(path: str | Path, reader: str = "auto") -> list[dict[str, Any]]:
    """The records of a prediction file, read the way the task's official script reads it
    (TaskConfig.submission_reader), so that a file it cannot read is an error here too:
    "json": one JSON document, whatever the name (MMAU: json.load); "jsonl": one record per line
    (MMSU); "json_or_jsonl": picked by the name, .json a document, .jsonl lines (MMAR);
    "auto": a JSON array if the file starts with '[', else lines. Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise SubmissionError(f"{path}: not UTF-8 text ({e})") from None
    stripped = text.lstrip()
    if not stripped:
        raise SubmissionError(f"{path}: the file is empty")
    try:
        layout = ("document" if stripped[0] == "[" else "lines") if reader == "auto" else file_layout(reader, path.name)
    except SubmissionError as e:
        raise SubmissionError(f"{path}: {e}; rename the file") from None
    if layout == "document":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            hint = ""
            if e.msg == "Extra data":
                hint = (" (several JSON values: JSON lines? the official script reads this file as one JSON document"
                        + ("; name it .jsonl" if reader == "json_or_jsonl" else "; write one JSON array") + ")")
            raise SubmissionError(
                f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}{hint}") from None
    else:
        records = []
        # Lines as Python's text files give them (\n, \r\n, \r), not str.splitlines(), which also
        # splits at U+2028 and other characters JSON strings may hold unescaped.
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if lines[-1] == "":
            lines.pop()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                if reader == "json_or_jsonl":  # the MMAR script's json.loads('') fails on it
                    raise SubmissionError(f"{path}: line {n} is blank; the official script fails on blank lines")
                continue  # the MMSU script reports a blank line as undecodable and goes on
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                hint = " (a JSON array? the official script reads one JSON record per line)" if n == 1 and \
                    stripped[0] == "[" else ""
                raise SubmissionError(f"{path}: line {n} is not valid JSON ({e.msg}){hint}") from None
    if not isinstance(records, list):
        raise SubmissionError(f"{path}: expected a JSON array of records or JSONL, got {type(records).__name__}")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise SubmissionError(f"{path}: record #{i} is a {type(r).__name__}, not an object")
    return records


def file_layout(reader: str, name: str) -> str:
    """How the official reader loads a file of this name: "document" (one JSON value) or
    "lines" (one JSON record per line). SubmissionError for a name it cannot load."""
    if reader == "json":
        return "document"
    if reader == "jsonl":
        return "lines"
    if reader == "json_or_jsonl":
        if name.endswith((".json", ".jsonl")):
            return "lines" if name.endswith(".jsonl") else "document"
        raise SubmissionError(
            "the official script picks its reader from the file name: .json (one JSON array) or .jsonl (JSON lines)"
        )
    raise ValueError(f"unknown reader {reader!r}")


# ---------------------------------------------------------------- scoring


def record_id(rec: dict[str, Any], i: int) -> str:
    rid = rec.get("id")
    return str(rid) if rid is not None else f"#{i}"


def record_where(rec: dict[str, Any], i: int) -> str:
    return f"record #{i} (id {record_id(rec, i)})"


class RecordErrors:
    """Collects malformed records so one run reports them all, not just the first."""

    def __init__(self) -> None:
        self.msgs: list[str] = []

    def add(self, msg: str) -> None:
        self.msgs.append(msg)

    def raise_if_any(self, task: str) -> None:
        if self.msgs:
            shown = "\n  ".join(self.msgs[:20])
            more = f"\n  ... and {len(self.msgs) - 20} more" if len(self.msgs) > 20 else ""
            raise SubmissionError(f"{task}: {len(self.msgs)} malformed record(s):\n  {shown}{more}")


def score_records(
    cfg: TaskConfig,
    records: Sequence[dict[str, Any]],
    extract_answers: bool = False,
    invalid: str = "raise",
    strict: bool = False,
) -> ScoreReport:
    """Score submission records (metadata + prediction key) the way the official script does.

    invalid="raise": malformed records (null prediction, unknown task value, ...) raise one error
    naming them all. invalid="exclude": they are left out and listed in `report.invalid`
    (runs use this so one bad metadata record cannot sink a whole task's results).
    strict: also refuse records the official script drops but still prints a number for
    (MMSU null/non-string responses).
    """
    if not cfg.answers_available:
        raise SubmissionError(
            f"{cfg.name}: answers are hidden for this split; submit the exported file to the official server"
        )
    report = _scorer(cfg.scorer).score(cfg, records, extract_answers, invalid, strict)
    if extract_answers:
        report.official_raw = score_records(cfg, records, extract_answers=False, invalid=invalid, strict=strict)
    return report


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {list: "array", dict: "object"}.get(type(value), type(value).__name__)


def check_prediction(rec: dict[str, Any], i: int, key: str, errors: RecordErrors) -> bool:
    value = rec[key]
    if value is None:
        errors.add(f"{record_where(rec, i)}: '{key}' is null (write \"\" for an empty prediction)")
        return False
    if not isinstance(value, str):
        errors.add(f"{record_where(rec, i)}: '{key}' must be a string, got {json_type(value)}")
        return False
    return True


def task_extract(cfg: TaskConfig, text: str | None, choices: Sequence[str], reasoning: str | None = None) -> Extraction:
    """Answer extraction as the task's official scorer needs it (e.g. MMSU reads letters only)."""
    return _scorer(cfg.scorer).extract(cfg, text, choices, reasoning)


def extracted_prediction(cfg: TaskConfig, ext: Extraction) -> str:
    """What an extracted answer looks like in the official submission's prediction field."""
    return _scorer(cfg.scorer).prediction(cfg, ext)
