"""From run records to the viewer's data: one row per sample (question, options, gold answer,
audio, reasoning, raw output, extracted answer, status, tokens, latency, reasoning scores), and per
run a label and a per-task summary."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from dt_eval.reporting.viewer.load import ViewRun
from dt_eval.scoring.stats import METHOD_NAMES, accuracy_ci, compare_paired, format_p, outcomes_from_samples
from dt_eval.tasks.config import TaskConfig

# Statuses, in the order a sample gets the first that applies. Every one but `correct` and
# `ungraded` is scored wrong; `data error` items are outside the accuracy (the official scorer
# cannot score their metadata).
STATUSES = ("data error", "error", "truncated", "unparsed", "correct", "wrong", "ungraded")
DEFAULT_LABELS = "ABCDEFGHIJ"


def sample_status(rec: dict[str, Any]) -> str:
    ext = rec.get("extracted") or {}
    if rec.get("data_error"):
        return "data error"
    if rec.get("error"):
        return "error"
    if ext.get("truncated"):
        return "truncated"
    if ext.get("unparsed"):
        return "unparsed"
    if rec.get("correct") is None:
        return "ungraded"  # answers hidden, or left out by the official scorer
    return "correct" if rec["correct"] else "wrong"


def run_label(config: dict[str, Any], path: Path) -> str:
    """'Qwen2-Audio-7B-Instruct (think-on, T=0.7) · run-dir': model, the settings that most often
    differ between runs, and the directory, which tells apart runs of one model."""
    ident = config.get("identity") or {}
    model = str(ident.get("model") or "?").rstrip("/").split("/")[-1]
    thinking = (ident.get("prompt") or {}).get("thinking")
    temp = (ident.get("sampling") or {}).get("temperature")
    settings = [f"think-{thinking}" if thinking else "",
                f"T={temp:g}" if isinstance(temp, (int, float)) and not isinstance(temp, bool) else ""]
    shown = ", ".join(s for s in settings if s)
    return f"{model} ({shown}) · {path.name}" if shown else f"{model} · {path.name}"


class TaskInfo:
    """A task's config when dt-eval knows it (None for a custom task file no longer around)."""

    def __init__(self) -> None:
        self._cache: dict[str, TaskConfig | None] = {}

    def get(self, name: str) -> TaskConfig | None:
        if name not in self._cache:
            from dt_eval.tasks.config import load_task

            try:
                self._cache[name] = load_task(name)
            except Exception:  # unknown or unreadable task: show the record's own fields
                self._cache[name] = None
        return self._cache[name]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _prompt(rec: dict[str, Any]) -> str | None:
    p = rec.get("prompt")
    if isinstance(p, dict):
        return "\n\n".join(f"[{role}]\n{text}" for role, text in p.items())
    return _text(p)


def _item_fields(rec: dict[str, Any], cfg: TaskConfig | None) -> dict[str, Any]:
    """Question, options, gold answer and the official breakdown groups of the sample's item."""
    meta = rec.get("meta")
    if rec.get("kind") == "lm-eval" or not isinstance(meta, dict):
        user = (rec.get("prompt") or {}).get("user") if isinstance(rec.get("prompt"), dict) else None
        return {"question": user or "", "choices": [], "gold": _text(rec.get("target")),
                "groups": {"subtask": str(rec["subtask"])} if rec.get("subtask") else {}}
    if cfg is not None:
        from dt_eval.tasks.data import item_from_record

        item = item_from_record(cfg, meta, int(rec.get("index") or 0), None)
        return {"question": item.question, "choices": item.choices, "gold": _text(item.answer), "groups": item.groups}
    choices = meta.get("choices")
    return {"question": str(meta.get("question") or ""),
            "choices": [str(c) for c in choices] if isinstance(choices, list) else [],
            "gold": _text(meta.get("answer")), "groups": {}}


def _cot_entry(line: dict[str, Any]) -> dict[str, Any]:
    raw = line.get("raw")
    return {
        "scorer": line.get("scorer"),
        "value": line.get("value"),
        "version": line.get("version"),
        "components": line.get("components") or {},
        "rationale": [str(r) for r in raw] if isinstance(raw, list) else [],  # the judge's replies
        "error": line.get("error"),
        "judge_model": line.get("judge_model"),
    }


