"""Official submission files from a run's per-sample records.

The official scripts run on these files print exactly the numbers dt-eval reports:
answers="extracted" reproduces dt-eval's accuracy, answers="raw" its official raw number.
The layout follows the file name the way the official script's reader does (a .json file is one
JSON array, a .jsonl file JSON lines); a name that reader cannot load is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.scoring.aggregate import submission_records
from dt_eval.scoring.registry import task_scorer
from dt_eval.scoring.submission import SubmissionError, file_layout
from dt_eval.storage.rundir import CONFIG, RunDir, RunDirError
from dt_eval.tasks.config import TaskConfigError, UnknownTaskError, run_task_config

RUBRICS_THINKING_LIMIT = 10_000  # the challenge caps thinking at 10,000 characters
# The MMAR-Rubrics scorer loads a .json file with json.load and other names as JSON lines.
RUBRICS_READER = "json_or_jsonl"


class ExportError(DtEvalError, ValueError):
    pass


def export_run(run_dir: str | Path, task: str, out: str | Path, fmt: str = "official", answers: str = "extracted",
               repeat: int = 0) -> int:
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in ("official", "rubrics"):
        raise ExportError(f"--format must be official or rubrics, not {fmt!r}")
    if answers not in ("extracted", "raw"):
        raise ExportError(f"--answers must be extracted or raw, not {answers!r}")
    cfg = _run_task_config(run_dir, task)
    if fmt not in cfg.export_formats:
        raise ExportError(f"{task} has no {fmt} export (available: {', '.join(cfg.export_formats)})")
    as_lines = _as_json_lines(task, RUBRICS_READER if fmt == "rubrics" else cfg.submission_reader, out)
    try:
        run = RunDir(run_dir).read()
    except RunDirError as e:
        raise ExportError(str(e)) from None
    samples = run.task_samples(task, repeat)
    if not samples:
        raise ExportError(f"{run_dir}: no samples of task {task} (repeat {repeat})")
    subs = submission_records(cfg, samples, answers)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "rubrics":
        by_index = sorted(samples, key=lambda s: s.index)
        rows = [
            {
                "id": s.id,
                "thinking_prediction": (s.reasoning_text or "")[:RUBRICS_THINKING_LIMIT],
                "answer_prediction": sub[cfg.prediction_key],
            }
            for s, sub in zip(by_index, subs)
        ]
    else:
        rows = task_scorer(cfg).export_rows(cfg, subs)
    if as_lines:
        _write_jsonl(out, rows)
    else:
        out.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(subs)


def _run_task_config(run_dir: Path, task: str):
    """The task config the run recorded (a custom task exports without its YAML), else the
    task of that name (runs made before configs were recorded)."""
    try:
        config = RunDir(run_dir).read_config()
    except RunDirError as e:
        raise ExportError(str(e)) from None
    if config is None:
        raise ExportError(f"{run_dir}: not a dt-eval run directory (no {CONFIG})")
    try:
        return run_task_config(task, config)
    except (UnknownTaskError, TaskConfigError, ValueError) as e:
        raise ExportError(str(e)) from None


def _as_json_lines(task: str, reader: str, out: Path) -> bool:
    """Whether `out` must hold JSON lines (else one JSON array) for the official reader to load it.
    A name that says the other layout is refused even where the reader ignores names."""
    try:
        lines = file_layout(reader, out.name) == "lines"
    except SubmissionError as e:
        raise ExportError(f"{task}: {e}; not {out.name}") from None
    if lines and out.name.endswith(".json"):
        raise ExportError(f"{task}: the official script reads JSON lines only; name the file .jsonl, not {out.name}")
    if not lines and out.name.endswith(".jsonl"):
        raise ExportError(f"{task}: the official script reads the file as one JSON document (json.load) whatever "
                          f"its name; name it .json, not {out.name}")
    return lines


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
