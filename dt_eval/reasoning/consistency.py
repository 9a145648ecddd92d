"""R_con: does the reasoning support the model's final answer? 0 or 1 (an LLM judge).

Stage-1 reward of Audio-DeepThinker. Not gated by correctness: a wrong answer can be
consistently reasoned. The judge must reply with one JSON object holding `supports` as a
boolean (or 0/1); anything else is retried, then unscored. A sample with no reasoning or no
final answer scores 0 without a judge call (there is nothing that could support the answer),
and says so in `components["reason"]`.
"""

from __future__ import annotations

from collections.abc import Sequence

from dt_eval.reasoning.judge import (
    JudgeClient,
    JudgeParseError,
    extract_json_object,
    score_each,
)
from dt_eval.reasoning.templates import load_prompt
from dt_eval.reasoning.types import CotInput, CotScore, render_options

SCORER = "consistency"


def prompt_version() -> str:
    return load_prompt("consistency").key


def build_messages(item: CotInput) -> list[dict[str, str]]:
    tpl = load_prompt("consistency")
    user = tpl.user_text(question=item.question, options=render_options(item.choices),
                         reasoning=item.reasoning or "", prediction=item.prediction or "")
    return tpl.messages(user)


def parse_reply(text: str) -> dict:
    obj = extract_json_object(text)
    if not isinstance(obj, dict) or "supports" not in obj:
        raise JudgeParseError("expected a JSON object with key 'supports'")
    v = obj["supports"]
    if isinstance(v, bool):
        supports = v
    elif isinstance(v, (int, float)) and v in (0, 1):
        supports = bool(v)
    else:
        raise JudgeParseError(f"'supports' must be true/false (or 0/1), got {v!r}")
    return {"value": 1.0 if supports else 0.0, "justification": obj.get("justification")}


async def score_batch(items: Sequence[CotInput], judge: JudgeClient) -> list[CotScore]:
    version = prompt_version()

    def settled(item: CotInput) -> CotScore | None:
        if not (item.reasoning or "").strip() or not (item.prediction or "").strip():
            what = "reasoning" if not (item.reasoning or "").strip() else "final answer"
            return CotScore(id=item.id, scorer=SCORER, version=version, value=0.0,
                            components={"reason": f"no {what}: nothing to support"})
        return None

    return await score_each(items, judge, scorer=SCORER, version=version, messages=build_messages,
                            parse=parse_reply, settled=settled,
                            components=lambda r: {"justification": r["justification"]})
