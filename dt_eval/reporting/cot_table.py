"""Tables of reasoning scores (`dt-eval rescore`, and the cot columns of `dt-eval report`)."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def cot_columns(agg: dict[str, Any]) -> dict[str, str]:
    """Summary-table cells for one task's cot aggregates."""
    row: dict[str, str] = {}
    h = agg.get("hybrid")
    if h:
        row["hybrid"] = _fmt(h.get("mean"))
        row["emb"] = _fmt(h.get("emb_mean"))
        row["llm"] = _fmt(h.get("llm_mean"))
    if agg.get("stage2"):
        row["stage2 (llm)"] = _fmt(agg["stage2"].get("mean"))
    for name, col in (("embedding", "emb (all)"), ("evaluator", "llm (all)"), ("consistency", "consistency"),
                      ("format", "format")):
        if agg.get(name):
            row[col] = _fmt(agg[name].get("mean"))
    if agg.get("rubrics"):
        row["rubrics"] = _fmt(agg["rubrics"].get("score"), digits=2)
    shown = {"hybrid", "stage2", "embedding", "evaluator", "consistency", "format", "rubrics"}
    for name in agg.get("scorers") or []:  # plugin scorers: their mean, under their name
        if name not in shown and agg.get(name):
            row[name] = _fmt(agg[name].get("mean"))
    if agg.get("scorers"):
        row["cot unscored"] = str(agg.get("unscored", 0))
    return row


def cot_table_lines(aggregates: dict[str, dict[str, Any]]) -> list[str]:
    """One row per task with its reasoning scores, and what the columns mean."""
    from tabulate import tabulate

    rows = [{"task": task, "samples": agg.get("samples")} | cot_columns(agg) for task, agg in aggregates.items()]
    return [tabulate(rows, headers="keys"),
            "hybrid/stage2: gated by correctness (0 for wrong answers), mean over scored samples; emb/llm: "
            "components; rubrics: MMAR-Rubrics score x100; unscored samples are excluded and counted."]


def rubrics_official_lines(aggregates: dict[str, dict[str, Any]]) -> list[str]:
    """Per task with rubric scores: what the official MMAR-Rubrics script prints, then our notes."""
    from dt_eval.reasoning.rubrics import dt_eval_lines, official_lines

    out: list[str] = []
    for task, agg in aggregates.items():
        r = agg.get("rubrics")
        if not r or not (r.get("scored") or r.get("unscored")):
            continue
        out += ["", f"{task}: MMAR-Rubrics, as the official scorer prints it", *official_lines(r), *dt_eval_lines(r)]
    return out
