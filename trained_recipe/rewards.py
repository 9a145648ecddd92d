"""The RL reward: the same scorers `dt-eval` evaluates with (one implementation, two callers).

Components (each in [0, 1]):

- ``acc``  R_acc: the task-aware answer extraction and official scorer of a dt-eval task
  (``reward.task``; :func:`dt_eval.scoring.submission.task_extract`, ``extracted_prediction`` and
  :func:`dt_eval.scoring.aggregate.score_one`) -- exactly how a ``dt-eval run`` sample of that task gets
  ``correct``: MMAU/MMAR's token match, or MMSU's letter rule (an answer that names no option is
  wrong; one MMSU's scorer would skip scores 0 here).
- ``fmt``  R_fmt: :mod:`dt_eval.reasoning.format` (one reasoning block, then a non-empty answer).
- ``con``  R_con: :mod:`dt_eval.reasoning.consistency` (LLM judge: does the reasoning support the answer).
- ``sim``  stage 1: :mod:`dt_eval.reasoning.hybrid` stage 1 = R_acc * (w * R_sim^LLM + (1 - w) * R_sim^emb);
           stage 2: :mod:`dt_eval.reasoning.hybrid` stage 2 = R_acc * R_sim^LLM (no embedding term, and no
           embedder is ever built). A correct answer with an empty reasoning block scores 0 without
           a judge call.

A component that could not be scored because the judge failed (or the embedder did) is ``None``
in :attr:`RewardBatch.values` and flagged in :attr:`RewardBatch.failed`; the trainer replaces it
by the group's mean for that component (zero advantage) and counts it. An item without a
reference chain scores ``sim = 0`` for every completion of its group (a constant: no advantage)
and is counted in ``sim_no_reference``, not as a judge failure.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from dt_eval.reasoning import consistency as _consistency
from dt_eval.reasoning import format as _format
from dt_eval.reasoning import hybrid as _hybrid
from dt_eval.reasoning.types import CotInput
from dt_eval.scoring.aggregate import score_one
from dt_eval.scoring.registry import task_scorer
from dt_eval.scoring.submission import extracted_prediction, task_extract
from dt_eval.tasks.config import TaskConfig, UnknownTaskError, load_task

T = TypeVar("T")


@dataclass
class ScoreItem:
    """What the reward needs to know about one prompt."""

    id: str
    question: str
    choices: list[str]
    answer: str
    reference: str | None = None


@dataclass
class RewardBatch:
    components: list[str]
    values: dict[str, list[float | None]]  # component -> one value per completion (None: failed)
    failed: dict[str, list[bool]]  # component -> judge/embedder failure per completion
    judged: dict[str, list[bool]]  # component -> a judge call was needed for this completion
    details: list[dict[str, Any]] = field(default_factory=list)  # per completion: extraction, sub-scores
    counts: dict[str, int] = field(default_factory=dict)

    def failures(self) -> int:
        return sum(sum(v) for v in self.failed.values())

    def judged_count(self) -> int:
        return sum(sum(v) for v in self.judged.values())


@lru_cache(maxsize=None)
def acc_task(task: str = "mmar", labels: str = "ABCDEFGHIJ") -> TaskConfig:
    """The dt-eval task whose extraction and official scorer decide R_acc, with the recipe's option
    labels (those its prompt shows) and without breakdown tables (a training item has no modality)."""
    try:
        cfg = load_task(task)
    except UnknownTaskError as e:
        raise ValueError(f"R_acc task: {e}") from None
    if not cfg.answers_available:
        raise ValueError(f"R_acc task {task!r} has hidden answers; it needs a scored task (e.g. mmar, mmsu)")
    try:
        task_scorer(cfg).check_labels(cfg, labels)
    except ValueError as e:
        raise ValueError(f"R_acc {e}") from None
    return cfg.model_copy(update={"breakdowns": [], "prompt": cfg.prompt.model_copy(update={"labels": labels})})


def official_record(cfg: TaskConfig, choices: Sequence[str], answer: str) -> dict[str, Any]:
    """A training item in the task's metadata schema, as its official scorer reads it."""
    return task_scorer(cfg).item_record(cfg, choices, answer)


