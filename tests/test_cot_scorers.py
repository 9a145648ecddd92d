"""Pure properties of the reasoning scorers (no model, no server): hybrid weights and gate,
stage-2 without an embedding term, strict parsers, the format check, rubric aggregation."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dt_eval.reasoning import consistency, evaluator, format as fmt, hybrid, rubrics
from dt_eval.reasoning.judge import JudgeOutcome, JudgeParseError, extract_json_object
from dt_eval.reasoning.templates import load_prompt
from dt_eval.reasoning.types import CotInput, CotScore

from .test_cot_support import StubEmbedder


class StubJudge:
    """judge_many() answers every call with one canned reply, through the call's own parser."""

    def __init__(self, reply: str):
        self.reply = reply
        self.calls: list = []

    async def judge_many(self, calls):
        out = []
        for c in calls:
            self.calls.append(c)
            try:
                out.append(JudgeOutcome(ok=True, value=c.parse(self.reply), raw=[self.reply], calls=1))
            except Exception as e:  # noqa: BLE001
                out.append(JudgeOutcome(ok=False, raw=[self.reply], error=str(e), calls=1))
        return out


def evaluator_reply(a, b, c, d):
    return json.dumps({"logical_path_alignment": a, "key_step_coverage": b, "reasoning_strategy_consistency": c,
                       "analysis_depth": d, "justification": "x"})


def item(i=0, correct=True, reasoning="chain [[emb=0.3]]", reference="ref", **kw):
    return CotInput(id=f"t/{i}", question="q?", choices=["a", "b"], answer="a", reasoning=reasoning,
                    prediction="a" if correct else "b", correct=correct, reference=reference, **kw)


def run(coro):
    return asyncio.run(coro)


# -- hybrid ---------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(w=st.floats(0, 1), dims=st.tuples(*[st.integers(0, 10)] * 4), emb=st.floats(0, 1))
def test_weights_combine_as_documented(w, dims, emb):
    judge = StubJudge(evaluator_reply(*dims))
    [s] = run(hybrid.score_batch([item(reasoning=f"c [[emb={emb}]]")], judge, StubEmbedder(), hybrid.HybridConfig(w=w)))
    llm = sum(dims) / 40
    assert s.components["llm"] == pytest.approx(llm)
    assert s.components["emb"] == pytest.approx(emb)
    assert s.value == pytest.approx(w * llm + (1 - w) * emb)
    assert s.components["ungated"] == pytest.approx(s.value)
    assert 0.0 <= s.value <= 1.0


def test_default_weight_is_half():
    assert hybrid.HybridConfig().w == 0.5
    assert hybrid.combine(0.8, 0.2) == pytest.approx(0.5)


def test_gate_zeroes_wrong_answers_without_judge_calls():
    judge = StubJudge(evaluator_reply(10, 10, 10, 10))
    items = [item(0, True, "c [[emb=0.9]]"), item(1, False, "c [[emb=0.9]]"), item(2, False, "")]
    scores = run(hybrid.score_batch(items, judge, StubEmbedder()))
    assert [s.value for s in scores] == [pytest.approx(0.95), 0.0, 0.0]
    assert len(judge.calls) == 1 and judge.calls[0].item_id == "t/0"
    wrong = scores[1]
    assert wrong.components["gate"] == 0 and wrong.components["emb"] == pytest.approx(0.9)  # still reported
    assert wrong.components["llm"] is None and wrong.judge_calls == 0
    # score_wrong asks the evaluator anyway (component reporting); the gate still zeroes
    judge2 = StubJudge(evaluator_reply(10, 10, 10, 10))
    scores = run(hybrid.score_batch(items[:2], judge2, StubEmbedder(), hybrid.HybridConfig(score_wrong=True)))
    assert scores[1].value == 0.0 and scores[1].components["llm"] == 1.0 and len(judge2.calls) == 2


