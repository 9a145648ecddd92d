"""verl's custom reward function, calling the recipe's reward (= dt-eval's scorers).

Point verl at this file (``custom_reward_function.path=<this file>``) and pick one entry:

``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict``
    verl's per-sample interface (``reward_model.reward_manager=naive``). Sync; safe inside and
    outside a running event loop.
``compute_score_async(...)``
    The same as a coroutine (verl's reward loop awaits coroutine functions).
``compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs) -> list[dict]``
    verl's batch interface (``reward_model.reward_manager=batch``). Recommended: it sees the G
    rollouts of a prompt together (grouped by ``extra_info["index"]``), so a judge failure gets the
    group's mean for that component -- zero advantage, as in the local trainer -- and too many
    failures raise (``max_failure_rate``), which stops the verl run.

Every call returns verl's documented dict: ``{"score": float, ...}``, where the other keys
(all numeric, one per sample, as verl's ``reward_extra_info`` needs) are the components
``acc``, ``fmt``, ``con``, ``sim`` (those of the stage; stage 2: ``acc``, ``sim``), the ungated
sub-scores ``sim_llm`` / ``sim_emb`` (-1.0 when not computed), and ``judge_failures``.
``score`` = sum of weight * component. For verl's GDPO estimator name the components in
``algorithm.gdpo_reward_keys``.

A failed component in the per-sample interface (which cannot see the group) scores
``failure_value`` (default 0.0) and is counted in ``judge_failures``: prefer the batch interface.

Settings (``custom_reward_function.reward_kwargs.*``, else environment, else defaults):
    stage            1 | 2 (default: extra_info["stage"], else $DT_RECIPE_STAGE, else 1)
    components       "acc,fmt,con,sim" (default: by stage)
    weights          {"acc": 1.0, ...}
    judge_url        $DT_RECIPE_JUDGE_URL (an OpenAI-compatible server, e.g. vLLM)
    judge_model      $DT_RECIPE_JUDGE_MODEL
    judge_cache      $DT_RECIPE_JUDGE_CACHE (SQLite path; default none)
    judge_max_tokens 1024, judge_concurrency 32, judge_timeout_s 120
    embedder         $DT_RECIPE_EMBEDDER (sentence-transformers model; default offline MiniLM)
    hybrid_w         0.5;  format_style "any" (the paper's format: "reasoning")
    task             "mmar": the dt-eval task whose extraction and official scorer decide R_acc ("mmsu": letters)
    max_failure_rate 0.2 (batch interface; over one batch, once >= 8 completions were judged)
    failure_value    0.0 (per-sample interface)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import Any

COMPONENTS_BY_STAGE = {1: ("acc", "fmt", "con", "sim"), 2: ("acc", "sim")}

_LOCK = threading.Lock()
_REWARDS: dict[tuple[Any, ...], Any] = {}


class JudgeFailureRateExceeded(RuntimeError):
    pass


def _settings(kwargs: dict[str, Any], extra_info: dict[str, Any] | None) -> dict[str, Any]:
    ei = extra_info or {}
    stage = int(kwargs.get("stage") or ei.get("stage") or os.environ.get("DT_RECIPE_STAGE") or 1)
    comps = kwargs.get("components") or COMPONENTS_BY_STAGE[stage]
    if isinstance(comps, str):
        comps = [c.strip() for c in comps.split(",") if c.strip()]
    return {
        "stage": stage,
        "components": tuple(comps),
        "weights": dict(kwargs.get("weights") or {}),
        "judge_url": kwargs.get("judge_url") or os.environ.get("DT_RECIPE_JUDGE_URL"),
        "judge_model": kwargs.get("judge_model") or os.environ.get("DT_RECIPE_JUDGE_MODEL") or "judge",
        "judge_cache": kwargs.get("judge_cache") or os.environ.get("DT_RECIPE_JUDGE_CACHE"),
        "judge_max_tokens": int(kwargs.get("judge_max_tokens", 1024)),
        "judge_concurrency": int(kwargs.get("judge_concurrency", 32)),
        "judge_timeout_s": float(kwargs.get("judge_timeout_s", 120.0)),
        "judge_max_retries": int(kwargs.get("judge_max_retries", 3)),
        "judge_parse_retries": int(kwargs.get("judge_parse_retries", 1)),
        "embedder": kwargs.get("embedder") or os.environ.get("DT_RECIPE_EMBEDDER"),
        "hybrid_w": float(kwargs.get("hybrid_w", 0.5)),
        "format_style": kwargs.get("format_style", "any"),
        "task": kwargs.get("task", "mmar"),
        "labels": ei.get("labels") or "ABCDEFGHIJ",
        "max_failure_rate": float(kwargs.get("max_failure_rate", 0.2)),
        "failure_value": float(kwargs.get("failure_value", 0.0)),
    }


def _reward(s: dict[str, Any], flavour: str) -> Any:
    """One RecipeReward per settings and calling style (sync calls use the reward's own loop
    thread; async calls use the caller's loop), built once per process."""
    from dt_eval.reasoning.judge import JudgeConfig

    from ..rewards import RecipeReward

    key = (flavour, s["stage"], s["components"], s["judge_url"], s["judge_model"], s["judge_cache"], s["embedder"],
           s["hybrid_w"], s["format_style"], s["labels"], s["task"],
           id(asyncio.get_running_loop()) if flavour == "async" else None)
    with _LOCK:
        r = _REWARDS.get(key)
        if r is None:
            needs_judge = "con" in s["components"] or "sim" in s["components"]
            jc = None
            if needs_judge:
                if not s["judge_url"]:
                    raise ValueError("components con/sim need judge_url (reward_kwargs) or $DT_RECIPE_JUDGE_URL")
                jc = JudgeConfig(base_url=s["judge_url"], model=s["judge_model"], max_tokens=s["judge_max_tokens"],
                                 concurrency=s["judge_concurrency"], timeout_s=s["judge_timeout_s"],
                                 max_retries=s["judge_max_retries"], parse_retries=s["judge_parse_retries"],
                                 cache_path=s["judge_cache"])
            r = RecipeReward(s["components"], s["stage"], hybrid_w=s["hybrid_w"], format_style=s["format_style"],
                             labels=s["labels"], task=s["task"], judge_config=jc, embedder_name=s["embedder"])
            _REWARDS[key] = r
        return r


def _item(ground_truth: Any, extra_info: dict[str, Any] | None) -> Any:
    from ..rewards import ScoreItem

    ei = extra_info or {}
    choices = ei.get("choices")
    if choices is None:
        raise ValueError("extra_info needs 'choices' (export with `dt-recipe export-verl`)")
    ref = ei.get("reference") or None
    return ScoreItem(id=str(ei.get("id", ei.get("index", ""))), question=str(ei.get("question", "")),
                     choices=[str(c) for c in list(choices)], answer=str(ground_truth), reference=ref)


def _to_dicts(rb: Any, s: dict[str, Any], filled: dict[str, list[float]] | None = None) -> list[dict[str, Any]]:
    out = []
    n = len(rb.details)
    for i in range(n):
        d: dict[str, Any] = {}
        total = 0.0
        fails = 0
        for c in rb.components:
            v = filled[c][i] if filled is not None else rb.values[c][i]
            if v is None:
                v = s["failure_value"]
            fails += int(rb.failed[c][i])
            d[c] = float(v)
            total += float(s["weights"].get(c, 1.0)) * float(v)
        if "sim" in rb.components:
            d["sim_llm"] = float(rb.details[i].get("sim_llm", -1.0))
            if s["stage"] == 1:
                d["sim_emb"] = float(rb.details[i].get("sim_emb", -1.0))
        d["judge_failures"] = fails
        out.append({"score": total, **d})
    return out


# -- verl entry points ---------------------------------------------------------------------------


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    s = _settings(kwargs, extra_info)
    rb = _reward(s, "sync").score([_item(ground_truth, extra_info)], [solution_str])
    return _to_dicts(rb, s)[0]


async def compute_score_async(data_source: str, solution_str: str, ground_truth: Any,
                              extra_info: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    s = _settings(kwargs, extra_info)
    rb = await _reward(s, "async").ascore([_item(ground_truth, extra_info)], [solution_str])
    return _to_dicts(rb, s)[0]


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[dict[str, Any] | None], **kwargs: Any) -> list[dict[str, Any]]:
    from ..algo import fill_failed

    if not solution_strs:
        return []
    extra_infos = list(extra_infos)
    s = _settings(kwargs, extra_infos[0])
    items = [_item(gt, ei) for gt, ei in zip(ground_truths, extra_infos)]
    rb = _reward(s, "sync").score(items, list(solution_strs))
    # the G rollouts of one prompt share extra_info["index"] (and the item id)
    keys = [((ei or {}).get("index"), it.id) for ei, it in zip(extra_infos, items)]
    gid = {k: n for n, k in enumerate(dict.fromkeys(keys))}
    groups = [gid[k] for k in keys]
    filled = {c: list(fill_failed(rb.values[c], groups)[0]) for c in rb.components}
    fails, judged = rb.failures(), rb.judged_count()
    if judged >= 8 and fails / judged > s["max_failure_rate"]:
        raise JudgeFailureRateExceeded(f"judge failures {fails}/{judged} in this batch exceed "
                                       f"max_failure_rate={s['max_failure_rate']}")
    return _to_dicts(rb, s, filled)


def close_all() -> None:
    """Close judge clients and loop threads (tests; verl workers just exit)."""
    with _LOCK:
        rewards = list(_REWARDS.items())
        _REWARDS.clear()
    for (flavour, *_), r in rewards:
        if flavour == "sync":
            r.close()
