"""Reading run directories for the analyses: the one place that does it (to be swapped for the
project's typed run reader)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError


class AnalyzeError(DtEvalError, ValueError):
    """Bad input to an analysis (a missing run, mismatched models, ...): shown to the user as is."""


@dataclass
class RunData:
    path: Path
    config: dict[str, Any]  # config.json ({} when absent)
    samples: dict[str, dict[str, Any]]  # key (task/id/repeat) -> the latest record of that key
    dropped: int = 0  # torn / corrupt lines skipped
    notes: list[str] = field(default_factory=list)


def load_run(path: str | Path) -> RunData:
    """config.json and the latest record per key of samples.jsonl (a --retry-errors redo wins)."""
    from dt_eval.storage.rundir import CONFIG, SAMPLES, latest_by_key, read_samples

    p = Path(path)
    if not (p / SAMPLES).is_file():
        raise AnalyzeError(f"{p}: not a run directory (no {SAMPLES}); make one with `dt-eval run`")
    records, dropped = read_samples(p)
    cfg_file = p / CONFIG
    config = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    return RunData(path=p, config=config, samples=latest_by_key(records), dropped=dropped)
