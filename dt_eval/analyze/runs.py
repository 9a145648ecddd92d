"""Reading run directories for the analyses: the one place that does it, through the project's
typed run reader (`RunDir.read()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dt_eval.errors import DtEvalError
from dt_eval.records import RunConfig, SampleRecord


class AnalyzeError(DtEvalError, ValueError):
    """Bad input to an analysis (a missing run, mismatched models, ...): shown to the user as is."""


@dataclass
class RunData:
    path: Path
    config: RunConfig  # config.json (empty when absent)
    samples: dict[str, SampleRecord]  # key (task/id/repeat) -> the latest record of that key
    dropped: int = 0  # torn / corrupt lines skipped
    notes: list[str] = field(default_factory=list)


def load_run(path: str | Path) -> RunData:
    """config.json and the latest record per key of samples.jsonl (a --retry-errors redo wins)."""
    from dt_eval.storage.rundir import SAMPLES, RunDir, RunDirError

    p = Path(path)
    if not (p / SAMPLES).is_file():
        raise AnalyzeError(f"{p}: not a run directory (no {SAMPLES}); make one with `dt-eval run`")
    try:
        run = RunDir(p).read()
    except RunDirError as e:
        raise AnalyzeError(str(e)) from None
    return RunData(path=p, config=run.config or RunConfig(), samples=run.samples, dropped=len(run.bad_lines))
