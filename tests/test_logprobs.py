"""Per-token log-probabilities in a run (`logprobs=K`): the compact record field, the reasoning
boundary, the OpenAI request and reply, the resume check; with the deterministic tiny
Qwen2-Audio, the hf backend against transformers' own `output_logits`, and the openai backend
against the real transformers server (dt_eval.serving.hfserver) with `top_logprobs`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import dt_eval
from dt_eval.backends.openai_compat import build_body, read_logprobs
from dt_eval.pipeline.logprobs import (
    logprobs_field,
    reasoning_span,
    record_field,
    topk_entropy,
)
from dt_eval.storage.rundir import json_text
from dt_eval.types import GenerationRequest, SamplingConfig, TokenLogprobs

THINK = ["<think>", "\n", "The", " pitch", " goes", " up", ".", "\n", "</think>", "\n\n", "(A)", " rising", "<|im_end|>"]


# ------------------------------------------------------------------ the record field (fast)


@pytest.mark.parametrize("tokens,reasoning,text,expected", [
    (THINK, None, "<think>\nThe pitch goes up.\n</think>\n\n(A) rising", 9),  # harness split: through </think>
    (THINK, "\nThe pitch goes up.\n", "\n\n(A) rising", 9),  # the server split it: the tokens still show it
    (["a", "</think>", "b", "</think>", "c"], None, "a</think>b</think>c", 4),  # harness: the last tag
    (["a", "</think>", "b", "</think>", "c"], "a", "bc", 2),  # vLLM's parser: the first tag
    (["x", "</th", "ink>", "y"], None, "x</think>y", 3),  # a tag split over tokens
    (["<think>", "cut", " off"], None, "<think>cut off", 3),  # opened, never closed
    (["cut", " off"], "cut off", "", 2),  # tag in the prompt, cut off: the server says all is reasoning
    (["(A)", " rising"], None, "(A) rising", 0),  # no reasoning at all
    (["hm", "(A)"], "hm", "(A)", None),  # the server split somewhere the tokens do not show
])
def test_reasoning_span(tokens, reasoning, text, expected):
    assert reasoning_span(tokens, reasoning, text) == expected


def test_record_field_is_compact():
    lp = TokenLogprobs(tokens=THINK, logprob=[-1.23456789e-6, -0.123456789, *[-0.5] * 11],
                       entropy=[0.0, 2.718281828, *[1e-9] * 11], k=None)
    field = record_field(lp, None, "<think>\nThe pitch goes up.\n</think>\n\n(A) rising")
    assert field["logprob"][:2] == [0.0, -0.1235] and str(field["logprob"][0]) == "0.0"  # no "-0.0"
    assert field["entropy"][:2] == [0.0, 2.7183] and field["reasoning_tokens"] == 9 and field["k"] is None
    # a realistic mix of values: what one token costs in samples.jsonl (the README states it)
    n = 4000
    toks = [[" the", " pitch", " rises", ",", " so", "\n"][i % 6] for i in range(n)]
    lps = [-(i % 97) / 31.0 for i in range(n)]
    ents = [(i % 89) / 17.0 for i in range(n)]
    per_token = len(json_text(logprobs_field(toks, lps, ents, 5, 100)).encode()) / n
    assert per_token < 26, per_token
    with pytest.raises(ValueError, match="outside"):
        logprobs_field(["a"], [-1.0], [0.1], 5, 2)


def _req(k: int | None, **extra) -> GenerationRequest:
    return GenerationRequest(key="k", messages=[{"role": "user", "content": "hi"}], audio=[],
                             sampling=SamplingConfig(extra=extra), logprobs=k)


def test_openai_request_asks_for_top_logprobs():
    body = json.loads(build_body("m", _req(3, logprobs=False, top_logprobs=9)))  # the run's K wins over gen-kwargs
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert "logprobs" not in json.loads(build_body("m", _req(None)))


def test_openai_reply_with_and_without_logprobs():
    alts = [{"token": "a", "logprob": math.log(0.5)}, {"token": "b", "logprob": math.log(0.25)}]
    choice = {"logprobs": {"content": [{"token": "a", "logprob": math.log(0.5), "top_logprobs": alts}]}}
    lp, why = read_logprobs(choice, 2)
    assert why is None and lp.tokens == ["a"] and lp.k == 2 and lp.top == [[("a", math.log(0.5)), ("b", math.log(0.25))]]
    assert lp.entropy == [pytest.approx(topk_entropy([math.log(0.5), math.log(0.25)]))]
    assert lp.entropy[0] == pytest.approx(-(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 0.25 * math.log(0.25)))
    assert read_logprobs({"logprobs": None}, 2) == (None, "the server returned no logprobs.content")
    assert read_logprobs({"logprobs": {"content": [{"token": "a"}]}}, 2)[1] == "malformed logprobs.content from the server"
    assert read_logprobs({"logprobs": {"content": [{"token": "a", "logprob": -1.0, "top_logprobs": []}]}}, 2)[1] \
        == "the server returned no top_logprobs"


# ------------------------------------------------------------------ the run option (fast)


def test_logprobs_option_is_checked_and_part_of_the_run_identity(tmp_path):
    from dt_eval.api import plan_run

    base = dict(base_urls="http://127.0.0.1:9/v1", output=tmp_path / "run")
    for bad in (0, -1, True, "5", 2.0):
        with pytest.raises(dt_eval.UsageError, match="logprobs must be an integer >= 1"):
            plan_run("mmau", "m", logprobs=bad, **base)
    plan = plan_run("mmau", "m", logprobs=4, **base)
    assert plan.opts.logprobs == 4 and plan.opts.identity()["logprobs"] == 4
    assert plan_run("mmau", "m", **base).opts.identity()["logprobs"] is None


def test_resume_with_another_k_is_refused_and_an_older_run_resumes(tmp_path, fake_bench):
    from dt_eval.backends import register_backend, unregister_backend

    from .plugins import create_echo_backend

    bench, run = fake_bench("mmau", 2), tmp_path / "run"
    register_backend("echo-lp", create_echo_backend)
    try:
        events: list[str] = []
        kw = dict(backend="echo-lp", data_dirs={"mmau": bench}, output=run, progress=False, on_event=events.append)
        dt_eval.evaluate("mmau", "m", logprobs=2, **kw)
        # a backend that gives none: the answers stand, and the run says so once
        assert sum("no log-probabilities recorded" in e for e in events) == 1
        assert json.loads((run / "config.json").read_text())["identity"]["logprobs"] == 2
        for other in (3, None):
            with pytest.raises(dt_eval.DtEvalError, match=r"\(logprobs differ\)"):
                dt_eval.evaluate("mmau", "m", logprobs=other, **kw)
        dt_eval.evaluate("mmau", "m", logprobs=2, **kw)  # the same K resumes
        # a run written before the option existed (no such key) resumes without it
        cfg = json.loads((run / "config.json").read_text())
        del cfg["identity"]["logprobs"]
        (run / "config.json").write_text(json.dumps(cfg))
        events.clear()
        dt_eval.evaluate("mmau", "m", **kw)
        assert any("all 2 samples already done" in e for e in events)
    finally:
        unregister_backend("echo-lp")


# ------------------------------------------------------------------ the hf backend (tiny model)


def _audio_request(direction: str, k: int | None, **sampling) -> GenerationRequest:
    from dt_eval.testing.synth_audio import sweep
    from dt_eval.types import AudioInput

    msgs = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Up or down?"}]}]
    return GenerationRequest(key=direction, messages=msgs, audio=[AudioInput(sweep(direction, seconds=2.0), 16000)],
                             sampling=SamplingConfig(max_tokens=40, **sampling), logprobs=k)


@pytest.mark.slow
def test_hf_backend_logprobs_are_those_of_the_raw_generate_logits(det_model_dir):
    """The recorded chosen-token log-probabilities and entropies equal what transformers'
    `output_logits` gives for the same generate call (the raw logits, before the sampling
    processors), greedy and sampled with a repetition penalty."""
    torch = pytest.importorskip("torch")
    from dt_eval.backends.hf import HFBackend

    torch.set_num_threads(1)
    backend = HFBackend(str(det_model_dir), batch_size=2, device="cpu")
    real_generate = backend.model.generate
    seen = {}

    def spy(**kw):  # the same call, also asking transformers for the raw logits and processed scores
        out = real_generate(**kw, output_logits=True, output_scores=True, return_dict_in_generate=True)
        seen.update(out=out, prompt_len=kw["input_ids"].shape[1])
        return out.sequences

    backend.model.generate = spy
    for sampling in ({}, {"temperature": 0.8, "seed": 7, "repetition_penalty": 1.5}):
        gens = backend._generate_batch([_audio_request("rising", 3, **sampling), _audio_request("falling", 3, **sampling)])
        out, p = seen["out"], seen["prompt_len"]
        raw = torch.log_softmax(torch.stack(out.logits, 1), -1)  # (batch, steps, vocab)
        processed = torch.log_softmax(torch.stack(out.scores, 1), -1)
        for i, g in enumerate(gens):
            lp = g.logprobs
            n = len(lp.tokens)
            ids = out.sequences[i, p:p + n]
            assert n == g.completion_tokens and lp.k is None and len(lp.top[0]) == 3
            if not sampling:  # each token as text: the det model's exact answer
                assert "".join(lp.tokens) == g.text + "<|im_end|>" and "</think>" in lp.tokens
            want_lp = raw[i, torch.arange(n), ids]
            want_h = -(raw[i, :n].exp() * raw[i, :n]).nan_to_num().sum(-1)
            assert lp.logprob == pytest.approx(want_lp.tolist(), abs=1e-5)
            assert lp.entropy == pytest.approx(want_h.tolist(), abs=1e-5)
            assert lp.top[0][0][0] == backend.tokenizer.decode(int(raw[i, 0].argmax()))
            if sampling:  # not the processed distribution the token was drawn from
                got = processed[i, torch.arange(n), ids]
                assert max(abs(a - b) for a, b in zip(lp.logprob, got.tolist())) > 1e-3
    backend.model.generate = real_generate
    assert backend._generate_batch([_audio_request("rising", None)])[0].logprobs is None


# ------------------------------------------------------------------ end to end: hf run vs the real server


@pytest.mark.slow
def test_openai_backend_with_top_logprobs_against_the_real_hfserver(det_model_dir, tmp_path, fake_bench):
    from dt_eval.analyze import tokens
    from dt_eval.analyze.tables import tokens_markdown

    from .cli import invoke
    from .servers import hfserver

    bench = fake_bench("mmau", 4)
    common = dict(data_dirs={"mmau": bench}, progress=False, on_event=lambda m: None, preset="tiny-qwen2audio")
    hf = dt_eval.evaluate("mmau", str(det_model_dir), backend="hf", output=tmp_path / "hf", logprobs=3,
                          batch_size=4, device="cpu", **common)
    with hfserver(det_model_dir, "tiny", tmp_path) as url:  # through the command line: `run --logprobs 3`
        cli = invoke(["run", "--tasks", "mmau", "--model", "tiny", "--backend", "openai", "--base-url", url,
                      "--output", tmp_path / "openai", "--logprobs", "3", "--data-dir", f"mmau={bench}",
                      "--preset", "tiny-qwen2audio", "--no-progress"])
    assert cli.exit_code == 0, cli.output
    served = dt_eval.load_run(tmp_path / "openai")
    a, b = ({s.id: s for s in r.samples} for r in (hf, served))
    assert a.keys() == b.keys() and len(a) == 4
    for key in a:
        x, y = a[key].logprobs, b[key].logprobs
        assert b[key].reasoning and not a[key].reasoning  # the server split the reasoning; hf did not
        assert x["tokens"] == y["tokens"] and x["tokens"][x["reasoning_tokens"] - 1] == "</think>"
        assert x["reasoning_tokens"] == y["reasoning_tokens"] == x["tokens"].index("</think>") + 1
        assert (x["k"], y["k"]) == (None, 3)
        assert y["logprob"] == pytest.approx(x["logprob"], abs=2e-4)
        # the server's top-3 estimate is a lower bound of the exact entropy
        assert all(h3 <= h + 2e-4 for h3, h in zip(y["entropy"], x["entropy"]))
        assert any(h3 < h - 1e-3 for h3, h in zip(y["entropy"], x["entropy"]))
    res = tokens([tmp_path / "hf", tmp_path / "openai"], [0, 1], plots=False)
    assert res["token_unit"] == "model tokens (logprobs)"
    assert [c["entropy"]["k"] for c in res["checkpoints"]] == [[None], [3]]
    assert any("compare them at the same K" in n for n in res["notes"])
    assert "(top-3, exact): compare them at the same K" in tokens_markdown(res)
    lines = (tmp_path / "openai" / "samples.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    assert Path(rec["audio"]).exists() and rec["logprobs"]["tokens"] == list(b[rec["id"]].logprobs["tokens"])
