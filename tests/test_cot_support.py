"""Shared helpers of the tests/test_cot_*.py files (a fake judge on the fault server, stub
embedder, run-directory builder), plus checks of the helpers themselves.

FakeJudge answers the four judge prompts of dt_eval.reasoning with valid JSON unless told otherwise:
markers in the request text steer it -- `[[dims=a,b,c,d]]` (evaluator scores),
`[[supports=false]]`, `[[rubric=1,0,1,1,0]]`, and the fault server's tag
`[[id=X faults=a,b,...]]`, whose attempt counter is kept per (X, prompt kind) here, with two
extra actions: `badjson` (HTTP 200, a reply that is not the requested JSON) and `always:ACTION`
(that action for every further attempt).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from dt_eval.reasoning.types import CotInput, CotScore

from .fault_server import _TAG_RE, FaultServer, request_text

_CRIT = re.compile(r"^### Criterion: (.*)$", re.M)


def prompt_kind(text: str) -> str | None:
    if "## Evaluation Rubric & Scoring" in text:
        return "rubrics"
    if "logical_path_alignment" in text:
        return "evaluator"
    if '"supports"' in text:
        return "consistency"
    if "## Caption of the audio clip" in text:
        return "reference"
    return None


def _marker(text: str, name: str) -> str | None:
    m = re.search(r"\[\[" + name + r"=([^\]]*)\]\]", text)
    return m.group(1) if m else None


class FakeJudge(FaultServer):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._kind_attempts: dict[str, int] = {}

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.chat_requests():
            k = prompt_kind(r.text) or "model"
            out[k] = out.get(k, 0) + 1
        return out

    def _choose(self, n: int, body: dict[str, Any]) -> str:
        text = request_text(body) if body else ""
        m = _TAG_RE.search(text)
        if not m:
            return super()._choose(n, body)
        key = f"{m.group('id')}:{prompt_kind(text)}"
        with self._lock:
            k = self._kind_attempts.get(key, 0)
            self._kind_attempts[key] = k + 1
        faults = [f.strip() for f in (m.group("faults") or "").split(",") if f.strip()]
        for i, f in enumerate(faults):
            if f.startswith("always:") and k >= i:
                return f.split(":", 1)[1]
        return faults[k] if k < len(faults) else "ok"

    async def _act(self, action: str, request: web.Request, body: dict[str, Any], n: int) -> web.StreamResponse:
        if action == "badjson":
            return web.Response(body=self._reply_bytes(n, body, "Sure! I would rate this reasoning as quite good."),
                                content_type="application/json")
        return await super()._act(action, request, body, n)

    def _reply_bytes(self, n: int, body: dict[str, Any], content: str) -> bytes:
        out = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body.get("model"),
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
        return json.dumps(out).encode()

    def _ok_bytes(self, action: str, n: int, body: dict[str, Any] | None = None) -> bytes:
        text = request_text(body or {})
        kind = prompt_kind(text)
        if action != "ok" or kind is None:
            return super()._ok_bytes(action, n, body)
        return self._reply_bytes(n, body or {}, judge_reply(kind, text))


def judge_reply(kind: str, text: str) -> str:
    if kind == "evaluator":
        dims = [int(x) for x in (_marker(text, "dims") or "8,8,8,8").split(",")]
        keys = ["logical_path_alignment", "key_step_coverage", "reasoning_strategy_consistency", "analysis_depth"]
        return json.dumps(dict(zip(keys, dims)) | {"justification": "fake"})
    if kind == "consistency":
        return json.dumps({"supports": _marker(text, "supports") != "false", "justification": "fake"})
    if kind == "rubrics":
        names = _CRIT.findall(text)
        scores = [int(x) for x in (_marker(text, "rubric") or ",".join("1" * len(names))).split(",")]
        return "```json\n" + json.dumps([{"name": nm, "score": sc, "justification": "fake"}
                                         for nm, sc in zip(names, scores)]) + "\n```"
    if kind == "reference":
        ans = re.search(r"## Correct answer\n(.*)\n", text)
        return f"The clip's cues rule out the other options and point to {ans.group(1) if ans else '?'}."
    raise ValueError(kind)


class StubEmbedder:
    """Deterministic stand-in for Embedder: R_sim^emb = value from `[[emb=x]]` in the chain, else 0.5."""

    name = "stub"

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {"model": "stub"}

    async def score_batch(self, items: list[CotInput]) -> list[CotScore]:
        self.calls += 1
        out = []
        for it in items:
            if not (it.reference or "").strip():
                out.append(CotScore(id=it.id, scorer="embedding", version="stub", value=None,
                                    error="no reference chain"))
            elif not (it.reasoning or "").strip():
                out.append(CotScore(id=it.id, scorer="embedding", version="stub", value=0.0))
            else:
                v = float(_marker(it.reasoning, "emb") or 0.5)
                out.append(CotScore(id=it.id, scorer="embedding", version="stub", value=v,
                                    components={"cosine": v}))
        return out


def make_run_dir(run: Path, n: int = 6, task: str = "mmar", outputs: list[tuple[str | None, str]] | None = None,
                 seed: int = 0, records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A run directory as `dt-eval run` leaves it (config.json, samples.jsonl, results.json),
    built with the runner's own record maker. outputs[i] = (server reasoning or None, content);
    by default even items are answered correctly (with the option text) and odd ones wrongly.
    `records`: benchmark records to use instead of synthetic ones."""
    from dt_eval.backends.base import Generation
    from dt_eval.types import Item
    from dt_eval.storage.rundir import write_json_atomic
    from dt_eval.scoring.aggregate import compute_results
    from dt_eval.pipeline.records import make_sample_record
    from dt_eval.tasks.config import load_task

    from .synthetic_meta import mmar_records, mmau_records

    cfg = load_task(task)
    recs = records if records is not None else (mmar_records(n, seed) if task == "mmar" else mmau_records(n, seed))
    n = len(recs)
    run.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, rec in enumerate(recs):
        item = Item(id=rec["id"], question=rec["question"], choices=list(rec["choices"]), answer=rec["answer"],
                    audio=None, raw=rec, reference_thinking=rec.get("thinking"))
        if outputs is not None:
            reasoning, content = outputs[i]
        else:
            wrong = next((c for c in rec["choices"] if c != rec["answer"]), rec["answer"])
            reasoning = f"I listen to item {i} and weigh the cues carefully."
            content = rec["answer"] if i % 2 == 0 else wrong
        gen = Generation(key=f"{task}/{rec['id']}/0", text=content, reasoning=reasoning, finish_reason="stop")
        samples.append(make_sample_record(cfg, i, item, 0, gen, []))
    with open(run / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    config = {"identity": {"model": "fake-model"}, "tasks": {task: {"items": n, "sha256": "0" * 64}}}
    write_json_atomic(run / "config.json", config)
    write_json_atomic(run / "results.json", compute_results(config, samples))
    return samples


# -- checks of the helpers ------------------------------------------------------------------------


def test_fake_replies_parse_with_the_real_parsers():
    from dt_eval.reasoning import consistency, evaluator, rubrics

    rubric = [{"name": f"C{k}", "scoring_point": "p", "choices": [0, 1]} for k in range(5)]
    prompt = rubrics.build_user_prompt("q", "a", "t", "r [[rubric=1,0,1,1,0]]", "a", rubric)
    assert rubrics.parse_reply(judge_reply("rubrics", prompt), rubric) == 3 / 5
    assert evaluator.parse_reply(judge_reply("evaluator", "logical_path_alignment [[dims=10,5,0,5]]"))["value"] == 0.5
    assert consistency.parse_reply(judge_reply("consistency", '"supports" [[supports=false]]'))["value"] == 0.0


def test_make_run_dir(tmp_path):
    samples = make_run_dir(tmp_path / "run", n=4)
    assert [s["correct"] for s in samples] == [True, False, True, False]
    assert all(s["reasoning_text"] for s in samples)
