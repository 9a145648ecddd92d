"""``dt-eval run --tasks lm-eval:NAME``: an lm-eval task through ``simple_evaluate``, recorded in
our run directory like the audio tasks.

Each generation is appended to samples.jsonl the moment it finishes (reasoning included), so a
crash loses only in-flight requests and a rerun asks the server only for what is missing; after
lm-eval scores the task, the records are appended again with their per-sample metrics (the
latest record of a key wins) and config.json keeps lm-eval's reported numbers.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.integrations.lmeval import lm_eval_name
from dt_eval.pipeline.extract import split_reasoning
from dt_eval.records import (
    LM_EVAL,
    SCHEMA_VERSION,
    ExtractedAnswer,
    SampleRecord,
    TaskInfo,
)
from dt_eval.tasks.prompts import prompt_text
from dt_eval.types import Generation
from dt_eval.util.hashing import sha256_text


class LMEvalTaskError(DtEvalError, RuntimeError):
    pass


def check_lm_eval_tasks(names: list[str], include_path: str | None) -> None:
    """Fail before any inference when lm-eval is missing or a task name is unknown."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LMEvalTaskError("lm-eval tasks need lm-eval: pip install 'dt-eval[lm-eval]'") from None
    tm = TaskManager(include_path=include_path)
    wanted = [lm_eval_name(n) for n in names]
    found = set(tm.match_tasks(wanted))
    missing = [w for w in wanted if w not in found]
    if missing:
        raise LMEvalTaskError(f"lm-eval has no task named {', '.join(missing)} (see `lm-eval ls tasks`"
                              + (f"; include path {include_path}" if include_path else "") + ")")


