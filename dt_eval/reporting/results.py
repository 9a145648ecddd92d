"""A run's results, recomputed from its run directory (results.json is a cache, not the source):
what `dt-eval report` prints and `dt_eval.load_run` returns."""

from __future__ import annotations

from pathlib import Path

from dt_eval.errors import DtEvalError
from dt_eval.records import RunResults


class ReportError(DtEvalError, ValueError):
    pass


def load_run(run_dir: str | Path) -> RunResults:
    """Per-task results recomputed from samples.jsonl (the latest record per key), the reasoning
    scores recomputed from cot.jsonl, the run's config and its sample records. Read-only."""
    from dt_eval.reasoning.rescore import (
        load_cot_aggregates,  # reasoning scores, from cot.jsonl (no torch)
    )
    from dt_eval.scoring.aggregate import compute_run_results
    from dt_eval.storage.rundir import CONFIG, RunDir, RunDirError

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ReportError(f"{run_dir}: not a dt-eval run directory (no {CONFIG})")
    try:
        run = RunDir(run_dir).read()
    except RunDirError as e:
        raise ReportError(str(e)) from None
    if not run.samples:
        raise ReportError(f"{run_dir}: no samples yet")
    from dt_eval.tasks.config import TaskConfigError, UnknownTaskError

    try:
        results = compute_run_results(run.config, run.samples.values())
    except (UnknownTaskError, TaskConfigError) as e:  # e.g. a plugin scorer that is not installed here
        raise ReportError(f"{run_dir}: {e}") from None
    for task, agg in load_cot_aggregates(run_dir).items():
        if task in results.tasks:
            results.tasks[task] = results.tasks[task].model_copy(update={"cot": agg})
    results.run_dir = str(run_dir)
    return results
