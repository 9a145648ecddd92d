"""MMAR-Rubrics scoring, faithful to the challenge's official scorer.

Behaviour reproduced from ddlBoJack/MMAR code/evaluation_rubrics.py (commit 3bce090a, 2026-02):
- Correctness first, with the official string match on the submitted answer (the same rule as
  MMAR accuracy). A wrong answer scores 0 and costs no judge call.
- The judge (default gpt-4o-2024-11-20, temperature 0, seed 42; any OpenAI-compatible endpoint)
  gets the official system prompt and a user prompt with the question, the correct answer, the
  reference thinking, the item's rubric criteria (5 in MMAR) and the model's reasoning followed by
  "The answer is <answer>." (prompt text: prompts/rubrics_mmar.yaml; rendering and the official
  `clean()` re-implemented here).
- A reply is accepted only if it holds a JSON list (the official regex `\\[\\s*\\{.*\\}\\s*\\]`,
  else the whole reply) with one entry per criterion, each with `name` and a numeric `score`
  among the criterion's `choices`; a name mismatch is only logged. Rater score = sum of scores /
  sum of each criterion's max choice.
- Retry budget: the official script gives each rater 20 requests (`--retries`, default 20) to get
  a reply it can parse; so does dt-eval by default (RubricsConfig.attempts, `dt-eval rescore
  --rubrics-attempts`). A smaller budget leaves items unscored that the official script scores,
  which changes both the score and its denominator. (HTTP faults are retried by dt-eval's
  transport, `JudgeConfig.max_retries`, on their own budget.)
- 5 rater runs per item (identical prompt; the cache keys each by its rater index); sorted,
  highest and lowest dropped, mean of the middle three (all of them if fewer than 3).
- A failure of any rater leaves the item unscored: excluded from the score and counted
  (the official script leaves it out of its output and asks for a re-run).
- Submission rule: thinking capped at 10,000 characters. The official script judges whatever
  thinking it is given and only warns (at 10,000 characters or more); dt-eval's rubrics export
  cuts the thinking to 10,000 characters. By default dt-eval judges the cut text (the number the
  official script prints for dt-eval's export), flags `thinking_truncated` and prints how many
  samples were cut; `cut_thinking=False` (`--rubrics-full-thinking`) judges the full text instead.
Item scores are in [0, 1]; the challenge prints the mean over scored items x 100.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dt_eval.reasoning.judge import JudgeCall, JudgeClient, JudgeParseError
from dt_eval.reasoning.templates import load_prompt
from dt_eval.reasoning.types import CotInput, CotScore
from dt_eval.scoring.official import mcq_match

log = logging.getLogger(__name__)

SCORER = "rubrics"
NUM_RATERS = 5
LENGTH_LIMIT = 10_000
OFFICIAL_ATTEMPTS = 20  # the official scorer's requests per rater (DEFAULT_API_MAX_RETRIES)
_JSON_LIST = re.compile(r"\[\s*\{.*\}\s*\]", re.DOTALL)


@dataclass
class RubricsConfig:
    num_raters: int = NUM_RATERS
    length_limit: int = LENGTH_LIMIT
    attempts: int = OFFICIAL_ATTEMPTS  # judge requests per rater for a parseable reply
    cut_thinking: bool = True  # judge the thinking cut to length_limit (as dt-eval's export writes it)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("rubrics attempts must be at least 1")


def prompt_version() -> str:
    return load_prompt("rubrics_mmar").key


def clean(text: str) -> str:
    """The official `clean()`: strip the block, then strip leading whitespace of every line."""
    return "\n".join(line.lstrip() for line in text.strip().splitlines())


def build_user_prompt(question: str, answer: str, thinking: str, thinking_prediction: str,
                      answer_prediction: str, rubric: Sequence[dict[str, Any]]) -> str:
    tpl = load_prompt("rubrics_mmar")
    sections = "\n".join(clean(tpl.part("criterion", name=c["name"], scoring_point=c["scoring_point"],
                                        choices=str(c["choices"]))) for c in rubric)
    items = "\n".join(clean(tpl.part("json_item", name=c["name"], choices=str(c["choices"]),
                                     comma="," if i < len(rubric) - 1 else ""))
                      for i, c in enumerate(rubric))
    return clean(tpl.user_text(question=question, answer=answer, thinking=thinking, rubric_sections=sections,
                               json_format=items, thinking_prediction=thinking_prediction,
                               answer_prediction=answer_prediction))


def build_messages(question: str, answer: str, thinking: str, thinking_prediction: str, answer_prediction: str,
                   rubric: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    tpl = load_prompt("rubrics_mmar")
    return tpl.messages(build_user_prompt(question, answer, thinking, thinking_prediction, answer_prediction, rubric))


def parse_reply(raw: str, rubric: Sequence[dict[str, Any]]) -> float:
    """One rater's score in [0, 1]; raises JudgeParseError where the official validator raises."""
    m = _JSON_LIST.search(raw)
    content = m.group(0) if m else raw
    try:
        result = json.loads(content)
    except json.JSONDecodeError as e:
        raise JudgeParseError(f"invalid JSON in evaluator output: {e}") from None
    if not isinstance(result, list):
        raise JudgeParseError("evaluator output must be a JSON list")
    if len(result) != len(rubric):
        raise JudgeParseError(f"rubric length mismatch: expected {len(rubric)} items, got {len(result)}")
    got = 0.0
    best = 0.0
    for i, (res, crit) in enumerate(zip(result, rubric)):
        if not isinstance(res, dict) or not all(k in res for k in ("name", "score")):
            raise JudgeParseError(f"evaluator item {i} must include 'name' and 'score'")
        if res["name"] != crit["name"]:
            log.debug("rubric name mismatch at %d: expected %r, got %r", i, crit["name"], res["name"])
        score = res["score"]
        if not isinstance(score, (int, float)):  # as the official check: booleans pass (True == 1)
            raise JudgeParseError(f"score for {crit['name']!r} must be numeric, got {type(score).__name__}")
        if score not in crit["choices"]:
            raise JudgeParseError(f"invalid score for {crit['name']!r}: {score}; allowed {crit['choices']}")
        got += score
        best += max(crit["choices"])
    return 0.0 if best == 0 else got / best


