"""Reasoning scorers behind one protocol, by name: what `--cot NAME` runs.

A scorer says what it needs (`needs`: "judge" an LLM judge client, "embedder" a sentence
embedder, "references" a reference chain per item, "rubric" the item's own rubric and reference
`thinking`) and scores a batch of `CotInput`s with `await scorer.score_batch(items, ctx)`, the
`ScoreContext` holding the judge, the embedder and the options. `rescore` builds only what the
chosen scorers need, and gives a "rubric" scorer only the items that carry a rubric (the rest are
"not applicable").

Built-ins: hybrid, stage2, embedding, evaluator, consistency, format, rubrics. A new scorer is
an object with this protocol, registered with `register_cot_scorer` (or an entry point in the
group `dt_eval.cot_scorers`). The built-ins import their modules only when they score, so
listing them (the `--cot` help) costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dt_eval.reasoning.types import CotInput, CotScore
from dt_eval.util.registry import Registry, UnknownNameError

ENTRY_POINT_GROUP = "dt_eval.cot_scorers"
NEEDS = frozenset({"judge", "embedder", "references", "rubric"})


@dataclass
class ScoreContext:
    judge: Any = None  # JudgeClient, when a chosen scorer needs "judge"
    embedder: Any = None  # Embedder, when a chosen scorer needs "embedder"
    weight: float = 0.5  # hybrid: w in w*LLM + (1-w)*embedding
    score_wrong: bool = False  # hybrid/stage2: also ask the judge about wrong answers
    format_style: str = "any"  # format: accepted shapes (dt_eval.reasoning.format.STYLES)
    rubrics: Any = None  # rubrics: RubricsConfig (None: the official settings)


@runtime_checkable
class CotScorer(Protocol):
    name: str
    summary: str  # a few words for the `--cot` help
    needs: frozenset[str]  # a subset of NEEDS

    def version(self) -> str:
        """The scorer's version (prompts, scheme), as its CotScores carry it."""
        ...

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        """One CotScore per item, in order; value None = unscored (with the reason in `error`)."""
        ...


def summarize(name: str, lines: list[dict[str, Any]], scored: list[dict[str, Any]],
              not_applicable: list[dict[str, Any]]) -> dict[str, Any]:
    """Scorer-specific aggregates of its cot.jsonl lines (beside mean / scored / unscored), from
    its optional `summarize` method; {} for a scorer that has none or is not installed here."""
    try:
        scorer = get_cot_scorer(name)
    except (UnknownCotScorerError, ImportError):
        return {}
    fn = getattr(scorer, "summarize", None)
    return fn(lines, scored, not_applicable) if fn is not None else {}


# ---------------------------------------------------------------- built-ins


class _Hybrid:
    needs = frozenset({"judge", "embedder", "references"})

    def __init__(self, stage: int):
        self.stage = stage
        self.name = "hybrid" if stage == 1 else "stage2"
        self.summary = "gated 0.5*LLM + 0.5*embedding" if stage == 1 else "gated LLM only"
        if stage == 2:
            self.needs = frozenset({"judge", "references"})

    def version(self) -> str:
        from dt_eval.reasoning import evaluator, hybrid

        return f"{hybrid.VERSION}+{evaluator.prompt_version()}"

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        from dt_eval.reasoning import hybrid

        cfg = hybrid.HybridConfig(w=ctx.weight, stage=self.stage, score_wrong=ctx.score_wrong)
        return await hybrid.score_batch(items, ctx.judge, ctx.embedder if self.stage == 1 else None, cfg)

    def summarize(self, lines: list[dict[str, Any]], scored: list[dict[str, Any]],
                  not_applicable: list[dict[str, Any]]) -> dict[str, Any]:
        comps = [r.get("components") or {} for r in lines]
        a: dict[str, Any] = {}
        for k in (("emb", "llm", "ungated") if self.stage == 1 else ("llm",)):
            vals = [c[k] for c in comps if c.get(k) is not None]
            a[f"{k}_mean"] = _mean(vals)
            a[f"{k}_n"] = len(vals)
        a["gated_zero"] = sum(1 for c in comps if c.get("gate") == 0)
        if self.stage == 1:
            a["w"] = next((c["w"] for c in comps if "w" in c), None)
        a["correct"] = sum(1 for c in comps if c.get("correct"))
        return a


class _Embedding:
    name = "embedding"
    summary = "R_sim^emb alone"
    needs = frozenset({"embedder", "references"})

    def version(self) -> str:
        from dt_eval.reasoning import embedding

        return embedding.VERSION

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        return await ctx.embedder.score_batch(items)


class _Evaluator:
    name = "evaluator"
    summary = "R_sim^LLM alone, ungated"
    needs = frozenset({"judge", "references"})

    def version(self) -> str:
        from dt_eval.reasoning import evaluator

        return evaluator.prompt_version()

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        from dt_eval.reasoning import evaluator

        return await evaluator.score_batch(items, ctx.judge)


