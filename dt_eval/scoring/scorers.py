"""Official scorers: one protocol, a registry keyed by the task YAML's `scorer:`.

An official scorer is everything that differs between benchmarks' official scripts: how a
submission is scored and what the script prints, how an extracted answer is written into the
submission's prediction field, which rows an exported submission holds, and how the script reads
a submission file. Two built-ins: `mcq_official` (MMAU/MMAR: the token match over option texts)
and `mmsu_official` (MMSU: a letter read from the response). A new rule is a class with the
`OfficialScorer` protocol, registered with `register_scorer` (or an entry point in the group
`dt_eval.scorers`); a task YAML then names it. The prediction key comes from the task
(`prediction_key`), the same rule serving benchmarks that name the field differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from dt_eval.pipeline.extract import extract
from dt_eval.scoring.official import (
    MmsuStatus,
    mcq_match,
    mmsu_correct,
    mmsu_read_letter,
)
from dt_eval.scoring.submission import (
    SEPARATOR,
    ItemResult,
    RecordErrors,
    ScoreReport,
    SubmissionError,
    check_prediction,
    json_type,
    record_id,
    record_where,
)
from dt_eval.scoring.tally import Tally
from dt_eval.tasks.config import TaskConfig
from dt_eval.types import Extraction

@runtime_checkable
class OfficialScorer(Protocol):
    name: str
    # How the official script loads a submission file: "json" (one JSON document), "jsonl" (one
    # record per line) or "json_or_jsonl" (by the file name). A task YAML may override it.
    submission_reader: str
    # Records without the prediction key: True when the official script counts them wrong (they
    # stay in the denominator), False when it skips them.
    missing_counts_wrong: bool

    def score(self, cfg: TaskConfig, records: Sequence[dict[str, Any]], extract_answers: bool, invalid: str,
              strict: bool) -> ScoreReport:
        """Score submission records (metadata + cfg.prediction_key) as the official script does;
        with extract_answers, extract the final answer first (self.extract, self.prediction)."""
        ...

    def official_lines(self, report: ScoreReport) -> list[str]:
        """What the official script prints for the scored records, line for line."""
        ...

    def report_json(self, report: ScoreReport, summary: bool = False) -> dict[str, Any]:
        """Rule-specific keys of the JSON report (summary: only the counts beside a raw number)."""
        ...

    def extract(self, cfg: TaskConfig, text: str | None, choices: Sequence[str],
                reasoning: str | None = None) -> Extraction:
        """The final answer of a model output, as this rule needs it."""
        ...

    def prediction(self, cfg: TaskConfig, ext: Extraction) -> str:
        """The value an extracted answer becomes in the submission's prediction field."""
        ...

    def export_rows(self, cfg: TaskConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of an official submission file from submission records (metadata + prediction)."""
        ...

    def item_record(self, cfg: TaskConfig, choices: Sequence[str], answer: str) -> dict[str, Any]:
        """An item (options, answer) in the task's metadata schema, as this rule reads it (the
        training recipe scores rollouts of its own items this way)."""
        ...

    def check_labels(self, cfg: TaskConfig, labels: str) -> None:
        """Raise ValueError when the rule cannot read answers given with these option labels."""
        ...


class McqOfficialScorer:
    """MMAU and MMAR: the prediction's word set must hold every word of the answer and no word
    that only a wrong option has; breakdown tables by the task's fields, printed in the scripts'
    format. Records without the prediction key are skipped, as the scripts skip them.

    Subclasses may change the per-item rule alone by overriding `match`."""

    name = "mcq_official"
    submission_reader = "json_or_jsonl"
    missing_counts_wrong = False

    def match(self, cfg: TaskConfig, answer: str, prediction: str, choices: Sequence[str]) -> bool:
        return mcq_match(answer, prediction, choices)

    def score(self, cfg: TaskConfig, records: Sequence[dict[str, Any]], extract_answers: bool, invalid: str,
              strict: bool) -> ScoreReport:
        key = cfg.prediction_key
        errors = RecordErrors()
        breakdowns: dict[str, dict[str, Tally]] = {
            b.field: {k: Tally() for k in (b.keys or [])} for b in cfg.breakdowns
        }
        overall = Tally()
        items: list[ItemResult] = []
        missing: list[str] = []
        answer_f, choices_f = cfg.fields.answer or "answer", cfg.fields.choices or "choices"
        specs = [(b.field, dict.fromkeys(b.keys) if b.keys is not None else None) for b in cfg.breakdowns]
        for i, rec in enumerate(records):
            if key not in rec:
                missing.append(record_id(rec, i))
                continue
            ok = check_prediction(rec, i, key, errors)
            answer, choices = rec.get(answer_f), rec.get(choices_f)
            if not isinstance(answer, str):
                errors.add(f"{record_where(rec, i)}: '{answer_f}' must be a string, got {answer!r}")
                ok = False
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                errors.add(f"{record_where(rec, i)}: '{choices_f}' must be a list of strings, got {choices!r}")
                ok = False
            groups: dict[str, str | None] = {}
            for name, keys in specs:
                value = rec.get(name)
                if keys is not None:
                    if not isinstance(value, str) or value not in keys:
                        shown = "missing" if name not in rec else repr(value)
                        errors.add(f"{record_where(rec, i)}: '{name}' is {shown}; the official script knows only "
                                   f"{list(keys)}")
                        ok = False
                elif value is not None and not isinstance(value, str):
                    errors.add(f"{record_where(rec, i)}: '{name}' must be a string or absent, got {value!r}")
                    ok = False
                groups[name] = value
            if not ok:
                continue
            ext = None
            prediction = rec[key]
            if extract_answers:
                ext = self.extract(cfg, prediction, choices)
                prediction = self.prediction(cfg, ext)
            correct = self.match(cfg, answer, prediction, choices)
            overall.add(correct)
            for name, value in groups.items():
                if value is None:  # the official script skips an absent sub-category
                    continue
                table = breakdowns[name]
                if value not in table:
                    table[value] = Tally()
                table[value].add(correct)
            items.append(ItemResult(record_id(rec, i), correct, ext, index=i))
        if invalid == "raise":
            errors.raise_if_any(cfg.name)
        if overall.total == 0 and invalid == "raise":
            raise_no_predictions(cfg, len(records))
        return ScoreReport(
            task=cfg.name,
            scorer=self.name,
            prediction_key=key,
            extracted=extract_answers,
            overall=overall,
            items=items,
            breakdowns=breakdowns,
            missing_ids=missing,
            invalid=errors.msgs,
            breakdown_titles={b.field: b.title for b in cfg.breakdowns},
        )

    def official_lines(self, report: ScoreReport) -> list[str]:
        lines = []
        for name, table in report.breakdowns.items():
            lines += [SEPARATOR, f"{report.breakdown_titles.get(name, name)}:"]
            lines += [f"{key} : {t.accuracy:.2f}% over {t.total} samples" for key, t in table.items()]
        lines += [
            SEPARATOR,
            f"Total Accuracy: {report.overall.accuracy:.2f}% over {report.overall.total} samples",
            SEPARATOR,
            # The official scripts print this counter but never increment it.
            "No prediction count: 0",
        ]
        return lines

    def report_json(self, report: ScoreReport, summary: bool = False) -> dict[str, Any]:
        return {}

    def extract(self, cfg: TaskConfig, text: str | None, choices: Sequence[str],
                reasoning: str | None = None) -> Extraction:
        return extract(text, choices, reasoning=reasoning, labels=cfg.prompt.labels)

    def prediction(self, cfg: TaskConfig, ext: Extraction) -> str:
        return ext.answer_text or ""

    def export_rows(self, cfg: TaskConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return records

    def item_record(self, cfg: TaskConfig, choices: Sequence[str], answer: str) -> dict[str, Any]:
        return {cfg.fields.answer or "answer": answer, cfg.fields.choices or "choices": list(choices)}

    def check_labels(self, cfg: TaskConfig, labels: str) -> None:
        return None


def raise_no_predictions(cfg: TaskConfig, n_records: int) -> None:
    raise SubmissionError(
        f"{cfg.name}: no record carries '{cfg.prediction_key}' ({n_records} records read); nothing to score"
    )


# Key order of the official MMSU inference script's output lines.
MMSU_KEYS = ["id", "audio_path", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer_gt",
             "response", "task_name", "category", "sub-category", "sub-sub-category", "linguistics_sub_discipline"]
MMSU_LETTERS = "ABCD"


class MmsuOfficialScorer:
    """MMSU: a letter from the first or the second-to-last character of the response, correct
    when that option's text equals the answer; a response with no readable letter is left out of
    the denominator, and a missing one counts wrong (as the official script does). Tables by
    category, then sub-category, in first-seen order."""

    name = "mmsu_official"
    submission_reader = "jsonl"
    missing_counts_wrong = True

    def score(self, cfg: TaskConfig, records: Sequence[dict[str, Any]], extract_answers: bool, invalid: str,
              strict: bool) -> ScoreReport:
        key = cfg.prediction_key
        cols = cfg.fields.choice_columns or ["choice_a", "choice_b", "choice_c", "choice_d"]
        answer_f = cfg.fields.answer or "answer_gt"
        errors = RecordErrors()
        overall = Tally()
        nested: dict[str, dict[str, Tally]] = {}
        per_cat: dict[str, Tally] = {}
        items: list[ItemResult] = []
        missing: list[str] = []
        skipped: list[str] = []
        non_string: list[tuple[str, str]] = []
        diagnostics: list[str] = []
        for i, rec in enumerate(records):
            response = rec.get(key, "")
            if key not in rec:
                # The official script reads a missing response as '' and counts it wrong; we keep that
                # (it is in the denominator) but also report the record as missing.
                missing.append(record_id(rec, i))
            elif not isinstance(response, str):
                if strict:
                    check_prediction(rec, i, key, errors)
                    continue
                if not extract_answers:
                    # The official script's response.strip() fails: it prints this and drops the record.
                    diagnostics.append("Error prediction!")
                    non_string.append((record_id(rec, i), json_type(response)))
                    continue
                response = None  # dt-eval's extraction: no answer, unparsed, counted wrong
            cat, sub = rec.get("category", ""), rec.get("sub-category", "")
            bad = [f for f, v in (("category", cat), ("sub-category", sub)) if not isinstance(v, str)]
            if bad:
                errors.add(f"{record_where(rec, i)}: {', '.join(bad)} must be a string")
                continue
            choices = {letter: rec.get(c, "") for letter, c in zip(MMSU_LETTERS, cols)}
            ext = None
            if extract_answers:
                ext = self.extract(cfg, response, [choices[k] for k in MMSU_LETTERS])
                response = self.prediction(cfg, ext)
            status, letter = mmsu_read_letter(response)
            if status is MmsuStatus.SKIPPED:
                diagnostics.append(f"Wrong format response: {response.strip().replace(chr(10), '')}")
                skipped.append(record_id(rec, i))
                continue
            correct = mmsu_correct(letter, choices, rec.get(answer_f, ""))
            overall.add(correct)
            nested.setdefault(cat, {}).setdefault(sub, Tally()).add(correct)
            per_cat.setdefault(cat, Tally()).add(correct)
            items.append(ItemResult(record_id(rec, i), correct, ext, index=i))
        if invalid == "raise":
            errors.raise_if_any(cfg.name)
        return ScoreReport(
            task=cfg.name,
            scorer=self.name,
            prediction_key=key,
            extracted=extract_answers,
            overall=overall,
            items=items,
            breakdowns={"category": per_cat},
            nested=nested,
            missing_ids=missing,
            skipped_ids=skipped,
            non_string=non_string,
            invalid=errors.msgs,
            diagnostics=diagnostics,
            breakdown_titles={"category": "Category"},
        )

    def official_lines(self, report: ScoreReport) -> list[str]:
        lines = list(report.diagnostics)
        for cat, subs in (report.nested or {}).items():
            lines += [f"Category: {cat}, Sub-category: {sub}, Accuracy: {t.fraction:.4f}" for sub, t in subs.items()]
        for cat, t in report.breakdowns.get("category", {}).items():
            lines.append(f"Category: {cat}, Average Accuracy: {t.fraction:.4f}")
        lines += [f"Overall Accuracy: {report.overall.fraction:.4f}", f"Total count: {report.overall.total}"]
        return lines

    def report_json(self, report: ScoreReport, summary: bool = False) -> dict[str, Any]:
        if summary:
            return {"skipped": len(report.skipped_ids), "non_string": len(report.non_string)}
        return {
            "accuracy_fraction": report.overall.fraction,
            "skipped": len(report.skipped_ids),
            "skipped_ids": report.skipped_ids,
            "non_string": len(report.non_string),
            "non_string_ids": [rid for rid, _ in report.non_string],
            "breakdowns_nested": {
                cat: {sub: t.to_dict() for sub, t in subs.items()} for cat, subs in (report.nested or {}).items()
            },
        }

    def extract(self, cfg: TaskConfig, text: str | None, choices: Sequence[str],
                reasoning: str | None = None) -> Extraction:
        """MMSU asks for a letter alone and reads only letters: a bare letter is a label, and free
        text that names no option is unparsed."""
        ext = extract(text, choices, reasoning=reasoning, labels=cfg.prompt.labels, letters_only=True)
        if ext.matched_choice is None and not ext.ambiguous:
            ext.unparsed = True
        return ext

    def prediction(self, cfg: TaskConfig, ext: Extraction) -> str:
        idx = ext.matched_choice
        return cfg.prompt.labels[idx] if idx is not None and ext.answer_text is not None else ""

    def export_rows(self, cfg: TaskConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The official inference script's output lines: its keys, in its order."""
        key = cfg.prediction_key
        return [{k: r.get(k) for k in MMSU_KEYS if k in r or k == key} for r in records]

    def item_record(self, cfg: TaskConfig, choices: Sequence[str], answer: str) -> dict[str, Any]:
        cols = cfg.fields.choice_columns or []
        if len(choices) > len(cols):
            raise ValueError(f"{cfg.name}'s scorer reads {len(cols)} options; this item has {len(choices)}")
        return {**dict(zip(cols, choices)), cfg.fields.answer or "answer_gt": answer}

    def check_labels(self, cfg: TaskConfig, labels: str) -> None:
        if not labels.startswith(MMSU_LETTERS):
            raise ValueError(f"task {cfg.name!r} scores option letters A-D; the prompt's labels are {labels!r}")


# Instances the registry (dt_eval/scoring/registry.py) hands out for the built-in names.
MCQ_OFFICIAL = McqOfficialScorer()
MMSU_OFFICIAL = MmsuOfficialScorer()
