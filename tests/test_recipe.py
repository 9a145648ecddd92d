"""CPU smoke test of the two-stage recipe, end to end, offline.

Model: the tiny Qwen2-Audio built offline, briefly fine-tuned to write the reasoning format while
answering rising/falling at chance (trained_recipe.synth; cached). Data: synthetic rising/falling
sweep MCQs with reference chains. Judge: real HTTP servers on 127.0.0.1 -- the fault-injecting
fake judge of the cot tests (valid verdicts, or injected failures), and SmolLM2-135M served by
dt_eval.serving.hfserver when its package is installed. Embedder: the real all-MiniLM-L6-v2.

Stage 1 (acc + fmt + con + gated hybrid sim) for a few steps, then stage 2 from its checkpoint
(acc + gated LLM sim; hard cases from rollouts): finite loss, non-zero gradients, every reward
component logged, no embedding term in stage 2, checkpoints that round-trip and that
`dt-eval run --backend hf` evaluates; exact resume; LoRA; judge failures filled and counted, and
the failure-rate stop.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trained_recipe.config import load_config
from trained_recipe.data import make_synthetic_task
from trained_recipe.trainer import JudgeFailureRateExceeded, Trainer

from .test_cot_support import FakeJudge, prompt_kind
from .servers import smollm2_judge

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fmt_model():
    from trained_recipe.synth import cached_format_model

    torch.set_num_threads(1)
    return cached_format_model()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_task(tmp_path_factory.mktemp("data"), 8, seed=11)


def base_cfg(model, data, out, **over):
    cfg = {"model": str(model), "output_dir": str(out), "seed": 1, "data": {"train": str(data)},
           "rollout": {"group_size": 4, "prompts_per_step": 2, "max_completion_length": 20, "temperature": 1.0},
           "optim": {"steps": 3, "lr": 5e-4, "micro_batch_size": 4},
           "algo": {"beta": 0.01},
           "reward": {"judge": {"url": None, "model": "fake-judge", "max_retries": 0, "parse_retries": 0,
                                "timeout_s": 30, "max_tokens": 64},
                      "failures": {"max_rate": 1.0}},
           "checkpoint": {"every": 2, "keep_last": 2},
           "log": {"progress": False, "samples_every": 1}, "model_opts": {"cpu_threads": 1}}
    for k, v in over.items():
        cfg[k] = _merge(cfg.get(k), v)
    return load_config(None, cfg)


def _merge(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{k: _merge(a.get(k), v) for k, v in b.items()}}
    return b


def run_trainer(cfg):
    t = Trainer(cfg)
    t.setup()
    try:
        return t, t.train()
    finally:
        t.close()


# -- stage 1 -> stage 2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(fmt_model, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    out = {}
    with FakeJudge() as srv:
        judge = {"url": srv.url}
        t0 = time.monotonic()
        s1 = base_cfg(fmt_model, data, root / "stage1", reward={"judge": judge})
        out["t1"], out["res1"] = run_trainer(s1)
        out["time1"] = time.monotonic() - t0
        out["kinds1"] = srv.by_kind()

        import dt_eval.reasoning.embedding as emb

        def no_embedder(*a, **k):
            raise AssertionError("stage 2 must not build an embedder")

        real_init = emb.Embedder.__init__
        emb.Embedder.__init__ = no_embedder
        n_before = len(srv.chat_requests())
        try:
            t0 = time.monotonic()
            s2 = base_cfg(out["res1"]["final"], data, root / "stage2", stage=2, optim={"steps": 2},
                          reward={"judge": judge},
                          hard_cases={"source": "rollouts", "band": [0.0, 0.99], "rollouts": 4})
            out["t2"], out["res2"] = run_trainer(s2)
            out["time2"] = time.monotonic() - t0
        finally:
            emb.Embedder.__init__ = real_init
        out["kinds2"] = {}
        for r in srv.chat_requests()[n_before:]:
            k = prompt_kind(r.text)
            out["kinds2"][k] = out["kinds2"].get(k, 0) + 1
    out["root"] = root
    return out


def test_stage1_logs_every_component_with_finite_loss_and_gradients(pipeline):
    run = pipeline["root"] / "stage1"
    ms = metrics(run)
    assert [m["step"] for m in ms] == [1, 2, 3]
    for m in ms:
        for c in ("acc", "fmt", "con", "sim"):
            assert 0.0 <= m[f"reward/{c}/mean"] <= 1.0 and m[f"reward/{c}/std"] >= 0
            assert m[f"reward/{c}/zero_std_groups"] is not None
        assert m["reward/sim_emb/mean"] is not None and m["reward/sim_emb/n"] > 0  # the real embedder ran
        assert math.isfinite(m["loss"]) and m["kl"] is not None and m["kl"] >= 0
        assert 0 <= m["zero_std_groups"] <= 1 and m["completion/len_mean"] > 0
        assert m["judge/failures"] == 0 and m["audio_encoder_calls_in_loss"] >= 2
        assert m["stage"] == 1
    assert any(m["grad_norm"] > 0 for m in ms)
    assert any(m["reward/acc/std"] > 0 for m in ms)  # the format model answers at chance: a signal
    assert pipeline["kinds1"].get("consistency", 0) > 0 and pipeline["kinds1"].get("evaluator", 0) > 0
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and {"acc", "fmt", "con", "sim"} == set(samples[0]["rewards"])


def test_stage1_checkpoints_and_metadata(pipeline):
    run = pipeline["root"] / "stage1"
    ck = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ck == ["step-000002", "step-000003"]
    final = Path(pipeline["res1"]["final"])
    meta = json.loads((final / "dt_recipe.json").read_text())
    assert meta["stage"] == 1 and meta["step"] == 3 and meta["format"] == "dt-recipe-checkpoint"
    assert meta["reward"]["components"] == ["acc", "fmt", "con", "sim"] and meta["reward"]["sim"]["kind"] == "hybrid"
    assert (final / "config.json").exists() and (final / "tokenizer.json").exists()
    assert (final / "processor_config.json").exists() or (final / "preprocessor_config.json").exists()
    assert not (final / "trainer_state.pt").exists() and (run / "checkpoints/step-000003/trainer_state.pt").exists()


def test_stage2_uses_stage1_checkpoint_hard_cases_and_no_embedding(pipeline):
    run = pipeline["root"] / "stage2"
    ms = metrics(run)
    assert [m["step"] for m in ms] == [1, 2]
    for m in ms:
        assert m["stage"] == 2
        assert {k.split("/")[1] for k in m if k.startswith("reward/") and k.endswith("/mean")} == {"acc", "sim", "total", "sim_llm"}
        assert not any("emb" in k for k in m) and not any(k.startswith(("reward/fmt", "reward/con")) for k in m)
        assert math.isfinite(m["loss"])
    assert pipeline["kinds2"].get("consistency", 0) == 0  # stage 2 asks only the LLM evaluator
    t2 = pipeline["t2"]
    assert t2.cfg.model == pipeline["res1"]["final"] and t2.ref_model is not None  # KL ref = stage-1 checkpoint
    hard = [json.loads(x) for x in (run / "hard_cases.jsonl").read_text().splitlines()]
    assert len(hard) == 8 and all(h["kept"] == (h["pass_rate"] <= 0.99) for h in hard)
    assert sorted(it.id for it in t2.items) == sorted(h["id"] for h in hard if h["kept"])
    meta = json.loads((Path(pipeline["res2"]["final"]) / "dt_recipe.json").read_text())
    assert meta["stage"] == 2 and meta["reward"]["components"] == ["acc", "sim"] and meta["reward"]["sim"]["kind"] == "llm"


def test_checkpoint_round_trips(pipeline, data):
    from transformers import Qwen2AudioForConditionalGeneration

    t2 = pipeline["t2"]
    final = pipeline["res2"]["final"]
    loaded = Qwen2AudioForConditionalGeneration.from_pretrained(final).eval()
    enc = t2.encode(t2.items[:1])
    with torch.no_grad():
        a = t2.policy.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.mm).logits
        b = loaded(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.mm).logits
    torch.testing.assert_close(a, b)
    # and the stage-1 weights really moved away from the initial model
    init = Qwen2AudioForConditionalGeneration.from_pretrained(pipeline["t1"].cfg.model)
    s1 = Qwen2AudioForConditionalGeneration.from_pretrained(pipeline["res1"]["final"])
    assert any(not torch.equal(p, q) for p, q in zip(init.parameters(), s1.parameters()))


def test_dt_eval_run_evaluates_the_checkpoint(pipeline, tmp_path):
    from dt_eval.testing.synth_audio import make_fake_benchmark

    bench = make_fake_benchmark(tmp_path / "mmau", "mmau", 4, seed=2)
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "dt_eval.cli", "run", "--tasks", "mmau", "--model",
                           pipeline["res2"]["final"], "--backend", "hf", "--data-dir", f"mmau={bench}",
                           "--output", str(out), "--batch-size", "4", "--gen-kwargs", "max_tokens=24",
                           "--no-progress"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["error"] is None and r["completion_tokens"] > 0 for r in recs)
    assert "Total Accuracy" in proc.stdout


def test_plot(pipeline, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trained_recipe.cli", "plot", str(pipeline["root"] / "stage1"),
                           "-o", str(tmp_path / "c.png")], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").stat().st_size > 10_000


# -- resume, LoRA ---------------------------------------------------------------------------------


def test_resume_continues_exactly(fmt_model, data, tmp_path):
    over = dict(reward={"components": ["acc", "fmt"]}, rollout={"group_size": 2},
                optim={"steps": 4, "micro_batch_size": 2}, log={"samples_every": 0})
    _, ra = run_trainer(base_cfg(fmt_model, data, tmp_path / "a", **over))
    _, rb = run_trainer(base_cfg(fmt_model, data, tmp_path / "b", **_merge(over, {"optim": {"steps": 2}})))
    tb, rb = run_trainer(base_cfg(fmt_model, data, tmp_path / "b", **_merge(over, {"checkpoint": {"resume": "auto"}})))
    assert tb.step == 4
    ma, mb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [m["step"] for m in mb] == [1, 2, 3, 4]
    for x, y in zip(ma, mb):  # same samples, same rewards, same updates
        assert x["reward/total/mean"] == y["reward/total/mean"] and x["loss"] == pytest.approx(y["loss"], abs=1e-6)
    from safetensors.torch import load_file

    wa = load_file(str(Path(ra["final"]) / "model.safetensors"))
    wb = load_file(str(Path(rb["final"]) / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_eval_every_n_steps_puts_dt_eval_accuracy_in_the_training_log(fmt_model, data, tmp_path):
    """eval.every_steps: the checkpoint of that step goes through dt_eval.evaluate (hf backend, in
    process) on a held-out dt-eval task; the step's metrics line carries its accuracy."""
    import dt_eval
    from dt_eval.testing.synth_audio import make_fake_benchmark

    bench = make_fake_benchmark(tmp_path / "mmau", "mmau", 4, seed=2)
    cfg = base_cfg(fmt_model, data, tmp_path / "t", reward={"components": ["acc", "fmt"]},
                   rollout={"group_size": 2}, optim={"steps": 2, "micro_batch_size": 2},
                   checkpoint={"every": 5, "keep_last": 5}, log={"samples_every": 0},
                   eval={"every_steps": 1, "task": "mmau", "data_dir": str(bench), "batch_size": 4,
                         "max_tokens": 24})
    run_trainer(cfg)
    lines = metrics(tmp_path / "t")
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        run_dir = Path(m["eval/mmau/run_dir"])
        assert run_dir == tmp_path / "t" / "eval" / f"step-{m['step']:06d}"
        res = dt_eval.load_run(run_dir)  # the number in the log is the run directory's own
        assert m["eval/mmau/accuracy"] == res.tasks["mmau"].accuracy and m["eval/mmau/items"] == 4
        assert m["eval/mmau/errors"] == 0 and "eval/mmau/error" not in m
        assert res.config.model == str(tmp_path / "t" / "checkpoints" / f"step-{m['step']:06d}")
        assert res.config.backend_name == "hf" and all(s.completion_tokens > 0 for s in res.samples)
        # dt-eval's own prompt for the task, not the training prompt
        assert res.samples[0].prompt["user"].startswith("<audio>") and "Options:\n(A)" in res.samples[0].prompt["user"]
    # a step evaluated between checkpoints was saved for it (every=5 would save only the last step)
    assert (tmp_path / "t" / "checkpoints" / "step-000001").is_dir()


