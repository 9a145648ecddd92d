"""From per-sample records to per-task results: the official breakdown on extracted answers,
the official number without extraction beside it, and statistics over repeats.

Everything here is recomputed from samples.jsonl alone, so reports and leaderboards can verify
a run without its data or model. Records come in as SampleRecords (plain dicts are accepted and
validated), results go out as TaskResults / RunResults (dt_eval/records.py) or, from
`compute_results`, as results.json's dict.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dt_eval import __version__
from dt_eval.records import (
    AccuracyInterval,
    RunConfig,
    RunResults,
    SampleRecord,
    TaskResults,
    as_config,
    as_sample,
    as_samples,
)
from dt_eval.scoring.counts import sample_counts
from dt_eval.scoring.stats import accuracy_ci, grouped_accuracy_ci
from dt_eval.scoring.submission import ScoreReport, extracted_prediction, score_records
from dt_eval.tasks.config import TaskConfig, run_task_config
from dt_eval.types import Extraction


def submission_records(cfg: TaskConfig, samples: Sequence[SampleRecord | Mapping[str, Any]],
                       answers: str = "raw") -> list[dict[str, Any]]:
    """Official submission records (metadata + prediction key) in benchmark order.

    answers="raw": the model's post-reasoning output, as a submission without extraction holds it.
    answers="extracted": the extracted final answer (what dt-eval's headline number scores).
    """
    out = []
    for s in sorted(as_samples(samples), key=lambda s: s.index):
        rec = dict(s.meta or {})
        if answers == "extracted":
            ext = s.extracted.to_extraction() if s.extracted is not None else _UNPARSED
            rec[cfg.prediction_key] = extracted_prediction(cfg, ext)
        else:
            rec[cfg.prediction_key] = s.prediction or ""
        out.append(rec)
    return out


_UNPARSED = Extraction(reasoning=None, answer_text=None, unparsed=True)


def score_one(cfg: TaskConfig, meta: dict[str, Any], prediction: str) -> bool | None:
    """One submission record through the same official scorer the aggregate uses.
    None when the scorer leaves it out (MMSU wrong-format responses)."""
    rep = score_records(cfg, [{**meta, cfg.prediction_key: prediction}], invalid="exclude")
    return rep.items[0].correct if rep.items else None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def task_results(cfg: TaskConfig, samples: Iterable[SampleRecord | Mapping[str, Any]],
                 expected_items: int | None = None) -> TaskResults:
    samples = as_samples(samples)
    by_repeat: dict[int, list[SampleRecord]] = defaultdict(list)
    for s in samples:
        by_repeat[s.repeat].append(s)
    repeats = []
    reports: dict[int, ScoreReport] = {}
    outcomes: dict[str, dict[int, bool]] = {}  # item -> repeat -> the official verdict
    groups: dict[str, dict[str, str]] = {}  # breakdown field -> item -> category
    for r in sorted(by_repeat):
        group = by_repeat[r]
        if not cfg.answers_available:
            repeats.append(sample_counts(group) | {"repeat": r})
            continue
        # items the official scorer cannot score stay out of the denominator, counted as data errors
        scorable = sorted((s for s in group if not s.data_error), key=lambda s: s.index)
        report = score_records(cfg, submission_records(cfg, scorable, "extracted"), invalid="exclude")
        _collect_outcomes(report, scorable, r, outcomes, groups)
        raw = score_records(cfg, submission_records(cfg, scorable, "raw"), invalid="exclude")
        reports[r] = report
        counts = sample_counts(group)
        data_errors = counts.pop("data_error_items") + report.invalid
        repeats.append(
            {
                "repeat": r,
                "accuracy": report.accuracy,
                "correct": report.overall.correct,
                "total": report.overall.total,
                "accuracy_official_raw": raw.accuracy,
                "correct_official_raw": raw.overall.correct,
                "breakdowns": report.to_json()["breakdowns"],
                "official_lines": report.official_lines(),
                "invalid_records": report.invalid,
            }
            | counts
            | {"data_errors": len(data_errors), "data_error_items": data_errors}
        )
    out: dict[str, Any] = {
        "task": cfg.name,
        "task_version": cfg.version,
        "scorer": cfg.scorer,
        "answers_available": cfg.answers_available,
        "samples": len(samples),
        "items": len({s.id for s in samples}),
        "expected_items": expected_items,
        "repeats": repeats,
    }
    if cfg.answers_available and repeats:
        accs = [r["accuracy"] for r in repeats]
        raws = [r["accuracy_official_raw"] for r in repeats]
        out["accuracy_mean"], out["accuracy_std"] = _mean_std(accs)
        out["accuracy_official_raw_mean"], out["accuracy_official_raw_std"] = _mean_std(raws)
        if len(repeats) > 1:
            out |= _pass_and_vote(cfg, by_repeat)
        if outcomes:
            out |= _intervals(outcomes, groups, reports)
    out["complete"] = expected_items is None or all(
        len(by_repeat[r]) >= expected_items for r in by_repeat
    )
    return TaskResults.model_validate(out)


def _collect_outcomes(report: ScoreReport, scored: list[SampleRecord], repeat: int,
                      outcomes: dict[str, dict[int, bool]], groups: dict[str, dict[str, str]]) -> None:
    """The official scorer's verdict on each item it counted (items it leaves out, such as MMSU's
    wrong-format responses, are not in the accuracy, so not in its interval either), and each
    item's category in every breakdown table."""
    if all(it.index is not None for it in report.items):
        counted = [(scored[it.index], it.correct) for it in report.items]
    else:  # a plugin scorer that does not say which record an item is: the records' own verdicts
        counted = [(s, bool(s.correct)) for s in scored if s.correct is not None]
    for s, correct in counted:
        outcomes.setdefault(s.id, {})[repeat] = bool(correct)
        for field in report.breakdowns:
            value = (s.meta or {}).get(field)
            if isinstance(value, str):
                groups.setdefault(field, {})[s.id] = value


