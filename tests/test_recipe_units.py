"""trained_recipe, fast unit tests (no model): config, data, advantages (GDPO vs GRPO, zero-std
groups, judge-failure filling), loss aggregation and micro-batch exactness, k3 KL, and the reward's
accuracy/format terms going through dt-eval's own extraction and official match."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trained_recipe import algo
from trained_recipe.config import STAGE_COMPONENTS, load_config
from trained_recipe.data import DataError, McqItem, build_messages, load_items, parse_item, user_text
from trained_recipe.rewards import RecipeReward, ScoreItem, correctness


# -- config ---------------------------------------------------------------------------------------


def test_shipped_configs_load_and_follow_the_paper():
    c1 = load_config("trained_recipe/configs/stage1.yaml")
    c2 = load_config("trained_recipe/configs/stage2.yaml")
    assert c1.stage == 1 and c1.components == ["acc", "fmt", "con", "sim"] and c1.needs_embedder
    assert c2.stage == 2 and c2.components == ["acc", "sim"] and not c2.needs_embedder
    assert c2.hard_cases.source == "rollouts" and c2.ref_model is None  # ref = model = stage-1 checkpoint
    for c in (c1, c2):
        assert c.optim.lr == 1e-6 and c.algo.beta == 0.001 and c.rollout.group_size == 8
        assert c.rollout.prompts_per_step * c.rollout.group_size == 224 and c.algo.adv_norm == "gdpo"
    assert c1.reward_summary()["sim"]["w_llm"] == 0.5 and c2.reward_summary()["sim"]["kind"] == "llm"
    assert STAGE_COMPONENTS[2] == ["acc", "sim"]


def test_stage_configs_reward_the_papers_reasoning_format():
    """The paper rewards <reasoning>...</reasoning> then the answer: the stage configs' prompt asks
    for it and their format reward scores it (not <think>); `any` stays an option."""
    good = "<reasoning>The pitch goes up.</reasoning>\n(A) rising"
    think = "<think>The pitch goes up.</think>\n(A) rising"
    it = ScoreItem(id="i", question="q", choices=["rising", "falling"], answer="rising")

    def fmt(c):
        r = RecipeReward(["acc", "fmt"], c.stage, format_style=c.reward.format_style, labels=c.prompt.labels,
                         task=c.reward.task)
        try:
            return r.score([it, it], [good, think]).values["fmt"]
        finally:
            r.close()

    for path in ("trained_recipe/configs/stage1.yaml", "trained_recipe/configs/stage2.yaml"):
        c = load_config(path)
        assert "<reasoning></reasoning>" in c.prompt.instruction and "<think>" not in c.prompt.instruction
        assert fmt(c) == [1.0, 0.0]
    assert fmt(load_config("trained_recipe/configs/stage1.yaml", ["reward.format_style=any"])) == [1.0, 1.0]
    with pytest.raises(ValueError, match="asks for <reasoning> tags"):  # a prompt the reward cannot reward
        load_config("trained_recipe/configs/stage1.yaml", ["reward.format_style=think"])
    with pytest.raises(ValueError, match="format_style"):
        load_config("trained_recipe/configs/stage1.yaml", ["reward.format_style=xml"])


def test_overrides_and_strictness(tmp_path):
    c = load_config("trained_recipe/configs/stage1.yaml",
                    ["optim.lr=2e-6", "algo.loss_agg=dapo", "model_opts.lora.enabled=true", "reward.components=[acc,fmt]"])
    assert c.optim.lr == 2e-6 and c.algo.loss_agg == "dapo" and c.model_opts.lora.enabled and c.components == ["acc", "fmt"]
    for bad in (["optim.lrr=1"], ["algo.loss_agg=ppo"], ["reward.components=[acc,foo]"], ["hard_cases.band=[0.8,0.2]"]):
        with pytest.raises(ValueError):
            load_config("trained_recipe/configs/stage1.yaml", bad)
    (tmp_path / "d.jsonl").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: Qwen/Qwen2-Audio-7B-Instruct\ndata: {train: d.jsonl}\n")
    c = load_config(cfg)
    assert c.model == "Qwen/Qwen2-Audio-7B-Instruct"  # a hub id stays a hub id
    assert c.data.train == str(tmp_path / "d.jsonl")  # a file next to the config resolves there


# -- data -----------------------------------------------------------------------------------------


def test_jsonl_parsing_aliases_letters_and_errors(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    recs = [
        {"id": "1", "audio": "a.wav", "question": "Q?", "choices": ["dog", "cat"], "answer": "cat", "reference": "r"},
        {"id": "2", "audio_path": "a.wav", "question": "Q?", "options": ["A. dog", "B. cat"], "answer": "B"},
        {"id": "3", "wav": "a.wav", "question": "Q?", "choices": ["dog", "cat"], "answer": 0, "thinking": "t", "x": 1},
    ]
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    items = load_items(p)
    assert [i.answer for i in items] == ["cat", "cat", "dog"]
    assert items[1].choices == ["dog", "cat"] and items[2].reference == "t" and items[2].meta == {"x": 1}
    assert items[0].audio == str(tmp_path / "a.wav")
    with pytest.raises(DataError, match="not one of the choices"):
        parse_item({"audio": "a.wav", "question": "q", "choices": ["a", "b"], "answer": "c"}, tmp_path)
    p.write_text(json.dumps(recs[0]) + "\n" + json.dumps(recs[0]) + "\n")
    with pytest.raises(DataError, match="duplicate id"):
        load_items(p)
    p.write_text(json.dumps({**recs[0], "audio": "missing.wav"}) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:1: audio file not found"):
        load_items(p)


def test_prompt_matches_dt_eval_task_prompts():
    from trained_recipe.config import PromptConfig

    it = McqItem(id="x", audio="/a.wav", question="What is it?", choices=["dog", "cat"], answer="dog")
    text = user_text(it, PromptConfig(instruction="INSTR"))
    assert text == "What is it?\n\nOptions:\n(A) dog\n(B) cat\n\nINSTR"  # tasks/mmau.yaml's template
    msgs = build_messages(it, PromptConfig(system="S"))
    assert msgs[0] == {"role": "system", "content": "S"}
    assert msgs[1]["content"][0] == {"type": "audio", "audio_url": "/a.wav"}


def test_the_recipe_prompt_is_rendered_by_dt_eval_task_code(monkeypatch):
    from dt_eval.tasks.config import load_task
    from dt_eval.tasks.prompts import task_text
    from dt_eval.types import Item
    from trained_recipe.config import PromptConfig

    it = McqItem(id="x", audio="/a.wav", question="What is it?", choices=["dog", "cat"], answer="dog")
    # the task's own template: MMSU's official prompt puts the instruction first and letters the options
    assert user_text(it, PromptConfig(task="mmsu", labels="ABCD", instruction="INSTR")) == \
        "INSTR\n\nQuestion: What is it?\n\nA. dog\nB. cat"
    # exactly the text dt-eval's run builds for this item, with the recipe's instruction
    mmar = load_task("mmar")
    mmar = mmar.model_copy(update={"prompt": mmar.prompt.model_copy(update={"instruction": "INSTR"})})
    dt_item = Item(id="x", question="What is it?", choices=["dog", "cat"], answer="dog", audio=None, raw={})
    assert user_text(it, PromptConfig(instruction="INSTR")) == task_text(mmar, dt_item)
    # rendered by dt_eval.tasks.prompts, not by a copy of it
    import dt_eval.tasks.prompts as prompts

    monkeypatch.setattr(prompts, "task_text", lambda cfg, item: f"[{cfg.name}] {item.question}")
    assert user_text(it, PromptConfig(task="mmau")) == "[mmau] What is it?"
    # a config's prompt task is its R_acc task unless given
    base = {"model": "m", "data": {"train": "t.jsonl"}, "prompt": {"labels": "ABCD"}}
    assert load_config(None, {**base, "reward": {"task": "mmsu"}}).prompt.task == "mmsu"
    with pytest.raises(ValueError, match="prompt task"):
        load_config(None, {**base, "prompt": {"task": "no-such-task"}})


def test_eval_settings_are_checked_when_the_config_loads():
    base = {"model": "m", "data": {"train": "t.jsonl"}}
    c = load_config(None, {**base, "eval": {"every_steps": 5, "task": "mmau", "limit": 50}})
    assert (c.eval.every_steps, c.eval.task, c.eval.limit) == (5, "mmau", 50)
    with pytest.raises(ValueError, match="hidden answers"):
        load_config(None, {**base, "eval": {"every_steps": 5, "task": "mmau-test"}})
    with pytest.raises(ValueError, match="eval.task"):
        load_config(None, {**base, "eval": {"every_steps": 5, "task": "no-such-task"}})


# -- advantages -----------------------------------------------------------------------------------


def test_gdpo_normalises_each_component_before_summing():
    groups = [0, 0, 0, 0]
    # acc varies on a 0/1 scale, sim varies on a tiny scale: GRPO (sum) lets acc dominate,
    # GDPO gives both the same weight in advantage units.
    rewards = {"acc": np.array([1, 1, 0, 0.0]), "sim": np.array([0.0, 0.01, 0.0, 0.01])}
    w = {"acc": 1.0, "sim": 1.0}
    grpo = algo.compute_advantages(rewards, w, groups, "sum", eps=1e-8)
    gdpo = algo.compute_advantages(rewards, w, groups, "gdpo", eps=1e-8)
    assert grpo.adv[1] - grpo.adv[0] == pytest.approx(0.02, abs=5e-3)  # sim barely matters
    assert gdpo.adv[1] - gdpo.adv[0] == pytest.approx(2.0, abs=1e-4)  # sim is a full unit
    np.testing.assert_allclose(gdpo.adv, [1 - 1, 1 + 1, -1 - 1, -1 + 1], atol=1e-4)
    # no std scaling (Dr. GRPO): just centred
    dr = algo.compute_advantages(rewards, w, groups, "sum", scale_by_std=False)
    np.testing.assert_allclose(dr.adv, rewards["acc"] + rewards["sim"] - np.mean(rewards["acc"] + rewards["sim"]))


def test_zero_std_groups_counted_and_give_no_advantage():
    groups = [0, 0, 1, 1, 2, 2]
    rewards = {"acc": np.array([1, 1, 0, 1, 0, 0.0]), "fmt": np.array([1, 1, 1, 1, 0, 1.0])}
    a = algo.compute_advantages(rewards, {}, groups, "gdpo")
    assert a.zero_std_frac == pytest.approx(1 / 3)  # group 0 is constant in total reward
    assert a.zero_std_frac_by_comp == {"acc": pytest.approx(2 / 3), "fmt": pytest.approx(2 / 3)}
    assert a.adv[0] == a.adv[1] == 0.0
    b = algo.compute_advantages(rewards, {}, groups, "gdpo", batch_whiten=True)
    assert abs(b.adv.mean()) < 1e-9 and b.adv.std() == pytest.approx(1.0, abs=1e-3)


def test_judge_failure_gets_the_group_mean_and_zero_advantage():
    vals, n = algo.fill_failed([1.0, None, 0.0, 0.5, None, None], [0, 0, 0, 1, 1, 2])
    np.testing.assert_allclose(vals, [1.0, 0.5, 0.0, 0.5, 0.5, 0.0])
    assert n == 3
    a = algo.compute_advantages({"con": vals}, {}, [0, 0, 0, 1, 1, 2], "gdpo")
    assert a.adv[1] == pytest.approx(0.0) and a.adv[4] == 0.0 and a.adv[5] == 0.0
    vals, n = algo.fill_failed([None, None], [7, 7])  # nothing scored in the group: constant 0
    assert list(vals) == [0.0, 0.0] and n == 2


# -- losses ---------------------------------------------------------------------------------------


def test_k3_kl_is_nonnegative_and_zero_at_equality():
    lp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    assert torch.all(algo.k3_kl(lp, lp) == 0)
    ref = torch.log(torch.tensor([[0.4, 0.1, 0.8]]))
    kl = algo.k3_kl(lp, ref)
    assert torch.all(kl > 0)
    r = torch.exp(ref - lp)
    torch.testing.assert_close(kl, r - torch.log(r) - 1)


@pytest.mark.parametrize("mode", ["grpo", "dapo", "dr_grpo"])
def test_loss_aggregation_is_exact_under_micro_batching(mode):
    torch.manual_seed(0)
    n, t = 6, 5
    logp = torch.randn(n, t, requires_grad=True)
    ref = torch.randn(n, t)
    adv = torch.randn(n)
    mask = torch.ones(n, t)
    mask[1, 3:] = 0
    mask[4, 1:] = 0
    ntok = int(mask.sum())

    def full():
        tl, _, _ = algo.per_token_loss(logp, logp.detach(), ref, adv, 0.1, 0.2, 0.2)
        return algo.aggregate(tl, mask, mode, n, ntok, t)

    g_full = torch.autograd.grad(full(), logp)[0]
    total = 0
    for ch in ([0, 1], [2, 3, 4], [5]):
        tl, _, _ = algo.per_token_loss(logp[ch], logp[ch].detach(), ref[ch], adv[ch], 0.1, 0.2, 0.2)
        total = total + algo.aggregate(tl, mask[ch], mode, n, ntok, t)
    g_micro = torch.autograd.grad(total, logp)[0]
    torch.testing.assert_close(g_full, g_micro)
    # the three modes weight tokens differently: a long completion's tokens count less in grpo
    if mode == "grpo":
        assert abs(g_full[4, 0]) > 0 and torch.all(g_full[4, 1:] == 0)


def test_policy_gradient_sign_and_clipping():
    logp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    tl, kl, clipped = algo.per_token_loss(logp, logp.detach(), None, adv, 0.0, 0.2, 0.2)
    assert kl is None and torch.all(clipped == 0)
    g = torch.autograd.grad(algo.aggregate(tl, torch.ones(2, 3), "grpo", 2, 6, 3), logp)[0]
    assert torch.all(g[0] < 0) and torch.all(g[1] > 0)  # descent raises logp of the good completion
    old = torch.full((1, 1), -1.0)  # ratio e^1 > 1.2: clipped, no gradient for a positive advantage
    lp = torch.zeros(1, 1, requires_grad=True)
    tl, _, clipped = algo.per_token_loss(lp, old, None, torch.tensor([1.0]), 0.0, 0.2, 0.28)
    assert clipped.item() == 1.0 and torch.autograd.grad(tl.sum(), lp)[0].item() == 0.0


# -- reward terms through dt-eval's own code -------------------------------------------------------


def test_accuracy_is_dt_evals_extraction_plus_official_match():
    ch = ["rising", "falling"]
    assert correctness("<think>up</think>\n\n(A) rising", ch, "rising")[0]
    assert correctness("<think>up</think> The answer is B.", ch, "falling")[0]
    assert not correctness("<think>up</think> rising or falling", ch, "rising")[0]  # official match: ambiguous
    assert not correctness("<think>never closed", ch, "rising")[0]  # truncated: no answer
    assert not correctness("(C)", ch, "rising")[0]


def test_accuracy_is_the_tasks_own_rule_as_in_a_dt_eval_run():
    """R_acc = what `dt-eval run` records as `correct` for a sample of that task: MMSU's letter rule
    differs from the MMAU/MMAR token match (an answer that names no option is wrong in MMSU)."""
    from dt_eval.backends.base import Generation
    from dt_eval.types import Item
    from dt_eval.pipeline.records import make_sample_record
    from dt_eval.tasks.config import load_task

    from .synthetic_meta import mmar_records, mmsu_records

    texts = ["<reasoning>x</reasoning> The answer is {a}.", "<reasoning>x</reasoning> It sounds like {a}",
             "<reasoning>x</reasoning> ({l}) {a}", "<reasoning>x</reasoning> {l}", "<reasoning>x</reasoning> {w}",
             "<reasoning>never closed"]
    checked = 0
    for task, recs in (("mmsu", mmsu_records(6)), ("mmar", mmar_records(6))):
        cfg = load_task(task)
        for k, rec in enumerate(recs):
            choices = ([rec[c] for c in cfg.fields.choice_columns] if cfg.fields.choice_columns
                       else list(rec["choices"]))
            answer = rec[cfg.fields.answer]
            wrong = next(c for c in choices if c != answer)
            item = Item(id=rec["id"], question=rec["question"], choices=choices, answer=answer, audio=None, raw=rec)
            for t in texts:
                text = t.format(a=answer, l="ABCDEFGHIJ"[choices.index(answer)], w=wrong)
                gen = Generation(key=f"{task}/{k}", text=text, reasoning=None, finish_reason="stop")
                want = make_sample_record(cfg, k, item, 0, gen, [])["correct"]
                assert correctness(text, choices, answer, task=task)[0] == want, (task, text)
                checked += 1
    assert checked == 72
    ch = ["rising", "falling", "flat", "noise"]
    free = "<reasoning>x</reasoning> The pitch is rising"  # names no option
    assert correctness(free, ch, "rising")[0] and not correctness(free, ch, "rising", task="mmsu")[0]
    c = load_config("trained_recipe/configs/stage1.yaml", ["reward.task=mmsu", "reward.components=[acc]"])
    r = RecipeReward(c.components, c.stage, labels=c.prompt.labels, task=c.reward.task)
    it = ScoreItem(id="i", question="q", choices=ch, answer="rising")
    assert r.score([it, it], [free, "<reasoning>x</reasoning> (A) rising"]).values["acc"] == [0.0, 1.0]
    r.close()
    for bad in (["reward.task=nope"], ["reward.task=mmsu", "prompt.labels=WXYZ"], ["reward.task=mmau-test"]):
        with pytest.raises(ValueError, match="R_acc task"):
            load_config("trained_recipe/configs/stage1.yaml", bad)


def test_correct_answer_with_empty_reasoning_gets_zero_sim_without_a_judge_call():
    from .test_cot_scorers import StubJudge, evaluator_reply
    from .test_cot_support import StubEmbedder

    judge = StubJudge(evaluator_reply(10, 10, 10, 10))
    it = ScoreItem(id="i", question="q", choices=["rising", "falling"], answer="rising", reference="it rises")
    for stage in (1, 2):
        r = RecipeReward(["acc", "sim"], stage, judge=judge, embedder=StubEmbedder())
        rb = r.score([it] * 3, ["<reasoning> </reasoning> (A) rising", "(A) rising",
                                "<reasoning>up [[emb=1.0]]</reasoning> (A) rising"])
        r.close()
        assert rb.values["acc"] == [1.0, 1.0, 1.0]
        assert rb.values["sim"] == [0.0, 0.0, 1.0] and rb.judged["sim"] == [False, False, True]
    assert len(judge.calls) == 2  # one evaluator call per stage: the non-empty chain only


def test_reward_acc_fmt_without_a_judge():
    r = RecipeReward(["acc", "fmt"], stage=1)
    it = ScoreItem(id="i", question="q", choices=["rising", "falling"], answer="rising")
    texts = ["<think>goes up</think>\n(A) rising", "(A) rising", "<think>down</think> falling", "<think></think> rising"]
    rb = r.score([it] * 4, texts)
    assert rb.values["acc"] == [1.0, 1.0, 0.0, 1.0]
    assert rb.values["fmt"] == [1.0, 0.0, 1.0, 0.0]  # no reasoning block / empty reasoning fail the format
    assert rb.failures() == 0 and rb.judged_count() == 0
    r.close()
    with pytest.raises(ValueError, match="judge"):
        RecipeReward(["acc", "con"], stage=1)
