"""Score the reasoning of a finished run without re-running inference.

`rescore_run(run_dir, cot=[...], judge_url=..., judge_model=..., embedder=...)` reads the run's
samples.jsonl, builds one `CotInput` per sample, runs the chosen scorers, appends one line per
(sample key, scorer) to `cot.jsonl` in the run directory (append-only; the last line per key and
scorer wins), and returns per-task aggregates of the scorers it ran. results.json gets, under
`results["tasks"][task]["cot"]`, the aggregates of every scorer cot.jsonl holds (so a later
`--cot rubrics` does not drop an earlier `--cot hybrid`); `dt-eval report` recomputes the same
from cot.jsonl. Judge replies are cached in SQLite (default
RUN_DIR/judge_cache.sqlite), so a second rescore makes no judge calls for what was scored;
embeddings likewise (RUN_DIR/embed_cache.sqlite; the embedding model loads only on a miss).

Scorers (`cot`), from the registry (dt_eval/reasoning/registry.py): hybrid (stage 1: gated
0.5*LLM + 0.5*emb), stage2 (gated LLM only), embedding, evaluator (R_sim^LLM alone, ungated),
consistency, format, rubrics (MMAR-Rubrics; items without a rubric are "not applicable", neither
scored nor unscored), and any registered plugin; "all" = every one.
Rubrics lines also carry the item's official breakdown fields (`groups`: modality, category,
sub-category), so the rubrics aggregate holds the official script's totals and per-group tables
(rubrics.official_lines prints them).

Per-sample inputs: reasoning = the run's `reasoning_text`, prediction = the extracted answer,
correct = the run's official match on it (a failed generation is a wrong answer with no chain).
Reference chain: the `references` file (argument, else the task config's `references:`), else
the item's reference field (MMAR `thinking`). Rubrics always use the item's own `thinking`.
This module is the integration layer; the scorers themselves never import the run machinery.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.reasoning.judge import DEFAULT_JUDGE_MODEL, JudgeClient, JudgeConfig
from dt_eval.reasoning.registry import (
    ScoreContext,
    UnknownCotScorerError,
    cot_scorer_names,
    get_cot_scorer,
    summarize,
)
from dt_eval.reasoning.types import CotInput, CotScore
from dt_eval.records import RunConfig, SampleRecord
from dt_eval.util.locks import HeldLock, try_lock

COT_FILE = "cot.jsonl"
CACHE_FILE = "judge_cache.sqlite"
EMBED_CACHE_FILE = "embed_cache.sqlite"
NOT_APPLICABLE = "not applicable"


class RescoreError(DtEvalError, RuntimeError):
    pass


def parse_cot(values: str | Sequence[str] | None) -> list[str]:
    """'hybrid,rubrics' / ['hybrid', 'rubrics'] / 'all' -> validated scorer names, in order."""
    if values is None:
        return []
    parts = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for p in parts:
        for name in (x.strip().lower() for x in p.split(",")):
            if not name:
                continue
            names = cot_scorer_names() if name == "all" else [name]
            for n in names:
                try:
                    get_cot_scorer(n)
                except UnknownCotScorerError:
                    raise RescoreError(f"unknown --cot scorer {n!r}; choose from "
                                       f"{', '.join(cot_scorer_names())} or all") from None
                if n not in out:
                    out.append(n)
    return out


def _needing(names: Sequence[str], what: str) -> list[str]:
    return [n for n in names if what in get_cot_scorer(n).needs]


def check_options(cot: Sequence[str], judge_url: str | Sequence[str] | None) -> list[str]:
    """Validate before any work is done (e.g. before a long inference run)."""
    names = parse_cot(cot)
    need = sorted(_needing(names, "judge"))
    if need and not judge_url:
        raise RescoreError(f"--cot {','.join(need)} needs a judge: pass --judge-url (an OpenAI-compatible /v1 URL)")
    return names


# --------------------------------------------------------------------------------------------
# Samples -> inputs


def _task_fields(task: str, config: RunConfig | None = None):
    from dt_eval.tasks.config import Fields, run_task_config

    try:
        cfg = run_task_config(task, config)  # as the run recorded it
        return cfg, cfg.fields
    except Exception:  # noqa: BLE001 - an unregistered task: the default field names
        return None, Fields()


def _resolve_refs_path(path: str, config: RunConfig, task: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    info = config.tasks.get(task)
    source = info.source if info else None
    if source and not str(source).startswith("hub:"):
        cand = Path(source).parent / p
        if cand.exists():
            return cand
    return p


def _references_for(task: str, cfg, references: str | dict[str, str] | None,
                    config: RunConfig) -> tuple[dict[str, str] | None, str | None]:
    from dt_eval.reasoning.refs import load_references

    path = references.get(task) if isinstance(references, dict) else references
    if path is None and cfg is not None:
        path = cfg.references
    if not path:
        return None, None
    resolved = _resolve_refs_path(path, config, task)
    if not resolved.exists():
        raise RescoreError(f"{task}: reference file {resolved} not found")
    return load_references(resolved), str(resolved)


def sample_input(sample: SampleRecord, fields, reference: str | None = None,
                 use_meta_reference: bool = True) -> CotInput:
    """One CotInput from a samples.jsonl record."""
    meta = sample.meta or {}
    if fields.choices and isinstance(meta.get(fields.choices), list):
        choices = [str(c) for c in meta[fields.choices]]
    elif fields.choice_columns:
        choices = [str(meta[c]) for c in fields.choice_columns if meta.get(c) not in (None, "")]
    else:
        choices = []
    if reference is None and use_meta_reference and fields.reference_thinking:
        reference = meta.get(fields.reference_thinking)
    ext = sample.extracted
    error = bool(sample.error)
    correct = sample.correct
    return CotInput(
        id=f"{sample.task}/{sample.id}",
        question=str(meta.get(fields.question) or ""),
        choices=choices,
        answer=None if fields.answer is None or meta.get(fields.answer) is None else str(meta.get(fields.answer)),
        reasoning=None if error else sample.reasoning_text,
        prediction=None if error or ext is None else ext.answer_text,
        correct=False if error else (None if correct is None else bool(correct)),
        reference=reference,
        rubric=meta.get("rubric") if isinstance(meta.get("rubric"), list) else None,
        output=None if error else sample.output,
        server_reasoning=None if error else sample.reasoning,
        meta={"key": sample.key, "task": sample.task, "item": sample.id, "repeat": sample.repeat},
    )


# --------------------------------------------------------------------------------------------
# Aggregation (from cot records; shared by rescore and `dt-eval report`)


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _scorer_order(names: Iterable[str]) -> list[str]:
    """Registered order (built-ins first), then names no scorer here knows, first seen first."""
    names = list(dict.fromkeys(names))
    known = [n for n in cot_scorer_names(plugins=False) if n in names]
    return known + [n for n in names if n not in known]


def aggregate_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-task aggregates from cot.jsonl lines (the last line per (key, scorer) wins)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        latest[(r["key"], r["scorer"])] = r
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in latest.values():
        by_task[r["task"]][r["scorer"]].append(r)
    out: dict[str, dict[str, Any]] = {}
    for task, scorers in by_task.items():
        agg: dict[str, Any] = {"scorers": _scorer_order(scorers)}
        keys = {r["key"] for rs in scorers.values() for r in rs}
        agg["samples"] = len(keys)
        total_unscored = 0
        calls = 0
        for name in agg["scorers"]:
            rs = scorers[name]
            na = [r for r in rs if (r.get("components") or {}).get(NOT_APPLICABLE)]
            rs = [r for r in rs if not (r.get("components") or {}).get(NOT_APPLICABLE)]
            scored = [r for r in rs if r.get("value") is not None]
            unscored = [r for r in rs if r.get("value") is None]
            total_unscored += len(unscored)
            calls += sum(int(r.get("judge_calls") or 0) for r in rs)
            a: dict[str, Any] = {
                "mean": _mean([r["value"] for r in scored]),
                "scored": len(scored),
                "unscored": len(unscored),
                "judge_calls": sum(int(r.get("judge_calls") or 0) for r in rs),
                "cached": sum(1 for r in rs if r.get("cached")),
                "version": rs[0]["version"] if rs else (na[0]["version"] if na else None),
            }
            if unscored:
                a["unscored_reasons"] = dict(Counter(_reason(r.get("error")) for r in unscored).most_common())
            a |= summarize(name, rs, scored, na)
            agg[name] = a
        agg["unscored"] = total_unscored
        agg["judge_calls"] = calls
        out[task] = agg
    return out


_KNOWN_REASONS = ("unparseable judge reply", "empty judge reply", "judge request failed", "no reference chain",
                  "correctness unknown", "no rubric")


def _reason(error: str | None) -> str:
    """A short, countable reason for an unscored sample."""
    if not error:
        return "unknown"
    prefix = ""
    for p in ("LLM evaluator: ", "embedding: "):
        if error.startswith(p):
            prefix, error = p, error[len(p):]
    if "rater(s) failed" in error:
        prefix += "rater failed: "
    for known in _KNOWN_REASONS:
        if known in error:
            return prefix + known
    return prefix + error.split(" (after")[0][:80]


def read_cot_records(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / COT_FILE
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # torn last line of an interrupted rescore
    return out


def load_cot_aggregates(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per-task cot aggregates recomputed from RUN_DIR/cot.jsonl ({} when there is none)."""
    return aggregate_records(read_cot_records(run_dir))