class _Consistency:
    name = "consistency"
    summary = "reasoning agrees with the answer"
    needs = frozenset({"judge"})

    def version(self) -> str:
        from dt_eval.reasoning import consistency

        return consistency.prompt_version()

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        from dt_eval.reasoning import consistency

        return await consistency.score_batch(items, ctx.judge)


class _Format:
    name = "format"
    summary = "one reasoning block, then an answer"
    needs: frozenset[str] = frozenset()

    def version(self) -> str:
        from dt_eval.reasoning import format as fmt

        return fmt.VERSION

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        from dt_eval.reasoning import format as fmt

        return await fmt.score_batch(items, style=ctx.format_style)


class _Rubrics:
    name = "rubrics"
    summary = "MMAR-Rubrics"
    needs = frozenset({"judge", "rubric"})

    def version(self) -> str:
        from dt_eval.reasoning import rubrics

        return rubrics.prompt_version()

    async def score_batch(self, items: Sequence[CotInput], ctx: ScoreContext) -> list[CotScore]:
        from dt_eval.reasoning import rubrics

        return await rubrics.score_batch(items, ctx.judge, ctx.rubrics)

    def summarize(self, lines: list[dict[str, Any]], scored: list[dict[str, Any]],
                  not_applicable: list[dict[str, Any]]) -> dict[str, Any]:
        comps = [r.get("components") or {} for r in lines]
        return rubrics_totals(scored) | {
            "not_applicable": len(not_applicable),
            "thinking_truncated": sum(1 for c in comps if c.get("thinking_truncated")),
            "thinking_over_limit": sum(1 for c in comps if c.get("thinking_over_limit")),
            "repeats": len({r.get("repeat", 0) for r in lines}) or 1,
            "breakdowns": _rubrics_breakdowns(scored),
        }


def _mean(xs: list[float]) -> float | None:
    import statistics

    return statistics.fmean(xs) if xs else None


def rubrics_totals(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """The official totals: score = sum of item scores / items x 100 (summed in benchmark order,
    as the official script sums), accuracy = correct / items x 100; unscored items are not items."""
    n = len(scored)
    correct = sum(1 for r in scored if (r.get("components") or {}).get("correct"))
    return {"total": n, "correct": correct, "score": sum(r["value"] for r in scored) / n * 100 if n else None,
            "accuracy": correct / n * 100 if n else None}


def _rubrics_breakdowns(scored: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The official per-modality / category / sub-category tables (from each line's `groups`)."""
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in scored:
        for field, value in (r.get("groups") or {}).items():
            rows.setdefault(field, {}).setdefault(str(value), []).append(r)
    return {field: {key: rubrics_totals(rs) for key, rs in table.items()} for field, table in rows.items()}


# ---------------------------------------------------------------- registry


class UnknownCotScorerError(UnknownNameError, ValueError):
    pass


_BUILTINS: dict[str, CotScorer] = {s.name: s for s in (
    _Hybrid(1), _Hybrid(2), _Embedding(), _Evaluator(), _Consistency(), _Format(), _Rubrics())}
_REGISTRY: Registry[CotScorer] = Registry("reasoning scorer", ENTRY_POINT_GROUP, dict(_BUILTINS))


def register_cot_scorer(scorer: CotScorer, *, replace: bool = False) -> CotScorer:
    """Make `--cot <scorer.name>` (and `all`) run `scorer`."""
    unknown = set(scorer.needs) - NEEDS
    if unknown:
        raise ValueError(f"reasoning scorer {scorer.name!r} needs {sorted(unknown)}; known needs: {sorted(NEEDS)}")
    return _REGISTRY.register(scorer.name, scorer, replace=replace)


def unregister_cot_scorer(name: str) -> None:
    _REGISTRY.unregister(name)


def get_cot_scorer(name: str) -> CotScorer:
    try:
        obj = _REGISTRY.get(name)
    except UnknownNameError as e:
        raise UnknownCotScorerError(e.kind, e.name, e.known) from None
    return obj() if isinstance(obj, type) else obj  # an entry point may name the class


def cot_scorer_names(plugins: bool = True) -> list[str]:
    """Registered names, built-ins first; plugins=False skips the entry-point scan (help texts)."""
    return _REGISTRY.names() if plugins else _REGISTRY.builtin_names()


def cot_help() -> str:
    """The `--cot` help: every scorer with its summary (installed plugins are not scanned here)."""
    parts = [f"{n} ({get_cot_scorer(n).summary})" for n in cot_scorer_names(plugins=False)]
    return "Reasoning scorers, comma-separated: " + ", ".join(parts) + ", or all."