def test_stage2_is_llm_only_without_embedding_term():
    judge = StubJudge(evaluator_reply(6, 6, 6, 6))
    items = [item(0, True, "c [[emb=0.1]]"), item(1, True, "c [[emb=0.9]]"), item(2, False)]
    s2 = run(hybrid.score_batch(items, judge, None, hybrid.HybridConfig(stage=2, w=0.3)))
    assert [s.value for s in s2] == [0.6, 0.6, 0.0]  # identical whatever the embedding would say
    assert all("emb" not in s.components and "ungated" not in s.components for s in s2)
    assert all(s.scorer == "stage2" for s in s2)
    emb = StubEmbedder()  # even when an embedder is passed, stage 2 never calls it
    run(hybrid.score_batch(items, judge, emb, hybrid.HybridConfig(stage=2)))
    assert emb.calls == 0
    with pytest.raises(ValueError):
        run(hybrid.score_batch(items, judge, None, hybrid.HybridConfig(stage=1)))


def test_hybrid_unscored_never_zero():
    bad = StubJudge("I think it is good")
    items = [item(0, True), item(1, None), item(2, True, reference=None), item(3, False)]
    scores = run(hybrid.score_batch(items, bad, StubEmbedder()))
    assert scores[0].value is None and "LLM evaluator" in scores[0].error
    assert scores[0].raw == ["I think it is good"] and scores[0].components["emb"] == pytest.approx(0.3)
    assert scores[1].value is None and "correctness unknown" in scores[1].error
    assert scores[2].value is None and scores[2].error == "no reference chain"
    assert scores[3].value == 0.0  # wrong: gated, scored
    assert len(bad.calls) == 1


def test_correct_answer_with_empty_reasoning_scores_zero_without_judge_call():
    """R_sim of a correct answer with no chain is 0, decided without asking the evaluator (which
    used to be shown "(no reasoning given)" and could score it well)."""
    judge = StubJudge(evaluator_reply(10, 10, 10, 10))
    items = [item(0, reasoning=""), item(1, reasoning="  \n "), item(2, reasoning=None), item(3)]
    for stage in (1, 2):
        scores = run(hybrid.score_batch(items, judge, StubEmbedder(), hybrid.HybridConfig(stage=stage)))
        assert [s.value for s in scores[:3]] == [0.0, 0.0, 0.0] and scores[3].value > 0
        assert all(s.judge_calls == 0 and s.error is None and "no reasoning" in s.components["reason"]
                   for s in scores[:3])
    ev = run(evaluator.score_batch(items, judge))  # the ungated R_sim^LLM alone, likewise
    assert [s.value for s in ev[:3]] == [0.0, 0.0, 0.0] and ev[3].value == 1.0
    assert len(judge.calls) == 3 and all(c.item_id == "t/3" for c in judge.calls)


def test_reward_totals():
    assert hybrid.stage1_reward(1, 1, 0, 0.5) == 2.5
    assert hybrid.stage2_reward(1, 0.7) == 1.7


# -- strict parsers -------------------------------------------------------------------------------


def test_evaluator_parser_is_strict():
    assert evaluator.parse_reply(evaluator_reply(10, 10, 10, 10))["value"] == 1.0
    assert evaluator.parse_reply("Here:\n" + evaluator_reply(0, 0, 0, 4) + "\nDone")["value"] == 0.1
    assert evaluator.parse_reply("```json\n" + evaluator_reply(5, 5, 5, 5) + "\n```")["value"] == 0.5
    assert evaluator.parse_reply(evaluator_reply(5.0, 5, 5, 5))["value"] == 0.5
    for bad in ["", "great reasoning", evaluator_reply(11, 0, 0, 0), evaluator_reply(-1, 0, 0, 0),
                evaluator_reply(5.5, 5, 5, 5), evaluator_reply(True, 5, 5, 5), evaluator_reply("7", 5, 5, 5),
                json.dumps({"logical_path_alignment": 5}), "[1, 2, 3]", '{"a": 1} {"b": 2}']:
        with pytest.raises((JudgeParseError, ValueError)):
            evaluator.parse_reply(bad)


