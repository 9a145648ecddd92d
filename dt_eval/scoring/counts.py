"""Per-sample outcome counts of one task and repeat (errors, unparsed, ambiguous, truncated,
reasoning length): shared by dt-eval's own tasks and lm-eval tasks."""

from __future__ import annotations

import statistics
from typing import Any

from dt_eval.records import ExtractedAnswer, SampleRecord

_NONE = ExtractedAnswer()


def sample_counts(group: list[SampleRecord]) -> dict[str, Any]:
    data_errors = [f"{s.id}: {s.error}" for s in group if s.data_error]
    errors = sum(1 for s in group if s.error and not s.data_error)
    ext = [s.extracted or _NONE for s in group]
    reasoning_chars = [len(s.reasoning_text or "") for s in group if not s.error]
    tokens = [s.completion_tokens for s in group if s.completion_tokens is not None]
    return {
        "errors": errors,  # failed samples, scored wrong
        "data_errors": len(data_errors),  # metadata the official scorer cannot score: not in the accuracy
        "data_error_items": data_errors,
        "unparsed": sum(1 for s, e in zip(group, ext) if not s.error and e.unparsed),
        # both a label and another option's text (chord 'C' vs label C): scored wrong like unparsed
        "ambiguous": sum(1 for s, e in zip(group, ext) if not s.error and e.ambiguous),
        "truncated": sum(1 for e in ext if e.truncated),
        "cut_by_length": sum(1 for s in group if s.finish_reason == "length"),
        "warnings": sum(1 for s in group if s.warnings),
        "mean_reasoning_chars": statistics.fmean(reasoning_chars) if reasoning_chars else 0.0,
        "mean_completion_tokens": statistics.fmean(tokens) if tokens else None,
    }
