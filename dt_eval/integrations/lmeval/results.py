"""Results of an ``lm-eval:NAME`` task from its sample records (no lm-eval import).

lm-eval is the official scorer of its own tasks: the number shown is the one it reported, kept in
config.json. Metrics that lm-eval aggregates by mean are also recomputed from the per-sample
values in samples.jsonl, so ``dt-eval report`` and ``leaderboard verify`` can check them.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from dt_eval.records import SampleRecord


def metric_keys(reported: dict[str, Any]) -> list[str]:
    """``exact_match,strict-match``-style keys of one lm-eval result entry, in its order."""
    return [k for k in reported if k != "alias" and "_stderr," not in k and "," in k]


def recompute(records: list[SampleRecord]) -> dict[str, float]:
    """Mean of each per-sample metric over the scored records (first repeat of each doc)."""
    values: dict[str, list[float]] = {}
    for s in records:
        for k, v in (s.metrics or {}).items():
            if isinstance(v, (int, float)):  # bools count as 0/1
                values.setdefault(k, []).append(float(v))
    return {k: statistics.fmean(v) for k, v in values.items() if v}


def lm_eval_task_results(name: str, records: list[SampleRecord], info: dict[str, Any]) -> dict[str, Any]:
    from dt_eval.scoring.counts import sample_counts

    lm_name = info.get("lm_eval_task") or name.split(":", 1)[-1]
    reported = (info.get("reported") or {}).get(lm_name) or {}
    primary = info.get("primary_metric")
    fresh = recompute([s for s in records if s.repeat == 0])
    metrics: dict[str, Any] = {}
    for key in metric_keys(reported) or sorted(fresh):
        value = reported.get(key)
        m, _, flt = key.partition(",")
        stderr = reported.get(f"{m}_stderr,{flt}")
        entry: dict[str, Any] = {"value": value if isinstance(value, (int, float)) else None,
                                 "stderr": stderr if isinstance(stderr, (int, float)) else None,
                                 "recomputed": fresh.get(key)}
        agg = (info.get("aggregation") or {}).get(key)
        entry["aggregation"] = agg
        if agg == "mean" and entry["value"] is not None and entry["recomputed"] is not None:
            entry["agrees"] = math.isclose(entry["value"], entry["recomputed"], rel_tol=1e-9, abs_tol=1e-12)
        metrics[key] = entry
    scored = [s for s in records if s.metrics is not None]
    value = (metrics.get(primary) or {}).get("value") if primary else None
    correct = [s.correct for s in scored if s.repeat == 0]
    repeat0 = {
        "repeat": 0,
        "accuracy": value * 100 if value is not None else None,
        "correct": sum(1 for c in correct if c) if correct and all(c is not None for c in correct) else None,
        "total": len(correct),
    } | sample_counts([s for s in records if s.repeat == 0])
    expected = info.get("items")
    docs = {s.id for s in records}
    out: dict[str, Any] = {
        "task": name,
        "kind": "lm-eval",
        "lm_eval_task": lm_name,
        "task_version": info.get("versions", {}).get(lm_name) if isinstance(info.get("versions"), dict) else None,
        "scorer": f"lm-eval {info.get('lm_eval_version', '')}".strip(),
        "answers_available": value is not None,
        "samples": len(records),
        "items": len(docs),
        "expected_items": expected,
        "repeats": [repeat0],
        "metrics": metrics,
        "primary_metric": primary,
        "n_shot": (info.get("n_shot") or {}).get(lm_name),
        "complete": value is not None and (expected is None or len(scored) >= expected),
        "data_sha256": None,
        "data_version_label": None,
    }
    if value is not None:
        out["accuracy_mean"], out["accuracy_std"] = value * 100, 0.0
    return out