def test_consistency_parser():
    assert consistency.parse_reply('{"supports": true}')["value"] == 1.0
    assert consistency.parse_reply('{"supports": 0, "justification": "no"}')["value"] == 0.0
    for bad in ['{"supports": "yes"}', '{"support": true}', "yes", '{"supports": 0.5}']:
        with pytest.raises((JudgeParseError, ValueError)):
            consistency.parse_reply(bad)


def test_consistency_without_reasoning_is_zero_without_call():
    judge = StubJudge('{"supports": true}')
    scores = run(consistency.score_batch([item(0, reasoning=""), item(1)], judge))
    assert scores[0].value == 0.0 and "no reasoning" in scores[0].components["reason"]
    assert scores[1].value == 1.0 and len(judge.calls) == 1


def test_extract_json_object():
    assert extract_json_object(' {"a": 1} ') == {"a": 1}
    with pytest.raises(JudgeParseError):
        extract_json_object("no json here")


# -- format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("output,server,style,ok", [
    ("<reasoning>The tone rises.</reasoning> (A) rising", None, "any", True),
    ("<reasoning>The tone rises.</reasoning> (A) rising", None, "reasoning", True),
    ("<think>r</think><answer>A</answer>", None, "think_answer", True),
    ("<think>r</think>\nA", None, "think", True),
    ("<think>r</think>\nA", None, "think_answer", False),  # answer tags required
    ("(A) rising", "the tone rises", "any", True),  # server split the reasoning
    ("(A) rising", "the tone rises", "split", True),
    ("(A) rising", None, "any", False),  # no reasoning at all
    ("<reasoning>r</reasoning>", None, "any", False),  # no answer
    ("<reasoning>  </reasoning> A", None, "any", False),  # empty reasoning
    ("<reasoning>r", None, "any", False),  # never closed (cut off)
    ("intro <reasoning>r</reasoning> A", None, "any", False),  # text before the block
    ("<reasoning>r</reasoning> A <reasoning>again</reasoning> B", None, "any", False),
    ("<think>r</think><answer>A</answer> trailing", None, "any", False),
    ("<think>a</think> A", "reasoning too", "any", False),  # tags left in a split reply's content
    ("", "reasoning only", "any", False),
])
def test_format_check(output, server, style, ok):
    got, shape, reason = fmt.check(output, server, style)
    assert got is ok, reason
    assert (shape is not None) is ok


def test_format_open_tag_in_prompt():
    assert fmt.check("the tone rises</think> (A) rising", None, "think", open_tag_in_prompt=True)[0]
    assert not fmt.check("<think>x</think> A", None, "think", open_tag_in_prompt=True)[0]


# -- rubrics (aggregation; prompt fidelity is in test_cot_rubrics_official.py) ----------------------


def test_trimmed_mean_drops_highest_and_lowest():
    assert rubrics.trimmed_mean([0.0, 0.2, 0.4, 0.6, 1.0]) == pytest.approx(0.4)
    assert rubrics.trimmed_mean([1.0, 1.0, 0.0, 1.0, 1.0]) == 1.0
    assert rubrics.trimmed_mean([0.2, 0.4]) == pytest.approx(0.3)  # fewer than 3: all of them


RUBRIC = [{"name": f"C{k}", "scoring_point": "Award 1 point if ...", "note": "", "choices": [0, 1]}
          for k in range(5)]


def rubric_item(i, prediction="a", reasoning="r", **kw):
    return CotInput(id=f"mmar/{i}", question="q", choices=["a", "b"], answer="a", reasoning=reasoning,
                    prediction=prediction, reference="ideal", rubric=RUBRIC, **kw)