def trimmed_mean(scores: Sequence[float]) -> float:
    """Drop the highest and the lowest, mean of the rest (all of them when fewer than 3)."""
    s = sorted(scores)
    kept = s[1:-1] if len(s) >= 3 else s
    return sum(kept) / len(kept)


def answer_correct(item: CotInput) -> bool | None:
    """The official string match on the submitted answer; falls back to `item.correct`."""
    if item.answer is not None and item.choices:
        return mcq_match(item.answer, item.prediction or "", item.choices)
    return item.correct


async def score_batch(items: Sequence[CotInput], judge: JudgeClient | None,
                      config: RubricsConfig | None = None) -> list[CotScore]:
    cfg = config or RubricsConfig()
    version = prompt_version()
    out: list[CotScore | None] = [None] * len(items)
    calls: list[JudgeCall] = []
    owners: list[int] = []
    prepared: dict[int, dict[str, Any]] = {}
    for i, it in enumerate(items):
        if not it.rubric:
            out[i] = CotScore(id=it.id, scorer=SCORER, version=version, value=None, error="no rubric for this item")
            continue
        correct = answer_correct(it)
        if correct is None:
            out[i] = CotScore(id=it.id, scorer=SCORER, version=version, value=None,
                              error="correctness unknown (no answer/choices and no R_acc)")
            continue
        if not correct:
            out[i] = CotScore(id=it.id, scorer=SCORER, version=version, value=0.0, components={"correct": False})
            continue
        thinking = it.reasoning or ""
        over = len(thinking) >= cfg.length_limit  # where the official script warns
        truncated = cfg.cut_thinking and len(thinking) > cfg.length_limit
        if truncated:
            thinking = thinking[:cfg.length_limit]
        messages = build_messages(it.question, it.answer or "", it.reference or "", thinking, it.prediction or "",
                                  it.rubric)
        rubric = list(it.rubric)
        prepared[i] = {"thinking_truncated": truncated, "thinking_over_limit": over}
        for r in range(cfg.num_raters):
            calls.append(JudgeCall(item_id=it.id, prompt_version=version, messages=messages, rater=r,
                                   attempts=cfg.attempts, parse=lambda raw, rubric=rubric: parse_reply(raw, rubric)))
            owners.append(i)
    if calls and judge is None:
        raise ValueError("rubric scoring of correct answers needs a judge client")
    results = await judge.judge_many(calls) if calls else []
    per_item: dict[int, list[tuple[int, Any]]] = {}
    for call, owner, res in zip(calls, owners, results):
        per_item.setdefault(owner, []).append((call.rater, res))
    for i, rated in per_item.items():
        it = items[i]
        rated.sort(key=lambda x: x[0])
        raters = [{"rater": r, "ok": res.ok, "score": res.value if res.ok else None, "calls": res.calls,
                   "cached": res.cached, "error": res.error} for r, res in rated]
        raw = [x for _, res in rated for x in res.raw]
        calls_n = sum(res.calls for _, res in rated)
        comp = {"correct": True, **prepared[i], "raters": raters}
        failed = [(r, res) for r, res in rated if not res.ok]
        if failed:
            r, res = failed[0]
            out[i] = CotScore(id=it.id, scorer=SCORER, version=version, value=None, components=comp, raw=raw,
                              error=f"{len(failed)} of {len(rated)} rater(s) failed; rater {r}: {res.error}",
                              judge_calls=calls_n)
        else:
            comp["trimmed_from"] = [res.value for _, res in rated]
            out[i] = CotScore(id=it.id, scorer=SCORER, version=version,
                              value=trimmed_mean([res.value for _, res in rated]), components=comp, raw=raw,
                              judge_calls=calls_n, cached=all(res.cached for _, res in rated))
    return [s for s in out if s is not None]


