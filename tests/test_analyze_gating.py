"""`dt-eval analyze gating` on tiny MoE models built offline (dt_eval.testing.tiny_moe): a tuned
copy whose routers changed only in the top two layers diverges exactly there; a copy whose
experts changed only in layer 1 has unchanged routers and diverges only above layer 1; teacher
forcing routes the same tokens in every model (checked against transformers' own
`output_router_logits`); a dense model is a clear error; the Qwen3-Omni-MoE thinker runs end
to end with real audio through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dt_eval.analyze import AnalyzeError, gating  # noqa: E402
from dt_eval.tasks.prompts import PromptSettings  # noqa: E402
from dt_eval.storage.rundir import RunDir  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
N_ITEMS = 3
REASONING = "<think>\nThe pitch goes up. The tone is rising.\n</think>"
ANSWER = "\n\n(A) rising"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from dt_eval.testing.synth_audio import make_fake_benchmark

    return make_fake_benchmark(tmp_path_factory.mktemp("mmar"), "mmar", N_ITEMS, seed=4)


@pytest.fixture(scope="module")
def responses(bench, tmp_path_factory):
    """A run directory as `dt-eval run` leaves it: the responses to teacher-force."""
    from dt_eval.tasks.data import load_task_data
    from dt_eval.tasks.config import load_task

    items = load_task_data(load_task("mmar"), bench).items
    run = tmp_path_factory.mktemp("responses")
    with RunDir(run) as rd:
        rd.write_config({"identity": {"model": "some-model", "prompt": PromptSettings().to_dict(),
                                      "audio_window_s": None}})
        rd.append([{"key": f"mmar/{it.id}/0", "task": "mmar", "id": it.id, "repeat": 0, "output": REASONING + ANSWER,
                    "reasoning": None, "error": None} for it in items])
    return run


def _models(root: Path, family: str) -> dict[str, Path]:
    from dt_eval.testing.tiny_moe import build_tiny_moe, perturb

    base = build_tiny_moe(root / "base", family, layers=4, experts=8, top_k=2)
    return {"base": base,
            "routers_top2": perturb(base, root / "routers_top2", routers=[-2, -1], scale=0.5, seed=1),
            "experts_1": perturb(base, root / "experts_1", experts=[1], scale=1.0, seed=2),
            "copy": perturb(base, root / "copy")}


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return _models(tmp_path_factory.mktemp("qwen3_moe"), "qwen3_moe")


def _shown(t):
    return {s: v for s, v in t["segments"].items() if v["tokens"]}


# qwen3_omni: the full Qwen3-Omni-MoE class (thinker inside, no talker), with audio
@pytest.mark.parametrize("family", ["qwen3_moe", "qwen2_moe", "mixtral", "qwen3_omni"])
def test_router_change_in_top_two_layers_and_expert_change_below(family, bench, responses, tmp_path, qwen3):
    torch.set_num_threads(1)
    m = qwen3 if family == "qwen3_moe" else _models(tmp_path / "models", family)
    res = gating(str(m["base"]), [str(m["routers_top2"]), str(m["experts_1"])], ["mmar"], output=tmp_path / "out",
                 data_dirs={"mmar": str(bench)}, responses=responses, plots=False)
    top2, experts = res["tuned"]
    assert res["base"]["layers"] == [0, 1, 2, 3] and res["items"]["used"] == N_ITEMS
    # routers changed only in layers 2 and 3: divergence exactly there, exactly zero below
    assert top2["router_weight_change"][:2] == [0.0, 0.0]
    assert all(0.4 < x < 0.6 for x in top2["router_weight_change"][2:])  # the 0.5 relative noise
    segs = _shown(top2)
    audio = {"audio"} if family == "qwen3_omni" else set()  # a text-only model has no audio segment
    assert set(segs) == {"prompt", "reasoning", "answer", "all"} | audio
    assert res["base"]["family"] == {"qwen3_omni": "qwen3_omni_moe"}.get(family, family)
    for name, v in segs.items():
        assert v["jsd"][:2] == [0.0, 0.0] and v["jaccard"][:2] == [1.0, 1.0], name
        assert all(x > 1e-3 for x in v["jsd"][2:]), (name, v["jsd"])
        assert v["load_entropy_change"][:2] == [0.0, 0.0]
    # experts changed in layer 1 only: routers untouched; routing moves only where inputs changed
    assert experts["router_weight_change"] == [0.0] * 4
    for name, v in _shown(experts).items():
        assert v["jsd"][:2] == [0.0, 0.0], name  # layer 1's router runs before its experts
        assert v["jsd"][2] > 1e-4 and v["jsd"][3] > 1e-4, (name, v["jsd"])
    assert not (tmp_path / "out/cache").exists()  # the base cache is removed
    assert json.loads((tmp_path / "out/gating.json").read_text())["tuned"][0]["model"] == str(m["routers_top2"])


def test_teacher_forcing_routes_the_same_tokens(qwen3, bench, responses, tmp_path):
    """Every model is fed the same token ids (digests); an identical copy diverges by exactly 0 on
    every segment; and the reasoning/answer numbers equal an independent computation from
    transformers' `output_router_logits` on the prompt + recorded response."""
    from transformers import AutoTokenizer, Qwen3MoeForCausalLM

    from dt_eval.tasks.data import load_task_data
    from dt_eval.tasks.prompts import build_messages
    from dt_eval.tasks.config import load_task

    torch.set_num_threads(1)
    res = gating(str(qwen3["base"]), [str(qwen3["copy"]), str(qwen3["routers_top2"])], ["mmar"], limit=1,
                 output=tmp_path / "tf", data_dirs={"mmar": str(bench)}, responses=responses, plots=False)
    copy, top2 = res["tuned"]
    assert copy["input_digest"] == top2["input_digest"] == res["items"]["input_digest"]
    for v in _shown(copy).values():
        assert v["jsd"] == [0.0] * 4 and v["jaccard"] == [1.0] * 4 and v["top1_agreement"] == [1.0] * 4

    # independent reference: one string, one tokenization, the model's own router-logit output
    tok = AutoTokenizer.from_pretrained(qwen3["base"])
    cfg = load_task("mmar")
    item = load_task_data(cfg, bench).items[0]
    messages, _ = build_messages(cfg, item, PromptSettings())
    messages = [m if isinstance(m["content"], str) else
                {"role": m["role"], "content": [p for p in m["content"] if p["type"] != "audio"]} for m in messages]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    ids = tok(prompt + REASONING + ANSWER, add_special_tokens=False, return_tensors="pt")["input_ids"]
    # (the prompt's own think instruction names </think> too: look after the prompt)
    close = n_prompt + ids[0].tolist()[n_prompt:].index(tok.convert_tokens_to_ids("</think>"))
    seg = {"prompt": slice(0, n_prompt), "reasoning": slice(n_prompt, close + 1), "answer": slice(close + 1, None)}
    assert {s: res["items"]["tokens"][s] for s in seg} == {s: len(range(ids.shape[1])[sl]) for s, sl in seg.items()}

    def routing(path):
        model = Qwen3MoeForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(input_ids=ids, output_router_logits=True).router_logits
        return [torch.softmax(x.float(), -1).to(torch.float16).double().numpy() for x in logits]

    def jsd(p, q):
        m = (p + q) / 2
        kl = lambda a: np.where(a > 0, a * (np.log2(np.where(a > 0, a, 1)) - np.log2(np.where(m > 0, m, 1))), 0).sum(-1)  # noqa: E731
        return np.maximum(0.5 * kl(p) + 0.5 * kl(q), 0)

    base_r, top2_r = routing(qwen3["base"]), routing(qwen3["routers_top2"])
    for name, sl in seg.items():
        want = [float(jsd(p[sl], q[sl]).mean()) for p, q in zip(base_r, top2_r)]
        assert top2["segments"][name]["jsd"] == pytest.approx(want, abs=1e-5), name
        assert want[2] > 1e-3