def test_rubrics_wrong_answer_scores_zero_without_judge():
    judge = StubJudge(json.dumps([{"name": f"C{k}", "score": 1} for k in range(5)]))
    scores = run(rubrics.score_batch([rubric_item(0, prediction="b"), rubric_item(1)], judge))
    assert scores[0].value == 0.0 and scores[0].judge_calls == 0 and scores[0].components["correct"] is False
    assert scores[1].value == 1.0
    assert len(judge.calls) == 5 and sorted(c.rater for c in judge.calls) == [0, 1, 2, 3, 4]


def test_rubrics_official_string_match_decides_correctness():
    # The official match on the submitted answer, not the run's flag: "a b" names option b too.
    judge = StubJudge(json.dumps([{"name": f"C{k}", "score": 1} for k in range(5)]))
    [s] = run(rubrics.score_batch([rubric_item(0, prediction="a b", correct=True)], judge))
    assert s.value == 0.0 and not judge.calls


def test_rubrics_thinking_capped_at_10000_chars():
    judge = StubJudge(json.dumps([{"name": f"C{k}", "score": 1} for k in range(5)]))
    long = "x" * 12_000
    [s] = run(rubrics.score_batch([rubric_item(0, reasoning=long)], judge))
    assert s.components["thinking_truncated"] is True and s.components["thinking_over_limit"] is True
    user = judge.calls[0].messages[-1]["content"]
    assert "x" * 10_000 in user and "x" * 10_001 not in user
    # the official script's behaviour on a file with the full text: judged in full (it only warns)
    judge.calls.clear()
    [s] = run(rubrics.score_batch([rubric_item(0, reasoning=long)], judge, rubrics.RubricsConfig(cut_thinking=False)))
    assert s.components["thinking_truncated"] is False and s.components["thinking_over_limit"] is True
    assert "x" * 12_000 in judge.calls[0].messages[-1]["content"]
    assert all(c.attempts == rubrics.OFFICIAL_ATTEMPTS == 20 for c in judge.calls)


def test_rubrics_one_failed_rater_leaves_item_unscored():
    class Flaky(StubJudge):
        async def judge_many(self, calls):
            out = await super().judge_many(calls)
            out[2] = JudgeOutcome(ok=False, raw=["nope"], error="unparseable judge reply", calls=3)
            return out

    judge = Flaky(json.dumps([{"name": f"C{k}", "score": 1} for k in range(5)]))
    [s] = run(rubrics.score_batch([rubric_item(0)], judge))
    assert s.value is None and "rater 2" in s.error and s.judge_calls == 4 + 3
    assert s.to_dict()["scored"] is False


def test_rubrics_parse_reply_rules():
    ok = [{"name": f"C{k}", "score": s} for k, s in enumerate([1, 0, 1, 1, 0])]
    assert rubrics.parse_reply(json.dumps(ok), RUBRIC) == pytest.approx(0.6)
    assert rubrics.parse_reply("Sure:\n" + json.dumps(ok) + "\nthanks", RUBRIC) == pytest.approx(0.6)
    renamed = [dict(x, name="other") for x in ok]
    assert rubrics.parse_reply(json.dumps(renamed), RUBRIC) == pytest.approx(0.6)  # name mismatch: only logged
    for bad in [json.dumps(ok[:4]), json.dumps([dict(x, score=2) for x in ok]), json.dumps({"a": 1}),
                json.dumps([{"name": "C0"}] * 5), json.dumps([dict(x, score="1") for x in ok]), "nothing"]:
        with pytest.raises(JudgeParseError):
            rubrics.parse_reply(bad, RUBRIC)


def test_prompt_templates_are_versioned():
    for name in ("evaluator", "consistency", "rubrics_mmar", "reference"):
        t = load_prompt(name)
        assert t.version and len(t.sha256) == 64 and t.key.startswith(t.version + "@")
    assert evaluator.prompt_version() != consistency.prompt_version()


def test_scores_serialise():
    s = CotScore(id="x", scorer="hybrid", version="v", value=None, error="e")
    d = s.to_dict()
    assert d["scored"] is False and d["value"] is None
