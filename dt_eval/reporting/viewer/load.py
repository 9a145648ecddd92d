"""Reading finished run directories for the viewer: the one function that knows the layout
(config.json, samples.jsonl with the latest record per key, cot.jsonl)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.storage.rundir import SAMPLES, RunDir, RunDirError


class ViewerError(DtEvalError, RuntimeError):
    pass


@dataclass
class ViewRun:
    path: Path
    config: dict[str, Any]
    samples: list[dict[str, Any]]  # the latest record per key, in file order
    cot: list[dict[str, Any]] = field(default_factory=list)  # the latest cot line per (key, scorer)
    dropped_lines: int = 0  # torn / unreadable samples.jsonl lines left out


def load_runs_for_view(paths: list[str | Path]) -> list[ViewRun]:
    """Each run directory's config, samples and reasoning scores; a clear error for a path that
    is not a finished or running dt-eval run."""
    from dt_eval.reasoning.rescore import read_cot_records

    runs = []
    for p in paths:
        path = Path(p)
        if not (path / SAMPLES).is_file():
            raise ViewerError(f"{path}: not a dt-eval run directory (no {SAMPLES})")
        try:
            run = RunDir(path).read()  # read-only, typed; a running run has no config.json yet
        except RunDirError as e:
            raise ViewerError(f"{path}: {e}") from None
        config = run.config.to_json_dict() if run.config else {}
        samples = [s.to_json_dict() for s in run.samples.values()]  # the page's rows take plain records
        cot: dict[tuple[str, str], dict[str, Any]] = {}
        for line in read_cot_records(path):
            if isinstance(line, dict) and "key" in line and "scorer" in line:
                cot[(line["key"], line["scorer"])] = line
        runs.append(ViewRun(path, config, samples, list(cot.values()), len(run.bad_lines)))
    return runs