# --------------------------------------------------------------------------------------------
# The rescore


def _append_lines(path: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(inp: CotInput, s: CotScore, judge_model: str | None) -> dict[str, Any]:
    d = s.to_dict()
    d.pop("id", None)
    line = {"key": inp.meta["key"], "task": inp.meta["task"], "id": inp.meta["item"], "repeat": inp.meta["repeat"],
            **d, "judge_model": judge_model if _uses_judge(s.scorer) else None, "time": time.time()}
    if "groups" in inp.meta:  # rubric inputs: the official breakdown fields (modality, category, ...)
        line["groups"] = inp.meta["groups"]
    return line


def _uses_judge(name: str) -> bool:
    try:
        return "judge" in get_cot_scorer(name).needs
    except UnknownCotScorerError:
        return False


def _lock_run(run_dir: Path) -> HeldLock:
    """The run directory's lock (the one `dt-eval run` holds), without waiting."""
    from dt_eval.storage.rundir import LOCK

    lock = try_lock(run_dir / LOCK)
    if lock is None:
        raise RescoreError(f"{run_dir} is in use by another dt-eval process")
    return lock


def _make_embedder(embedder: Any, cache_path: Path | None):
    if embedder is None or isinstance(embedder, (str, Path)):
        from dt_eval.reasoning.embedding import Embedder

        return Embedder(None if embedder in (None, "") else embedder, cache_path=cache_path)
    return embedder


async def arescore_run(
    run_dir: str | Path,
    cot: str | Sequence[str] = ("hybrid",),
    judge_url: str | Sequence[str] | None = None,
    judge_model: str = DEFAULT_JUDGE_MODEL,
    embedder: Any = None,
    *,
    weight: float = 0.5,
    references: str | dict[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    judge: JudgeClient | None = None,
    judge_concurrency: int = 16,
    judge_timeout_s: float = 120.0,
    judge_max_retries: int = 3,
    judge_parse_retries: int = 2,
    judge_max_tokens: int = 2048,
    judge_temperature: float = 0.0,
    judge_seed: int | None = 42,
    judge_extra_body: dict[str, Any] | None = None,
    judge_cache: str | Path | None | bool = None,
    api_key: str | None = None,
    score_wrong: bool = False,
    format_style: str = "any",
    rubrics_attempts: int | None = None,
    rubrics_cut_thinking: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """The async form of `rescore_run` (see the module docstring)."""
    from dt_eval.reasoning import rubrics
    from dt_eval.storage.rundir import CONFIG, RunDir, RunDirError

    say = say or (lambda m: print(m, file=sys.stderr))
    rubrics_config = rubrics.RubricsConfig(cut_thinking=rubrics_cut_thinking, **(
        {"attempts": rubrics_attempts} if rubrics_attempts is not None else {}))
    run_dir = Path(run_dir)
    names = check_options(cot, judge_url if judge is None else "given")
    if not names:
        raise RescoreError("nothing to score: pass --cot (e.g. hybrid,rubrics)")
    if not (run_dir / CONFIG).exists():
        raise RescoreError(f"{run_dir}: not a dt-eval run directory (no {CONFIG})")
    try:
        run = RunDir(run_dir).read()
    except RunDirError as e:
        raise RescoreError(str(e)) from None
    config = run.config or RunConfig()
    # lm-eval text tasks carry no audio question or reference chain: not reasoning-scored here.
    samples = [s for s in run.samples.values() if (not tasks or s.task in tasks) and not s.is_lm_eval]
    if not samples:
        raise RescoreError(f"{run_dir}: no samples to score")
    samples.sort(key=lambda s: (s.task, s.repeat, s.index))

    # Inputs: one for the reference-based scorers, one (own `thinking`) for rubrics.
    inputs: list[CotInput] = []
    rubric_inputs: list[CotInput] = []
    ref_files: dict[str, str | None] = {}
    by_task: dict[str, list[SampleRecord]] = defaultdict(list)
    for s in samples:
        by_task[s.task].append(s)
    for task, group in by_task.items():
        cfg, fields = _task_fields(task, config)
        refs, ref_path = _references_for(task, cfg, references, config)
        ref_files[task] = ref_path
        for s in group:
            ref = refs.get(str(s.id)) if refs is not None else None
            inputs.append(sample_input(s, fields, reference=ref, use_meta_reference=refs is None))
            rubric_inputs.append(sample_input(s, fields))
            meta = s.meta or {}
            rubric_inputs[-1].meta["groups"] = {f: meta.get(f) for f in (cfg.group_fields if cfg else [])}

    results: dict[str, list[CotScore]] = {}
    emb = (_make_embedder(embedder, None if judge_cache is False else run_dir / EMBED_CACHE_FILE)
           if _needing(names, "embedder") else None)
    own_judge = False
    if judge is None and _needing(names, "judge"):
        cache_path = None if judge_cache is False else (judge_cache or run_dir / CACHE_FILE)
        judge = JudgeClient(JudgeConfig(
            base_url=list(judge_url) if not isinstance(judge_url, str) else judge_url, model=judge_model,
            temperature=judge_temperature, seed=judge_seed, max_tokens=judge_max_tokens,
            concurrency=judge_concurrency, timeout_s=judge_timeout_s, max_retries=judge_max_retries,
            parse_retries=judge_parse_retries, extra_body=dict(judge_extra_body or {}), api_key=api_key,
            cache_path=cache_path))
        own_judge = True
    judge_model_name = judge.config.model if judge is not None else None
    ctx = ScoreContext(judge=judge, embedder=emb, weight=weight, score_wrong=score_wrong, format_style=format_style,
                       rubrics=rubrics_config)
    cot_path = run_dir / COT_FILE
    with _lock_run(run_dir):
        try:
            for name in names:
                t0 = time.monotonic()
                sent0 = judge.requests_sent if judge is not None else 0
                scorer = get_cot_scorer(name)
                if "rubric" in scorer.needs:  # the item's own rubric and thinking; no rubric: not applicable
                    these = rubric_inputs
                    applicable = [i for i, x in enumerate(these) if x.rubric]
                    got = await scorer.score_batch([these[i] for i in applicable], ctx)
                    scores_by = dict(zip(applicable, got))
                    version = scorer.version()
                    scores = [scores_by.get(i) or CotScore(id=x.id, scorer=name, version=version, value=None,
                                                           components={NOT_APPLICABLE: True},
                                                           error="not applicable: the item has no rubric")
                              for i, x in enumerate(these)]
                else:
                    these = inputs
                    scores = await scorer.score_batch(inputs, ctx)
                results[name] = scores
                _append_lines(cot_path, [_line(x, s, judge_model_name) for x, s in zip(these, scores)])
                sent = (judge.requests_sent - sent0) if judge is not None else 0
                unscored = sum(1 for s in scores if s.value is None and not s.components.get(NOT_APPLICABLE))
                say(f"cot {name}: {len(scores)} samples, {unscored} unscored, {sent} judge request(s), "
                    f"{time.monotonic() - t0:.1f} s")
        finally:
            if own_judge and judge is not None:
                await judge.aclose()
        lines = [_line(x, s, judge_model_name)
                 for name in names for x, s in zip(rubric_inputs if "rubric" in get_cot_scorer(name).needs
                                                   else inputs, results[name])]
        aggregates = aggregate_records(lines)  # what this rescore scored
        # results.json gets every scorer the run has lines for (earlier rescores included).
        full = load_cot_aggregates(run_dir)
        for task, agg in aggregates.items():
            info = {"judge": judge.describe() if judge is not None else None,
                    "embedder": emb.describe() if emb is not None and hasattr(emb, "describe") else None,
                    "references": ref_files.get(task) or "item field"}
            agg |= info
            full[task] = full.get(task, agg) | info
        _merge_results(run, {t: full[t] for t in aggregates})
    return aggregates


def _merge_results(run: Any, aggregates: dict[str, dict[str, Any]]) -> None:
    from dt_eval.storage.rundir import RESULTS, write_json_atomic

    path = run.path / RESULTS
    if path.exists():
        results = json.loads(path.read_text(encoding="utf-8"))
    else:
        from dt_eval.scoring.aggregate import compute_results

        results = compute_results(run.config, run.samples.values())
    for task, agg in aggregates.items():
        results.setdefault("tasks", {}).setdefault(task, {})["cot"] = agg
    write_json_atomic(path, results)


def rescore_run(run_dir: str | Path, cot: str | Sequence[str] = ("hybrid",),
                judge_url: str | Sequence[str] | None = None, judge_model: str = DEFAULT_JUDGE_MODEL,
                embedder: Any = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Score a run's reasoning (blocking). Returns {task: aggregates}; see `arescore_run`."""
    return asyncio.run(arescore_run(run_dir, cot, judge_url, judge_model, embedder, **kwargs))
