"""The hybrid reasoning reward of Audio-DeepThinker, gated by correctness.

    stage 1:  R_sim^hybrid = R_acc * (w * R_sim^LLM + (1 - w) * R_sim^emb),   w = 0.5 by default
    stage 2:  R_sim        = R_acc * R_sim^LLM                                 (no embedding term)

R_acc is the item's correctness (CotInput.correct). Gating: a wrong answer scores 0.0 without a
judge call (the LLM evaluator is asked only about correct answers unless `score_wrong`). Each
component is reported on its own in `components` beside the combined value:
  correct, gate (1/0), w, stage, emb (R_sim^emb, stage 1 only; computed for every item with a
  reference, wrong ones too), cosine, llm (R_sim^LLM, when asked), llm_dimensions, ungated
  (w * llm + (1 - w) * emb, when both exist).
A correct answer with an empty chain scores 0.0 without a judge call (`components["reason"]`).
Unscored (value None, reason in `error`): correctness unknown; for a correct answer, a missing
reference chain or an LLM evaluator failure. Stage 2 never builds or calls an embedder: its
components have no `emb` key at all.

The whole-reward helpers `stage1_reward` / `stage2_reward` sum the paper's terms for an RL
recipe (GDPO normalises each term separately; they are returned separately too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dt_eval.reasoning import evaluator as _evaluator
from dt_eval.reasoning.judge import JudgeClient
from dt_eval.reasoning.types import CotInput, CotScore

VERSION = "dt-eval-hybrid-v2"  # v2: an empty chain scores 0 without a judge call


@dataclass
class HybridConfig:
    w: float = 0.5  # weight of the LLM term (stage 1)
    stage: int = 1  # 1: w * LLM + (1 - w) * emb; 2: LLM only
    score_wrong: bool = False  # also ask the LLM evaluator about wrong answers (costs calls; gate still 0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.w <= 1.0:
            raise ValueError("hybrid weight w must be in [0, 1]")
        if self.stage not in (1, 2):
            raise ValueError("stage must be 1 or 2")

    @property
    def scorer(self) -> str:
        return "hybrid" if self.stage == 1 else "stage2"


def combine(llm: float, emb: float, w: float = 0.5) -> float:
    """w * R_sim^LLM + (1 - w) * R_sim^emb."""
    return w * llm + (1.0 - w) * emb


def gate(value: float, correct: bool) -> float:
    return value if correct else 0.0


def stage1_reward(acc: float, fmt: float, con: float, hybrid_gated: float) -> float:
    """R_acc + R_fmt + R_con + gated R_sim^hybrid (stage 1 total, before GDPO normalisation)."""
    return acc + fmt + con + hybrid_gated


def stage2_reward(acc: float, llm_gated: float) -> float:
    """R_acc + gated R_sim^LLM (stage 2 total)."""
    return acc + llm_gated


async def score_batch(items: Sequence[CotInput], judge: JudgeClient | None, embedder: Any = None,
                      config: HybridConfig | None = None) -> list[CotScore]:
    """Gated hybrid (stage 1) or gated LLM-only (stage 2) score for each item."""
    cfg = config or HybridConfig()
    if cfg.stage == 1 and embedder is None:
        raise ValueError("stage-1 hybrid scoring needs an embedder (stage 2 does not)")
    emb: dict[int, CotScore] = {}
    if cfg.stage == 1:
        for i, s in enumerate(await embedder.score_batch(list(items))):
            emb[i] = s
    ask = [i for i, it in enumerate(items)
           if it.correct is not None and (it.correct or cfg.score_wrong) and (it.reference or "").strip()]
    if ask and judge is None:
        raise ValueError("hybrid scoring needs a judge client for the LLM evaluator")
    llm: dict[int, CotScore] = {}
    if ask:
        for i, s in zip(ask, await _evaluator.score_batch([items[i] for i in ask], judge)):
            llm[i] = s
    version = f"{VERSION}+{_evaluator.prompt_version()}"
    out = []
    for i, it in enumerate(items):
        comp: dict[str, Any] = {"correct": it.correct, "stage": cfg.stage}
        if cfg.stage == 1:
            comp["w"] = cfg.w
            e = emb[i]
            comp["emb"] = e.value
            for k in ("cosine", "chunks_chain", "chunks_reference"):
                if k in e.components:
                    comp[k] = e.components[k]
        l_ = llm.get(i)
        comp["llm"] = l_.value if l_ is not None else None
        if l_ is not None and l_.value is not None:
            comp["llm_dimensions"] = l_.components.get("dimensions")
        if cfg.stage == 1 and comp["llm"] is not None and comp["emb"] is not None:
            comp["ungated"] = combine(comp["llm"], comp["emb"], cfg.w)
        raw = l_.raw if l_ is not None else []
        calls = l_.judge_calls if l_ is not None else 0
        cached = bool(l_ is not None and l_.cached)
        value: float | None
        error = None
        if it.correct is None:
            value, error = None, "correctness unknown (R_acc missing)"
        elif not it.correct:
            value = 0.0
            comp["gate"] = 0
        else:
            comp["gate"] = 1
            if not (it.reference or "").strip():
                value, error = None, "no reference chain"
            elif not (it.reasoning or "").strip():
                value = 0.0  # the evaluator made no call either
                comp["reason"] = "no reasoning: nothing to compare with the reference"
            elif comp["llm"] is None:
                value, error = None, f"LLM evaluator: {l_.error if l_ is not None else 'not run'}"
            elif cfg.stage == 2:
                value = comp["llm"]
            elif comp["emb"] is None:
                value, error = None, f"embedding: {emb[i].error}"
            else:
                value = combine(comp["llm"], comp["emb"], cfg.w)
        out.append(CotScore(id=it.id, scorer=cfg.scorer, version=version, value=value, components=comp, raw=raw,
                            error=error, judge_calls=calls, cached=cached))
    return out