def sample_row(run: int, rec: dict[str, Any], cfg: TaskConfig | None, audio: int | None, audio_note: str | None,
               cot: list[dict[str, Any]]) -> dict[str, Any]:
    ext = rec.get("extracted") or {}
    return {
        "run": run,
        "key": str(rec.get("key")),
        "task": str(rec.get("task")),
        "id": str(rec.get("id")),
        "repeat": int(rec.get("repeat") or 0),
        **_item_fields(rec, cfg),
        "audio": audio,
        "audio_note": audio_note,
        "prompt": _prompt(rec),
        "reasoning": _text(rec.get("reasoning_text") or rec.get("reasoning")),
        "output": _text(rec.get("output")),
        "extracted": _text(ext.get("answer_text") if rec.get("kind") != "lm-eval" else rec.get("returned")),
        "matched": ext.get("matched_choice") if isinstance(ext.get("matched_choice"), int) else None,
        "ambiguous": bool(ext.get("ambiguous")),
        "status": sample_status(rec),
        "correct": rec.get("correct") if isinstance(rec.get("correct"), bool) and not rec.get("data_error") else None,
        "correct_raw": rec.get("correct_raw") if isinstance(rec.get("correct_raw"), bool) else None,
        "error": _text(rec.get("error")),
        "warnings": [str(w) for w in rec.get("warnings") or []],
        "finish_reason": _text(rec.get("finish_reason")),
        "prompt_tokens": rec.get("prompt_tokens"),
        "completion_tokens": rec.get("completion_tokens"),
        "latency_s": rec.get("latency_s"),
        "cot": [_cot_entry(c) for c in cot],
    }


def task_summary(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: sample counts by status, and the accuracy over the scored items (repeats
    averaged per item) with its 95% interval."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        by_task[str(s.get("task"))].append(s)
    out = {}
    for task, group in by_task.items():
        counts = {st: 0 for st in STATUSES}
        for s in group:
            counts[sample_status(s)] += 1
        acc = accuracy_ci(outcomes_from_samples(group))
        out[task] = {"samples": len(group), "counts": counts,
                     "accuracy": acc.to_dict(scale=100) if acc.n else None,
                     "accuracy_text": acc.describe() if acc.n else None}
    return out


def comparisons(runs: list[ViewRun]) -> dict[str, dict[str, dict[str, Any]]]:
    """For every ordered pair of runs "A,B" and each task both scored: B against A on their shared
    items (difference with its 95% CI, the paired test's p, the flips); see scoring/stats.py."""
    outcomes = []
    for run in runs:
        tasks = sorted({str(s.get("task")) for s in run.samples})
        outcomes.append({t: outcomes_from_samples(run.samples, t) for t in tasks})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, oa in enumerate(outcomes):
        for b, ob in enumerate(outcomes):
            if a == b:
                continue
            pair = {}
            for task in oa:
                if task in ob:
                    cmp = compare_paired(oa[task], ob[task])
                    if cmp.n_shared:
                        pair[task] = cmp.to_dict(scale=100) | {"p_text": format_p(cmp.p_value),
                                                               "test": METHOD_NAMES[cmp.method]}
            out[f"{a},{b}"] = pair
    return out


class AudioTable:
    """Audio files the rows point to, each once. Only these paths are ever read or served."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self._index: dict[str, int] = {}

    def add(self, value: Any) -> tuple[int | None, str | None]:
        """(index, None) for an existing file; (None, why) otherwise."""
        if not isinstance(value, str) or not value:
            return None, None
        if value.startswith("<"):  # "<embedded bytes>" (hub parquet) / "<array ...>": no file to play
            return None, f"audio not stored as a file ({value})"
        path = Path(value)
        if not path.is_absolute() or not path.is_file():
            return None, f"audio file not found: {value}"
        key = str(path)
        if key not in self._index:
            self._index[key] = len(self.paths)
            self.paths.append(path)
        return self._index[key], None


def view_data(runs: list[ViewRun], audio: AudioTable) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (audio as indices into `audio`)."""
    from dt_eval import __version__

    tasks = TaskInfo()
    rows = []
    out_runs = []
    labels: dict[str, str] = {}
    for r, run in enumerate(runs):
        cot_by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in run.cot:
            cot_by_key[str(line["key"])].append(line)
        for rec in run.samples:
            task = str(rec.get("task"))
            cfg = tasks.get(task) if rec.get("kind") != "lm-eval" else None
            if cfg is not None:
                labels[task] = cfg.prompt.labels
            idx, note = audio.add(rec.get("audio"))
            rows.append(sample_row(r, rec, cfg, idx, note, cot_by_key.get(str(rec.get("key")), [])))
        ident = run.config.get("identity") or {}
        out_runs.append({
            "label": run_label(run.config, run.path),
            "path": str(run.path),
            "model": ident.get("model"),
            "samples": len(run.samples),
            "dropped_lines": run.dropped_lines,
            "tasks": task_summary(run.samples),
            "cot_scorers": sorted({str(line.get("scorer")) for line in run.cot}),
        })
    return {"dt_eval_version": __version__, "runs": out_runs, "rows": rows, "labels": labels,
            "statuses": list(STATUSES), "comparisons": comparisons(runs) if len(runs) > 1 else {}}
