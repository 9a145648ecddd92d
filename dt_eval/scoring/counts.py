"""Per-sample outcome counts of one task and repeat (errors, unparsed, ambiguous, truncated,
reasoning length): shared by dt-eval's own tasks and lm-eval tasks."""

from __future__ import annotations

import statistics
from typing import Any


def sample_counts(group: list[dict[str, Any]]) -> dict[str, Any]:
    data_errors = [f"{s['id']}: {s.get('error')}" for s in group if s.get("data_error")]
    errors = sum(1 for s in group if s.get("error") and not s.get("data_error"))
    ext = [s.get("extracted") or {} for s in group]
    reasoning_chars = [len(s.get("reasoning_text") or "") for s in group if not s.get("error")]
    tokens = [s["completion_tokens"] for s in group if s.get("completion_tokens") is not None]
    return {
        "errors": errors,  # failed samples, scored wrong
        "data_errors": len(data_errors),  # metadata the official scorer cannot score: not in the accuracy
        "data_error_items": data_errors,
        "unparsed": sum(1 for s, e in zip(group, ext) if not s.get("error") and e.get("unparsed")),
        # both a label and another option's text (chord 'C' vs label C): scored wrong like unparsed
        "ambiguous": sum(1 for s, e in zip(group, ext) if not s.get("error") and e.get("ambiguous")),
        "truncated": sum(1 for e in ext if e.get("truncated")),
        "cut_by_length": sum(1 for s in group if s.get("finish_reason") == "length"),
        "warnings": sum(1 for s in group if s.get("warnings")),
        "mean_reasoning_chars": statistics.fmean(reasoning_chars) if reasoning_chars else 0.0,
        "mean_completion_tokens": statistics.fmean(tokens) if tokens else None,
    }