def _json_safe(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


class Recorder:
    """Writes each generation of one lm-eval task to the run directory; answers resumed ones."""

    def __init__(self, name: str, rundir: Any, done: dict[str, SampleRecord], retry_errors: bool) -> None:
        self.name, self.rundir, self.done, self.retry_errors = name, rundir, done, retry_errors
        self.records: dict[str, SampleRecord] = {}
        self.resumed = 0

    def key(self, inst: Any, repeat: int) -> str:
        return f"{self.name}/{inst.task_name}/{inst.doc_id}/{inst.idx}/{repeat}"

    @staticmethod
    def request_sha(prep: Any) -> str:
        """What the model is asked (text, sampling, audio references): a changed task never
        reuses an old answer."""
        req = prep.request
        body = {"until": prep.until, "error": prep.error}
        if req is not None:
            body |= {"messages": req.messages, "sampling": req.sampling.to_dict(),
                     "kwargs": req.chat_template_kwargs, "audio": [len(a.array) for a in req.audio]}
        return sha256_text(json.dumps(body, sort_keys=True, default=str))

    def lookup(self, inst: Any, repeat: int, prep: Any) -> Generation | None:
        key = self.key(inst, repeat)
        rec = self.done.get(key)
        if rec is None or rec.request_sha != self.request_sha(prep):
            return None
        if rec.error and self.retry_errors:
            return None
        self.records[key] = rec
        self.resumed += 1
        return Generation(key=key, text=rec.output or "", reasoning=rec.reasoning,
                          finish_reason=rec.finish_reason, error=rec.error)

    def store(self, inst: Any, repeat: int, prep: Any, gen: Generation, returned: str) -> None:
        key = self.key(inst, repeat)
        reasoning, _, truncated = split_reasoning(gen.text or "", gen.reasoning)
        rec = SampleRecord(
            schema_version=SCHEMA_VERSION,
            key=key,
            task=self.name,
            kind=LM_EVAL,
            subtask=inst.task_name,
            id=f"{inst.task_name}/{inst.doc_id}",
            index=inst.doc_id,
            repeat=repeat,
            meta=None,
            audio=None,
            prompt=prompt_text(prep.request.messages) if prep.request is not None else None,
            task_gen_kwargs=_json_safe(prep.task_gen_kwargs),
            request_sha=self.request_sha(prep),
            output=gen.text,
            reasoning=gen.reasoning,
            reasoning_text=None if gen.error else reasoning,
            returned=returned,  # what lm-eval's filters saw: the answer without reasoning
            extracted=ExtractedAnswer(truncated=bool(truncated and not gen.error), unparsed=False),
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            latency_s=gen.latency_s,
            error=gen.error,
            warnings=prep.warnings or [],
            backend_info=gen.backend_info,
            time=time.time(),
            metrics=None,
            target=None,
            correct=None,
        )
        self.rundir.append([rec])
        self.records[key] = rec


def primary_metric(reported: dict[str, Any]) -> str | None:
    from dt_eval.integrations.lmeval.results import metric_keys

    keys = metric_keys(reported)
    return keys[0] if keys else None


def scored_records(recorder: Recorder, samples: dict[str, list[dict[str, Any]]], primary: str | None
                   ) -> list[SampleRecord]:
    """The generation records again, with lm-eval's per-sample metrics and target."""
    per_doc: dict[tuple[str, int], dict[str, Any]] = {}
    targets: dict[tuple[str, int], Any] = {}
    for subtask, entries in samples.items():
        for s in entries:
            flt = s.get("filter", "none")
            d = per_doc.setdefault((subtask, s["doc_id"]), {})
            for m in s.get("metrics") or []:
                if m in s:
                    d[f"{m},{flt}"] = s[m]
            targets[(subtask, s["doc_id"])] = s.get("target")
    out = []
    for rec in recorder.records.values():
        metrics = per_doc.get((rec.subtask, rec.index))
        if metrics is None:
            continue
        value = metrics.get(primary) if primary else None
        correct = bool(value) if isinstance(value, (bool, int, float)) and float(value) in (0.0, 1.0) else None
        out.append(rec.model_copy(update={"metrics": _json_safe(metrics),
                                          "target": _json_safe(targets.get((rec.subtask, rec.index))),
                                          "correct": correct, "time": time.time()}))
    return out


def _aggregations(configs: dict[str, Any]) -> dict[str, str]:
    """metric,filter -> aggregation name, where every subtask's config names the same one."""
    out: dict[str, str] = {}
    for cfg in (configs or {}).values():
        filters = [f.get("name", "none") for f in cfg.get("filter_list") or []] or ["none"]
        for m in cfg.get("metric_list") or []:
            agg = m.get("aggregation")
            for flt in filters:
                key = f"{m.get('metric')},{flt}"
                name = agg if isinstance(agg, str) else None
                if key in out and out[key] != name:
                    name = None
                out[key] = name
    return {k: v for k, v in out.items() if v}


async def run_lm_eval_task(runner: Any, name: str, done: dict[str, SampleRecord]) -> None:
    from lm_eval import __version__ as lm_eval_version
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from dt_eval.integrations.lmeval.model import DtAudioLM

    opts = runner.opts
    lm_name = lm_eval_name(name)
    recorder = Recorder(name, runner.rundir, done, opts.retry_errors)
    loop = asyncio.get_running_loop()
    lm = DtAudioLM(backend=runner.backend, options=opts, loop=loop, recorder=recorder)
    runner.say(f"{name}: running lm-eval's task {lm_name!r} (lm-eval {lm_eval_version})")
    evaluate = partial(
        simple_evaluate, model=lm, tasks=[lm_name], task_manager=TaskManager(include_path=opts.lm_eval_include_path),
        limit=opts.limit, log_samples=True, apply_chat_template=True, random_seed=opts.seed,
        numpy_random_seed=opts.seed, torch_random_seed=opts.seed, fewshot_random_seed=opts.seed,
    )
    try:
        results = await loop.run_in_executor(None, evaluate)
    except Exception as e:  # generations are saved; a rerun resumes them
        raise LMEvalTaskError(f"{name}: lm-eval failed: {type(e).__name__}: {e}") from e
    if recorder.resumed:
        runner.say(f"{name}: {recorder.resumed} generation(s) reused from the run directory")
    reported = (results or {}).get("results") or {}
    primary = primary_metric(reported.get(lm_name) or {})
    runner.rundir.append(scored_records(recorder, (results or {}).get("samples") or {}, primary))
    config = runner.rundir.read_config()
    docs = {rec.id for rec in recorder.records.values()}
    info = TaskInfo.model_validate(_json_safe({
        "kind": "lm-eval",
        "task": name,
        "lm_eval_task": lm_name,
        "lm_eval_version": lm_eval_version,
        "include_path": opts.lm_eval_include_path,
        "versions": results.get("versions"),
        "n_shot": results.get("n-shot"),
        "limit": opts.limit,
        "repeats": 1,
        "items": len(docs),
        "sha256": None,
        "version_label": None,
        "reported": reported,
        "higher_is_better": results.get("higher_is_better"),
        "aggregation": _aggregations(results.get("configs") or {}),
        "primary_metric": primary,
        "chat_template": True,
    }))
    runner.rundir.write_config(config.model_copy(update={"tasks": {**config.tasks, name: info}}))