def test_lora_trains_adapters_and_saves_a_merged_checkpoint(fmt_model, data, tmp_path):
    pytest.importorskip("peft")
    from transformers import Qwen2AudioForConditionalGeneration

    cfg = base_cfg(fmt_model, data, tmp_path / "lora", reward={"components": ["acc", "fmt"]},
                   optim={"steps": 2, "lr": 1e-2}, checkpoint={"every": 2},
                   model_opts={"lora": {"enabled": True, "r": 4, "alpha": 8,
                                        "target_modules": ["q_proj", "v_proj", "o_proj"]}})
    t, res = run_trainer(cfg)
    assert t.ref_model is None  # the reference is the base with the adapter disabled
    assert all("lora_" in n for n, p in t.policy.model.named_parameters() if p.requires_grad)
    ms = metrics(tmp_path / "lora")
    assert all(math.isfinite(m["loss"]) and m["kl"] is not None for m in ms) and any(m["grad_norm"] > 0 for m in ms)
    final = Path(res["final"])
    assert (final / "adapter" / "adapter_config.json").exists()
    merged = Qwen2AudioForConditionalGeneration.from_pretrained(final).eval()
    enc = t.encode(t.items[:1])
    with torch.no_grad():
        a = t.policy.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.mm).logits
        b = merged(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **enc.mm).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not any("lora" in k for k in merged.state_dict())


