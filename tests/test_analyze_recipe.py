"""`dt-eval analyze tokens` end to end on a short trained_recipe CPU run: the format-trained tiny
audio LM (the recipe's smoke-test start model), 3 GRPO steps with a checkpoint each, every
checkpoint (and the start model) run with the hf backend recording log-probabilities
(`dt_eval.evaluate(..., logprobs=5)`, i.e. `dt-eval run --logprobs 5`) on a fake benchmark, then
the analysis reads the steps from the checkpoints' dt_recipe.json and reports the reasoning-token
entropy per checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dt_eval

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _dt_eval(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "dt_eval.cli", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkpoint_runs(tmp_path_factory):
    from dt_eval.testing.synth_audio import make_fake_benchmark
    from trained_recipe.config import load_config
    from trained_recipe.data import make_synthetic_task
    from trained_recipe.synth import cached_format_model
    from trained_recipe.trainer import Trainer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("recipe")
    start = cached_format_model()
    cfg = load_config(None, {
        "model": str(start), "output_dir": str(root / "train"), "seed": 1,
        "data": {"train": str(make_synthetic_task(root / "data", 8, seed=11))},
        "rollout": {"group_size": 2, "prompts_per_step": 2, "max_completion_length": 20, "temperature": 1.0},
        "optim": {"steps": 3, "lr": 5e-4, "micro_batch_size": 4}, "algo": {"beta": 0.01},
        "reward": {"components": ["acc", "fmt"]},
        "checkpoint": {"every": 1, "keep_last": 3},
        "log": {"progress": False, "samples_every": 0}, "model_opts": {"cpu_threads": 1}})
    trainer = Trainer(cfg)
    trainer.setup()
    try:
        trainer.train()
    finally:
        trainer.close()
    checkpoints = sorted((root / "train/checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-000001", "step-000002", "step-000003"]
    bench = make_fake_benchmark(root / "mmau", "mmau", 4, seed=2)
    runs = []
    for i, model in enumerate([start, *checkpoints]):
        out = root / f"eval{i}"
        # the runs record log-probabilities (hf backend: exact entropies), for the entropy per checkpoint
        res = dt_eval.evaluate("mmau", str(model), backend="hf", data_dirs={"mmau": str(bench)}, output=out,
                               batch_size=4, gen_kwargs="max_tokens=24", logprobs=5, progress=False,
                               on_event=lambda m: None)
        assert all(s.logprobs and s.error is None for s in res.samples)
        runs.append(out)
    return {"start": start, "runs": runs, "root": root}


def test_tokens_across_recipe_checkpoints(checkpoint_runs):
    runs, out = checkpoint_runs["runs"], checkpoint_runs["root"] / "analysis"
    proc = _dt_eval("analyze", "tokens", *runs, "-o", out, "--ngram", "2,3", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "tokens.json").read_text())
    # the start model is the checkpoints' base_model: step 0; the checkpoints carry 1, 2, 3
    assert res["steps"] == [0, 1, 2, 3] and "dt_recipe.json" in res["step_source"]
    assert res["items"] == 4 and res["token_unit"] == "model tokens (logprobs)"
    cps = res["checkpoints"]
    assert cps[0]["chains_with_reasoning"] > 0  # the format model writes a reasoning block
    for c, run in zip(cps, runs):  # lengths and entropies are those of the runs' own records
        recs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
        words = [len(re.findall(r"\w+", (r["reasoning_text"] or "").lower())) for r in recs]
        assert c["reasoning_words"]["mean"] == pytest.approx(sum(words) / len(words))
        spans = [r["logprobs"]["reasoning_tokens"] for r in recs]
        for r, n in zip(recs, spans):  # the reasoning tokens end at </think> when the output closed it
            assert len(r["logprobs"]["tokens"]) >= n and len(r["logprobs"]["tokens"]) >= r["completion_tokens"]
            if "</think>" in r["output"]:
                assert "".join(r["logprobs"]["tokens"][:n]).endswith("</think>")
        ents = [h for r, n in zip(recs, spans) for h in r["logprobs"]["entropy"][:n]]
        assert c["entropy"]["k"] == [None] and c["entropy"]["tokens"] == len(ents) > 0
        assert c["entropy"]["mean_per_token"] == pytest.approx(sum(ents) / len(ents))
        assert c["reasoning_tokens"]["mean"] == pytest.approx(sum(spans) / len(spans))
    assert len({round(c["entropy"]["mean_per_token"], 4) for c in cps}) > 1  # training moved the distribution
    assert cps[-1]["token_divergence"]["to_final"] == 0.0
    assert res["emergence"]["crystallized"] == sorted(res["emergence"]["crystallized"])
    for f in ("tokens_emergence.png", "tokens_divergence.png", "tokens_length_entropy.png", "tokens.md"):
        assert (out / f).stat().st_size > 500, f


def test_tokens_counted_with_the_model_tokenizer(checkpoint_runs):
    from dt_eval.analyze import tokens

    res = tokens(checkpoint_runs["runs"], tokenizer=str(checkpoint_runs["start"]), plots=False)
    assert res["token_unit"] == "tokenizer tokens"
    for c in res["checkpoints"]:
        assert c["reasoning_tokens"]["mean"] >= c["reasoning_words"]["mean"] > 0  # BPE: >= 1 token per word