def _intervals(outcomes: dict[str, dict[int, bool]], groups: dict[str, dict[str, str]],
               reports: dict[int, ScoreReport]) -> dict[str, Any]:
    """The accuracy's 95% CI (percent) overall and per breakdown category, in the official tables'
    order, and the per-item verdicts they come from."""
    cats: dict[str, dict[str, AccuracyInterval]] = {}
    for field, by_item in groups.items():
        cis = grouped_accuracy_ci(outcomes, by_item)
        order = [k for rep in reports.values() for k in rep.breakdowns.get(field, {})]
        cats[field] = {k: AccuracyInterval.from_stats(cis[k]) for k in dict.fromkeys([*order, *cis]) if k in cis}
    return {"accuracy_ci": AccuracyInterval.from_stats(accuracy_ci(outcomes)), "categories_ci": cats,
            "item_outcomes": outcomes}


def _answer_key(s: SampleRecord) -> str | None:
    ext = s.extracted
    if s.error or ext is None or ext.unparsed or ext.ambiguous:
        return None
    if ext.matched_choice is not None:
        return f"#{ext.matched_choice}"
    return " ".join((ext.answer_text or "").casefold().split()) or None


def _pass_and_vote(cfg: TaskConfig, by_repeat: dict[int, list[SampleRecord]]) -> dict[str, Any]:
    per_item: dict[str, list[SampleRecord]] = defaultdict(list)
    for r in sorted(by_repeat):
        for s in by_repeat[r]:
            if not s.data_error:  # out of every denominator, like the accuracy's
                per_item[s.id].append(s)
    k = len(by_repeat)
    passed = voted = 0
    for runs in per_item.values():
        passed += any(s.correct for s in runs)
        keys = [_answer_key(s) for s in runs]
        counts = Counter(x for x in keys if x is not None)
        if not counts:
            continue  # every repeat unparsed or failed: no vote, wrong
        best = max(counts.values())
        # ties go to the answer given first, so the vote is deterministic
        winner = next(x for x in keys if x is not None and counts[x] == best)
        voted += bool(next(s for s, x in zip(runs, keys) if x == winner).correct)
    n = len(per_item)
    return {
        f"pass_at_{k}": passed / n * 100 if n else 0.0,
        "majority_vote_accuracy": voted / n * 100 if n else 0.0,
        "k": k,
    }


def fmt_mean_std(mean: float, std: float, k: int) -> str:
    return f"{mean:.2f}" if k <= 1 or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def compute_run_results(config: RunConfig | Mapping[str, Any] | None,
                        samples: Iterable[SampleRecord | Mapping[str, Any]]) -> RunResults:
    """Per-task results recomputed from the sample records (the latest per key), with the
    config and the records attached."""
    config = as_config(config)
    samples = [as_sample(s) for s in samples]
    by_task: dict[str, list[SampleRecord]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    tasks: dict[str, TaskResults] = {}
    for name, group in by_task.items():
        info = config.tasks.get(name)
        if info is not None and info.kind == "lm-eval":  # scored by lm-eval itself
            from dt_eval.integrations.lmeval.results import lm_eval_task_results

            tasks[name] = TaskResults.model_validate(lm_eval_task_results(name, group, info.to_json_dict()))
            continue
        cfg = run_task_config(name, config)  # as the run recorded it: custom tasks need no YAML here
        res = task_results(cfg, group, expected_items=info.items if info else None)
        tasks[name] = res.model_copy(update={"data_sha256": info.sha256 if info else None,
                                             "data_version_label": info.version_label if info else None,
                                             "benchmark_items": cfg.data.expected_items,
                                             "limit": info.limit if info else None})
    return RunResults(dt_eval_version=__version__, model=config.model, tasks=tasks, config=config, samples=samples)


def compute_results(config: RunConfig | Mapping[str, Any] | None,
                    samples: Iterable[SampleRecord | Mapping[str, Any]]) -> dict[str, Any]:
    """results.json: per-task aggregates recomputed from the sample records."""
    return compute_run_results(config, samples).to_json_dict()