def correctness(text: str, choices: Sequence[str], answer: str, labels: str = "ABCDEFGHIJ",
                task: str = "mmar") -> tuple[bool, Any]:
    """R_acc exactly as a `dt-eval run` of `task` decides `correct`: the task-aware extraction,
    then the task's official scorer on the extracted prediction (MMSU: a skipped reply is wrong)."""
    cfg = acc_task(task, labels)
    ext = task_extract(cfg, text, list(choices))
    ok = score_one(cfg, official_record(cfg, choices, answer), extracted_prediction(cfg, ext))
    return bool(ok), ext


class _LoopThread:
    """A private asyncio loop in a daemon thread: sync callers (the trainer, verl's sync reward
    path) run the async scorers on it whether or not their own thread has a running loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dt-recipe-reward-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class RecipeReward:
    """Batched reward computation. Use :meth:`score` (sync) or :meth:`ascore` (async, on the
    caller's loop). Judge client and embedder are built lazily, once."""

    def __init__(self, components: Sequence[str], stage: int = 1, *, hybrid_w: float = 0.5,
                 format_style: str = "any", open_tag_in_prompt: bool = False, labels: str = "ABCDEFGHIJ",
                 task: str = "mmar", judge: Any = None, judge_config: Any = None, embedder: Any = None,
                 embedder_name: str | None = None):
        self.components = list(components)
        self.stage = int(stage)
        self.hybrid_w = hybrid_w
        self.format_style = format_style
        self.open_tag_in_prompt = open_tag_in_prompt
        self.labels = labels
        self.task = task
        acc_task(task, labels)  # an unknown task or unusable labels fail here, not mid-training
        self._judge = judge
        self._judge_config = judge_config  # dt_eval.reasoning.judge.JudgeConfig
        self._embedder = embedder
        self._embedder_name = embedder_name
        self._loop: _LoopThread | None = None
        self._loop_lock = threading.Lock()
        self._own_judge = judge is None
        needs_judge = "con" in self.components or "sim" in self.components
        if needs_judge and judge is None and judge_config is None:
            raise ValueError("reward components con/sim need a judge endpoint (reward.judge.url)")

    # -- resources -----------------------------------------------------------------------------

    def embedder(self) -> Any:
        if self._embedder is None:
            from dt_eval.reasoning.embedding import Embedder

            self._embedder = Embedder(self._embedder_name)
        return self._embedder

    async def _get_judge(self) -> Any:
        if self._judge is None and self._judge_config is not None:
            from dt_eval.reasoning.judge import JudgeClient

            self._judge = JudgeClient(self._judge_config)
        return self._judge

    def judge_stats(self) -> dict[str, int]:
        j = self._judge
        if j is None:
            return {"requests": 0, "cache_hits": 0, "failures": 0}
        return {"requests": j.requests_sent, "cache_hits": j.cache_hits, "failures": j.failures}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"components": self.components, "stage": self.stage, "format_style": self.format_style,
                               "acc_task": self.task}
        if "sim" in self.components:
            out["sim"] = {"stage": self.stage, "w_llm": self.hybrid_w if self.stage == 1 else 1.0}
        if self._judge_config is not None:
            out["judge"] = self._judge_config.describe()
        return out

    # -- scoring -------------------------------------------------------------------------------

    def score(self, items: Sequence[ScoreItem], texts: Sequence[str]) -> RewardBatch:
        """Sync entry (thread-safe: verl calls it from executor threads)."""
        with self._loop_lock:
            if self._loop is None:
                self._loop = _LoopThread()
            loop = self._loop
        return loop.run(self.ascore(items, texts))

    async def ascore(self, items: Sequence[ScoreItem], texts: Sequence[str]) -> RewardBatch:
        """One reward per component for each (item, completion text) pair (same length lists)."""
        if len(items) != len(texts):
            raise ValueError("items and texts differ in length")
        n = len(texts)
        comps = self.components
        values: dict[str, list[float | None]] = {c: [0.0] * n for c in comps}
        failed = {c: [False] * n for c in comps}
        judged = {c: [False] * n for c in comps}
        details: list[dict[str, Any]] = [{} for _ in range(n)]
        counts = {"sim_no_reference": 0, "truncated": 0, "unparsed": 0}
        cot: list[CotInput] = []
        accs = []
        for i, (it, text) in enumerate(zip(items, texts)):
            ok, ext = correctness(text, it.choices, it.answer, self.labels, self.task)
            accs.append(ok)
            counts["truncated"] += int(ext.truncated)
            counts["unparsed"] += int(ext.unparsed)
            details[i].update(correct=ok, answer=ext.answer_text, reasoning_chars=len(ext.reasoning or ""))
            cot.append(CotInput(id=it.id, question=it.question, choices=list(it.choices), answer=it.answer,
                                reasoning=ext.reasoning, prediction=ext.answer_text, correct=ok,
                                reference=it.reference, output=text))
        if "acc" in comps:
            values["acc"] = [1.0 if a else 0.0 for a in accs]
        if "fmt" in comps:
            for i, s in enumerate(await _format.score_batch(cot, self.format_style, self.open_tag_in_prompt)):
                values["fmt"][i] = s.value
                details[i]["fmt_reason"] = s.components.get("reason")
        jobs = []
        judge = await self._get_judge() if ("con" in comps or "sim" in comps) else None
        if "con" in comps:
            jobs.append(("con", _consistency.score_batch(cot, judge)))
        if "sim" in comps:
            cfg = _hybrid.HybridConfig(w=self.hybrid_w, stage=self.stage)
            emb = self.embedder() if self.stage == 1 else None
            jobs.append(("sim", _hybrid.score_batch(cot, judge, emb, cfg)))
        results = await asyncio.gather(*(j for _, j in jobs))
        for (name, _), scores in zip(jobs, results):
            for i, s in enumerate(scores):
                if name == "con":
                    judged["con"][i] = s.value is None or "reason" not in s.components
                    values["con"][i] = s.value
                    failed["con"][i] = s.value is None
                    if s.value is None:
                        details[i]["con_error"] = s.error
                    continue
                comp = s.components
                has_ref = bool((items[i].reference or "").strip())
                if self.stage == 1 and comp.get("emb") is not None:
                    details[i]["sim_emb"] = comp["emb"]
                if comp.get("llm") is not None:
                    details[i]["sim_llm"] = comp["llm"]
                if accs[i] and not has_ref:
                    values["sim"][i] = 0.0
                    counts["sim_no_reference"] += 1
                    continue
                judged["sim"][i] = bool(accs[i]) and bool((cot[i].reasoning or "").strip())  # empty: no call
                values["sim"][i] = s.value
                failed["sim"][i] = s.value is None
                if s.value is None:
                    details[i]["sim_error"] = s.error
        return RewardBatch(components=comps, values=values, failed=failed, judged=judged, details=details,
                           counts=counts)

    # -- cleanup -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._judge is not None and self._own_judge:
            await self._judge.aclose()
            self._judge = None

    def close(self) -> None:
        if self._loop is not None:
            try:
                self._loop.run(self.aclose())
            finally:
                self._loop.stop()
                self._loop = None