# -- judge failures -------------------------------------------------------------------------------


def test_judge_failures_get_the_group_mean_and_are_counted(fmt_model, data, tmp_path):
    def script(n, body):  # every other consistency request fails (no retries configured)
        from tests.fault_server import request_text

        return "500" if prompt_kind(request_text(body)) == "consistency" and n % 2 == 0 else "ok"

    with FakeJudge(script=script) as srv:
        cfg = base_cfg(fmt_model, data, tmp_path / "f", optim={"steps": 1},
                       reward={"judge": {"url": srv.url}, "embedder": None})
        t, _ = run_trainer(cfg)
    m = metrics(tmp_path / "f")[0]
    assert m["judge/con/failures"] > 0 and m["judge/failures"] >= m["judge/con/failures"]
    assert m["judge/filled_with_group_mean"] == m["judge/failures"]
    assert 0 < m["judge/failure_rate"] <= 1 and math.isfinite(m["loss"])
    samples = [json.loads(x) for x in (tmp_path / "f" / "samples.jsonl").read_text().splitlines()]
    assert any(s["rewards"]["con"] is None and "con_error" in s["details"] for s in samples)


def test_failure_rate_threshold_stops_training(fmt_model, data, tmp_path):
    with FakeJudge(default="500") as srv:
        cfg = base_cfg(fmt_model, data, tmp_path / "stop", reward={"judge": {"url": srv.url},
                                                                   "components": ["acc", "fmt", "con"],
                                                                   "failures": {"max_rate": 0.5, "min_calls": 1}})
        (tmp_path / "stop.yaml").write_text(json.dumps(cfg.to_dict()))  # JSON is YAML
        proc = subprocess.run([sys.executable, "-m", "trained_recipe.cli", "train", "--config",
                               str(tmp_path / "stop.yaml")], cwd=ROOT, env=ENV, capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "judge failure rate" in proc.stderr
    m = metrics(tmp_path / "stop")[-1]
    assert m["stopped"] == "judge failure rate" and m["judge/failure_rate"] > 0.5
    with pytest.raises(JudgeFailureRateExceeded):
        with FakeJudge(default="500") as srv:
            cfg = base_cfg(fmt_model, data, tmp_path / "stop2", reward={"judge": {"url": srv.url},
                                                                        "components": ["acc", "con"],
                                                                        "failures": {"max_rate": 0.5, "min_calls": 1}})
            run_trainer(cfg)


# -- a real LLM judge -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_url(tmp_path_factory):
    with smollm2_judge("smollm2", tmp_path_factory.mktemp("smol")) as url:
        yield url


def test_stage1_step_with_a_real_llm_judge(fmt_model, data, smollm2_url, tmp_path):
    """SmolLM2-135M judges (weakly; often not the requested JSON): the step completes, every
    verdict is a score or a counted failure filled with the group mean, never a silent 0."""
    cfg = base_cfg(fmt_model, data, tmp_path / "smol", optim={"steps": 1, "micro_batch_size": 2},
                   rollout={"group_size": 2, "prompts_per_step": 1},  # <= 4 judge calls: CPU time
                   reward={"judge": {"url": smollm2_url, "model": "smollm2", "max_tokens": 48, "timeout_s": 600,
                                     "concurrency": 8}})
    t, _ = run_trainer(cfg)
    m = metrics(tmp_path / "smol")[0]
    assert m["judge/requests"] > 0 and m["judge/judged"] > 0
    assert m["judge/filled_with_group_mean"] == m["judge/failures"]
    for c in ("acc", "fmt", "con", "sim"):
        assert 0.0 <= m[f"reward/{c}/mean"] <= 1.0
    assert math.isfinite(m["loss"])