# --------------------------------------------------------------------------------------------
# What the official script prints (from the aggregates `dt-eval rescore` computes)

SEPARATOR = "*" * 30
# Breakdown tables of the official script: field -> (title, width of the key column).
OFFICIAL_TABLES = {"modality": ("Modality-wise", 25), "category": ("Category-wise", 18),
                   "sub-category": ("Sub-category-wise", 40)}


def official_lines(agg: dict[str, Any]) -> list[str]:
    """The official script's summary for these scored samples, line for line: score and accuracy
    per modality, category and sub-category, the totals, and its "No prediction count" (items it
    could not score). Table rows are in benchmark order (the official order is completion order)."""
    lines: list[str] = []
    for field, table in (agg.get("breakdowns") or {}).items():
        title, width = OFFICIAL_TABLES.get(field, (field, 25))
        lines += [SEPARATOR, f"{title} Score & Accuracy:"]
        for key, t in table.items():
            lines.append(f"{key:<{width}}  score={t['score']:3.2f}, acc={t['accuracy']:3.2f}% over {t['total']:>3} samples")
    n = int(agg.get("scored") or 0)
    lines += [SEPARATOR,
              f"Total Accuracy: {agg.get('accuracy') or 0.0:.2f}% over {n} samples",
              f"Total Score: {agg.get('score') or 0.0:.2f} over {n} samples",
              SEPARATOR,
              f"No prediction count: {int(agg.get('unscored') or 0)}"]
    return lines


def dt_eval_lines(agg: dict[str, Any]) -> list[str]:
    """Our notes beside the official block, marked as ours."""
    lines = []
    unscored = int(agg.get("unscored") or 0)
    if unscored:
        reasons = ", ".join(f"{k}: {v}" for k, v in (agg.get("unscored_reasons") or {}).items())
        lines.append(f"[dt-eval] {unscored} sample(s) unscored ({reasons}): left out of the score and the accuracy, "
                     "as the official script does; rescore to retry them (scored raters come from the judge cache)")
    cut = int(agg.get("thinking_truncated") or 0)
    full = int(agg.get("thinking_over_limit") or 0) - cut
    if cut:
        lines.append(f"[dt-eval] {cut} sample(s) had thinking over {LENGTH_LIMIT:,} characters: judged cut to "
                     f"{LENGTH_LIMIT:,}, as `dt-eval export --format rubrics` writes them (the official script judges "
                     "any length it is given and only warns); --rubrics-full-thinking judges the full text")
    if full > 0:
        lines.append(f"[dt-eval] {full} sample(s) had thinking of {LENGTH_LIMIT:,} characters or more: judged in full, "
                     "as the official script does (it only warns); the challenge caps thinking at "
                     f"{LENGTH_LIMIT:,} characters")
    repeats = int(agg.get("repeats") or 1)
    if repeats > 1:
        lines.append(f"[dt-eval] pooled over {repeats} repeats (the official script scores one submission)")
    return lines
