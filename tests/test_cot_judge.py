"""The judge client against a fault-injecting server: retries, unscored accounting (malformed
JSON, timeouts, 500s), the SQLite cache (a rescore makes zero judge calls), concurrency limit,
and API keys that never reach results or errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from dt_eval.reasoning import evaluator, rubrics
from dt_eval.reasoning.judge import JudgeCache, JudgeCall, JudgeClient, JudgeConfig
from dt_eval.reasoning.types import CotInput

from .test_cot_support import FakeJudge

pytestmark = pytest.mark.slow  # servers on 127.0.0.1 (threads; no model)

SECRET = "sk-test-SECRET-0123456789"


def cfg(srv, tmp_path=None, **kw):
    base = dict(base_url=srv.url, model="fake-judge", timeout_s=5, max_retries=2, parse_retries=2, backoff_s=0.01,
                concurrency=8, cache_path=(tmp_path / "cache.sqlite") if tmp_path else None)
    return JudgeConfig(**(base | kw))


def ev_item(i, faults="", correct=True):
    tag = f" [[id=e{i} faults={faults}]]" if faults else ""
    return CotInput(id=f"t/{i}", question=f"question {i}", choices=["a", "b"], answer="a",
                    reasoning=f"reasoning {i}{tag} [[dims=4,6,8,{i % 11}]]", prediction="a", correct=correct,
                    reference="the reference chain")


async def score(config, items):
    async with JudgeClient(config) as judge:
        return await evaluator.score_batch(items, judge), judge.requests_sent


def test_retries_then_scores_and_unscored_accounting(tmp_path):
    faults = {0: "", 1: "500,503", 2: "badjson", 3: "always:badjson", 4: "malformed,no_choices",
              5: "always:500", 6: "timeout,timeout,timeout", 7: "badjson,500,badjson", 8: "drop", 9: "429"}
    items = [ev_item(i, faults[i]) for i in range(10)]
    with FakeJudge(hang_s=30) as srv:
        scores, sent = asyncio.run(score(cfg(srv, timeout_s=1.0), items))
        by = {s.id: s for s in scores}
        ok = {0, 1, 2, 4, 7, 8, 9}
        assert {int(k.split("/")[1]) for k, s in by.items() if s.value is not None} == ok
        for i in ok:
            assert by[f"t/{i}"].value == pytest.approx((4 + 6 + 8 + i % 11) / 40)
        # HTTP-level faults are retried by the transport: 1 + 2 retries
        assert by["t/1"].judge_calls == 3 and by["t/1"].raw and len(by["t/1"].raw) == 1
        # a reply that does not parse is asked again: raw keeps both replies, the good one last
        assert len(by["t/2"].raw) == 2 and by["t/2"].judge_calls == 2
        assert by["t/7"].judge_calls == 4 and len(by["t/7"].raw) == 3  # badjson, (500 -> ok), badjson, ok
        # never parseable: 1 + parse_retries replies, then unscored with every raw reply kept
        s3 = by["t/3"]
        assert s3.value is None and "unparseable" in s3.error and len(s3.raw) == 3 and s3.judge_calls == 3
        assert all("rate this reasoning" in r for r in s3.raw)
        # transport gives up (max_retries=2): unscored, no parse retry on top
        s5 = by["t/5"]
        assert s5.value is None and "500" in s5.error and s5.judge_calls == 3 and s5.raw == []
        s6 = by["t/6"]
        assert s6.value is None and "timeout" in s6.error and s6.judge_calls == 3
        assert sent == sum(s.judge_calls for s in scores) == len(srv.chat_requests())
        assert sum(1 for s in scores if s.value is None) == 3


def test_cache_rescore_makes_zero_calls(tmp_path):
    items = [ev_item(i, "badjson" if i == 1 else "") for i in range(6)] + [ev_item(9, "always:badjson")]
    with FakeJudge() as srv:
        first, sent1 = asyncio.run(score(cfg(srv, tmp_path), items))
        n1 = len(srv.chat_requests())
        assert sent1 == n1 == 6 + 1 + 3
        cache = JudgeCache(tmp_path / "cache.sqlite")
        assert len(cache) == 6  # only accepted replies are cached
        cache.close()
        second, sent2 = asyncio.run(score(cfg(srv, tmp_path, parse_retries=0), items[:6]))
        assert sent2 == 0 and len(srv.chat_requests()) == n1
        assert [s.value for s in second] == [s.value for s in first[:6]]
        assert all(s.cached and s.judge_calls == 0 for s in second)
        # a changed chain, prompt version or judge model misses the cache
        changed = [ev_item(0)]
        changed[0].reasoning += " (edited)"
        _, sent3 = asyncio.run(score(cfg(srv, tmp_path), changed))
        _, sent4 = asyncio.run(score(cfg(srv, tmp_path, model="other-judge"), items[:1]))
        assert sent3 == 1 and sent4 == 1


def test_rubric_raters_cached_separately(tmp_path):
    rubric = [{"name": f"C{k}", "scoring_point": "p", "choices": [0, 1]} for k in range(5)]
    it = CotInput(id="mmar/x", question="q", choices=["a", "b"], answer="a", reasoning="r [[rubric=1,1,0,1,1]]",
                  prediction="a", reference="ideal", rubric=rubric)

    async def go(config):
        async with JudgeClient(config) as judge:
            return await rubrics.score_batch([it], judge), judge.requests_sent

    with FakeJudge() as srv:
        [s], sent = asyncio.run(go(cfg(srv, tmp_path)))
        assert s.value == pytest.approx(0.8) and sent == 5
        assert [r["rater"] for r in s.components["raters"]] == [0, 1, 2, 3, 4]
        [s2], sent2 = asyncio.run(go(cfg(srv, tmp_path)))
        assert sent2 == 0 and s2.cached and s2.value == s.value
    cache = JudgeCache(tmp_path / "cache.sqlite")
    assert len(cache) == 5
    cache.close()


def rubric_item(tag: str, faults: str) -> CotInput:
    rubric = [{"name": f"C{k}", "scoring_point": "p", "choices": [0, 1]} for k in range(5)]
    return CotInput(id=f"mmar/{tag}", question="q", choices=["a", "b"], answer="a", prediction="a",
                    reasoning=f"r [[rubric=1,1,0,1,1]] [[id={tag} faults={faults}]]", reference="ideal", rubric=rubric)


def test_rubrics_retry_budget_is_the_official_20_per_rater():
    """The official scorer gives each rater 20 requests for a parseable reply; with fewer, items it
    scores are left unscored (a different score over a different denominator)."""

    async def go(config, items, rubrics_config=None):
        async with JudgeClient(config) as judge:
            return await rubrics.score_batch(items, judge, rubrics_config), judge.requests_sent

    # 19 unparseable replies shared by the 5 raters (the prompt is the same for all), then good ones:
    # within 20 requests per rater whatever the interleaving; never within 3.
    slow = rubric_item("slow", ",".join(["badjson"] * 19))
    never = rubric_item("never", "always:badjson")
    with FakeJudge() as srv:  # parse_retries=2 (3 requests) stays the budget of the other scorers
        [s_slow, s_never], sent = asyncio.run(go(cfg(srv), [slow, never]))
        assert s_slow.value == pytest.approx(0.8) and s_slow.judge_calls == 19 + 5
        assert s_never.value is None and s_never.judge_calls == 5 * 20 and "after 20 replies" in s_never.error
        assert all(r["calls"] == 20 for r in s_never.components["raters"])
        assert sent == 19 + 5 + 100
    with FakeJudge() as srv:  # configurable: a budget of 3 leaves the slow item unscored
        [s3], sent = asyncio.run(go(cfg(srv), [slow], rubrics.RubricsConfig(attempts=3)))
        assert s3.value is None and "unparseable judge reply" in s3.error and sent == 5 * 3


def test_concurrency_limit(tmp_path):
    items = [ev_item(i) for i in range(24)]
    with FakeJudge(default="delay:0.1") as srv:
        scores, sent = asyncio.run(score(cfg(srv, concurrency=4), items))
        assert all(s.value is not None for s in scores) and sent == 24
        assert srv.max_inflight <= 4


def test_api_key_never_leaks(tmp_path, monkeypatch):
    monkeypatch.setenv("DT_EVAL_API_KEY", "model-server-key-must-not-travel")
    monkeypatch.setenv("DT_EVAL_JUDGE_API_KEY", SECRET)
    items = [ev_item(0, "401_echo_key"), ev_item(1)]
    with FakeJudge() as srv:
        config = cfg(srv, tmp_path)
        assert SECRET not in repr(config) and SECRET not in json.dumps(config.describe())
        assert config.describe()["api_key_source"] == "env:DT_EVAL_JUDGE_API_KEY"
        scores, _ = asyncio.run(score(config, items))
        assert scores[0].value is None and "401" in scores[0].error
        dumped = json.dumps([s.to_dict() for s in scores])
        assert SECRET not in dumped and "***" in scores[0].error
        headers = [r.headers.get("Authorization") for r in srv.chat_requests()]
        assert all(h == f"Bearer {SECRET}" for h in headers)  # the judge's key, not the model server's
    # the judge never picks up the model server's key
    monkeypatch.delenv("DT_EVAL_JUDGE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeJudge() as srv:
        asyncio.run(score(cfg(srv), [ev_item(1)]))
        assert srv.chat_requests()[0].headers.get("Authorization") == "Bearer EMPTY"


def test_judge_request_shape(tmp_path):
    with FakeJudge() as srv:
        async def go():
            async with JudgeClient(cfg(srv, extra_body={"chat_template_kwargs": {"enable_thinking": False}})) as j:
                return await j.judge(JudgeCall("i", "v1", [{"role": "user", "content": '"supports"'}],
                                               parse=lambda raw: json.loads(raw)))

        res = asyncio.run(go())
        assert res.ok and res.value["supports"] is True
        body = srv.chat_requests()[0].body
        assert body["model"] == "fake-judge" and body["temperature"] == 0.0 and body["seed"] == 42
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
