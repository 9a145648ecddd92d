"""R_sim^LLM: an LLM evaluator scores the generated chain against the reference chain.

Four dimensions (Audio-DeepThinker): logical path alignment, key step coverage, reasoning
strategy consistency, analysis depth; the judge gives each an integer 0..10 in one strict JSON
object (prompt: dt_eval/cot/prompts/evaluator.yaml, versioned). Mapping to [0, 1]:

    R_sim^LLM = (sum of the four integers) / 40

A reply that is not exactly that object (missing or extra-range keys, non-integers, prose
around it beyond one JSON object) is retried, then the item is unscored: never 0 or 0.5.
Items without a reference chain are unscored ("no reference chain"). An empty generated chain
scores 0.0 without a judge call (there is nothing to compare with the reference; the reason is in
`components["reason"]`). This scorer is not gated by correctness itself; hybrid.py gates it (and
skips the call for wrong answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dt_eval.reasoning.judge import (
    JudgeClient,
    JudgeParseError,
    extract_json_object,
    score_each,
    strict_int,
)
from dt_eval.reasoning.templates import load_prompt
from dt_eval.reasoning.types import CotInput, CotScore, render_options

SCORER = "evaluator"
DIMENSIONS = ("logical_path_alignment", "key_step_coverage", "reasoning_strategy_consistency", "analysis_depth")
MAX_PER_DIMENSION = 10


def prompt_version() -> str:
    return load_prompt("evaluator").key


def build_messages(item: CotInput) -> list[dict[str, str]]:
    tpl = load_prompt("evaluator")
    user = tpl.user_text(question=item.question, options=render_options(item.choices), answer=item.answer or "",
                         reference=item.reference or "", reasoning=item.reasoning or "",
                         prediction=item.prediction or "(no answer given)")
    return tpl.messages(user)


def parse_reply(text: str) -> dict[str, Any]:
    obj = extract_json_object(text)
    if not isinstance(obj, dict):
        raise JudgeParseError("the reply must be a JSON object")
    missing = [d for d in DIMENSIONS if d not in obj]
    if missing:
        raise JudgeParseError(f"missing keys: {', '.join(missing)}")
    dims = {d: strict_int(obj[d], 0, MAX_PER_DIMENSION, d) for d in DIMENSIONS}
    value = sum(dims.values()) / (MAX_PER_DIMENSION * len(DIMENSIONS))
    return {"value": value, "dimensions": dims, "justification": obj.get("justification")}


def _unscored(item: CotInput, reason: str) -> CotScore:
    return CotScore(id=item.id, scorer=SCORER, version=prompt_version(), value=None, error=reason)


async def score_batch(items: Sequence[CotInput], judge: JudgeClient) -> list[CotScore]:
    """R_sim^LLM for each item (one judge call each, concurrently)."""
    version = prompt_version()

    def settled(item: CotInput) -> CotScore | None:
        if not (item.reference or "").strip():
            return _unscored(item, "no reference chain")
        if not (item.reasoning or "").strip():
            return CotScore(id=item.id, scorer=SCORER, version=version, value=0.0,
                            components={"reason": "no reasoning: nothing to compare with the reference"})
        return None

    return await score_each(items, judge, scorer=SCORER, version=version, messages=build_messages,
                            parse=parse_reply, settled=settled,
                            components=lambda r: {"dimensions": r["dimensions"], "justification": r["justification"]})