def test_router_weights_without_data_and_mismatched_models(qwen3, tmp_path):
    from dt_eval.testing.tiny_moe import build_tiny_moe

    res = gating(str(qwen3["base"]), [str(qwen3["routers_top2"]), str(qwen3["experts_1"])], None,
                 output=tmp_path / "w", plots=True)
    assert "segments" not in res["tuned"][0] and "items" not in res
    change = res["tuned"][0]["router_weight_change"]
    assert change[:2] == [0.0, 0.0] and all(0.4 < x < 0.6 for x in change[2:])
    assert res["tuned"][1]["router_weight_change"] == [0.0] * 4
    assert (tmp_path / "w/router_weight_change.png").stat().st_size > 5000
    other = build_tiny_moe(tmp_path / "four_experts", "qwen3_moe", layers=4, experts=4, top_k=2)
    with pytest.raises(AnalyzeError, match="differ from the base's"):
        gating(str(qwen3["base"]), [str(other)], None, output=tmp_path / "x")


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "dt_eval.cli", "analyze", "gating", *map(str, args)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def test_dense_model_is_a_clear_error(tiny_model_dir, tmp_path):
    proc = _cli("--base", tiny_model_dir, "--tuned", tiny_model_dir, "-o", tmp_path / "d", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has no mixture-of-experts router" in proc.stderr and "Traceback" not in proc.stderr


def test_qwen3_omni_thinker_end_to_end_with_real_audio(bench, responses, tmp_path):
    """The tiny Qwen3-Omni-MoE thinker (real Whisper-style audio encoder) on synthetic sweeps."""
    import soundfile as sf

    from dt_eval.testing.tiny_moe import build_tiny_moe, perturb

    base = build_tiny_moe(tmp_path / "omni", "qwen3_omni_thinker", layers=4, experts=8, top_k=2)
    tuned = perturb(base, tmp_path / "omni_top2", routers=[-2, -1])
    out = tmp_path / "g"
    proc = _cli("--base", base, "--tuned", tuned, "--tasks", "mmar", "--data-dir", f"mmar={bench}",
                "--responses", responses, "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "gating.json").read_text())
    seconds = sum(sf.info(str(p)).duration for p in (bench / "audio").glob("*.wav"))
    n_audio = res["items"]["tokens"]["audio"]
    # ~12.5-13 audio-encoder frames per second (100 mel frames/s, 8x downsampling): the audio went in
    assert abs(n_audio - 12.75 * seconds) <= 2 * N_ITEMS, (n_audio, seconds)
    segs = _shown(res["tuned"][0])
    assert set(segs) == {"audio", "prompt", "reasoning", "answer", "all"}
    for name, v in segs.items():
        assert v["jsd"][:2] == [0.0, 0.0] and all(x > 1e-3 for x in v["jsd"][2:]), (name, v["jsd"])
    assert res["base"]["family"] == "qwen3_omni_moe_thinker"
    assert (out / "gating_divergence.png").stat().st_size > 10_000
    assert "JSD audio" in proc.stdout and "JSD reasoning" in proc.stdout


def test_one_model_in_memory_at_a_time(qwen3, bench, responses, tmp_path, monkeypatch):
    """When a checkpoint is loaded, every model loaded before it is already gone."""
    import gc
    import weakref

    import dt_eval.analyze.moe as moe

    real, alive_at_load = moe.load_model, []
    refs: list[weakref.ref] = []

    def tracking_load(*a, **k):
        gc.collect()
        alive_at_load.append(sum(r() is not None for r in refs))
        model = real(*a, **k)
        refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(moe, "load_model", tracking_load)
    gating(str(qwen3["base"]), [str(qwen3["copy"]), str(qwen3["experts_1"])], ["mmar"], limit=1,
           output=tmp_path / "mem", data_dirs={"mmar": str(bench)}, responses=responses, plots=False)
    gc.collect()
    assert alive_at_load == [0, 0, 0] and all(r() is None for r in refs)


def test_inputs_through_a_real_audio_processor(tiny_model_dir, bench):
    """The processor path (Qwen2-Audio's processor: what a Qwen3-Omni checkpoint uses where its
    processor loads): audio placeholders expanded by the processor become the audio segment, and
    the response pieces keep their own token counts."""
    import soundfile as sf
    from transformers import AutoConfig, AutoTokenizer

    from dt_eval.analyze.inputs import SEGMENTS, InputBuilder, split_response
    from dt_eval.pipeline.audio import load_audio
    from dt_eval.tasks.data import load_task_data
    from dt_eval.tasks.prompts import build_messages
    from dt_eval.tasks.config import load_task

    builder = InputBuilder(str(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir))
    assert builder.processor is not None and builder.notes == []
    cfg = load_task("mmar")
    item = load_task_data(cfg, bench).items[0]
    messages, kwargs = build_messages(cfg, item, PromptSettings())
    audio = load_audio(item.audio, builder.sampling_rate).audio.array
    reasoning, answer = split_response(REASONING + ANSWER)
    assert (reasoning, answer) == (REASONING, ANSWER)
    enc = builder.encode(messages, kwargs, audio, reasoning, answer)
    counts = {s: int((enc.segments == i).sum()) for i, s in enumerate(SEGMENTS)}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert counts["reasoning"] == len(tok(REASONING, add_special_tokens=False)["input_ids"])
    assert counts["answer"] == len(tok(ANSWER, add_special_tokens=False)["input_ids"])
    seconds = sf.info(item.audio.path).duration
    assert abs(counts["audio"] - 25 * seconds) <= 2, (counts, seconds)  # Qwen2-Audio: 25 frames/s
    assert enc.inputs["input_ids"].shape[1] == len(enc.segments) and "input_features" in enc.inputs


def test_an_item_failing_part_way_leaves_no_trace(tmp_path):
    """A forward that fails after some layers ran (e.g. out of memory) is undone: the cache rows
    and expert load of the other items are exactly as if it never started."""
    from dt_eval.analyze.routing_stats import Accumulator, BaseCache, BaseRecorder

    n_layers, n_exp, t = 3, 4, 5
    rng = torch.Generator().manual_seed(0)
    logits = {key: [torch.randn(t, n_exp, generator=rng) for _ in range(n_layers)] for key in "ABC"}
    seg = np.array([0, 1, 1, 2, 3], dtype=np.int8)

    def run(keys, fail=None):
        cache = BaseCache(tmp_path / f"c{len(keys)}{fail}", n_layers, n_exp, "float16")
        rec = BaseRecorder(cache, Accumulator(n_layers, n_exp, "cpu", []), 2, "float16", "cpu")
        for key in keys:
            rec.start(key, seg, key)
            for pos, x in enumerate(logits[key][: 1 if key == fail else n_layers]):
                rec.on_layer(pos, x)
            if key == fail:
                rec.drop(key)
        cache.finish()
        return cache, rec.acc

    clean_cache, clean = run("AC")
    cache, acc = run("ABC", fail="B")
    assert list(cache.index) == ["A", "C"] and cache.path.stat().st_size == clean_cache.path.stat().st_size
    for key in "AC":
        for pos in range(n_layers):
            assert np.array_equal(cache.rows(key, pos), clean_cache.rows(key, pos))
    assert torch.equal(acc.load, clean.load) and torch.equal(acc.tokens, clean.tokens)


def test_a_bad_clip_is_skipped_and_counted(bench, responses, tmp_path):
    import shutil

    from dt_eval.testing.tiny_moe import build_tiny_moe

    bad = tmp_path / "bench"
    shutil.copytree(bench, bad)
    clip = sorted((bad / "audio").glob("*.wav"))[0]
    clip.write_bytes(b"")  # an empty file: the item cannot be used
    omni = build_tiny_moe(tmp_path / "omni", "qwen3_omni_thinker", layers=2, experts=4, top_k=2)
    res = gating(str(omni), [str(omni)], ["mmar"], output=tmp_path / "o", data_dirs={"mmar": str(bad)},
                 responses=responses, plots=False)
    assert res["items"]["used"] == N_ITEMS - 1 and res["items"]["skipped"] == {"audio error": 1}
    assert res["tuned"][0]["segments"]["all"]["jsd"] == [0.0, 0.0]