def judge_config_from(settings: Any, output_dir: str | Path | None = None) -> Any:
    """dt_eval.reasoning.judge.JudgeConfig from the recipe's `reward.judge` settings (None without a URL)."""
    from dt_eval.reasoning.judge import JudgeConfig

    if not settings.url:
        return None
    cache = settings.cache
    if cache == "auto":
        cache = str(Path(output_dir) / "judge_cache.sqlite") if output_dir else None
    return JudgeConfig(base_url=settings.url, model=settings.model, temperature=settings.temperature,
                       seed=settings.seed, max_tokens=settings.max_tokens, concurrency=settings.concurrency,
                       timeout_s=settings.timeout_s, max_retries=settings.max_retries,
                       parse_retries=settings.parse_retries, extra_body=dict(settings.extra_body), cache_path=cache)


def from_config(cfg: Any, judge: Any = None, embedder: Any = None) -> RecipeReward:
    """A RecipeReward for a RecipeConfig (trained_recipe.config)."""
    jc = judge_config_from(cfg.reward.judge, cfg.output_dir) if cfg.needs_judge and judge is None else None
    if cfg.needs_judge and judge is None and jc is None:
        raise ValueError(f"reward components {cfg.components} need reward.judge.url (an OpenAI-compatible endpoint)")
    return RecipeReward(cfg.components, cfg.stage, hybrid_w=cfg.reward.hybrid_w, format_style=cfg.reward.format_style,
                        open_tag_in_prompt=cfg.reward.open_tag_in_prompt, labels=cfg.prompt.labels,
                        task=cfg.reward.task, judge=judge,
                        judge_config=jc, embedder=embedder, embedder_name=cfg.reward.embedder)
