"""dt_eval.testing: the tiny offline Qwen2-Audio, synthetic audio and fake benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dt_eval.testing import synth_audio as sa

ROOT = Path(__file__).resolve().parents[1]

# Schema facts, observed in the real metadata files (MMAU test-mini
# mmau-test-mini.json, MMAR MMAR-meta.jsonl; MMSU: the HF parquet columns of ddwang2000/MMSU).
MMAU_KEYS = {"id", "audio_id", "question", "choices", "answer", "dataset", "task", "split",
             "category", "sub-category", "difficulty"}
MMAR_KEYS = {"id", "audio_path", "question", "choices", "answer", "modality", "category",
             "sub-category", "language", "source", "url", "timestamp", "thinking", "cue", "rubric"}
MMAR_RUBRIC_KEYS = {"name", "scoring_point", "note", "choices"}
MMSU_KEYS = {"id", "task_name", "audio", "question", "choice_a", "choice_b", "choice_c",
             "choice_d", "answer_gt", "category", "sub-category", "sub-sub-category",
             "linguistics_sub_discipline"}


# --------------------------------------------------------------------------- synthetic audio


def _dominant_freq(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("direction", ["rising", "falling"])
@pytest.mark.parametrize("method", ["log", "linear"])
def test_sweep_goes_the_right_way(direction, method):
    x = sa.sweep(direction, 2.0, method=method)
    assert x.dtype == np.float32 and x.shape == (32000,)
    assert np.abs(x).max() <= 0.3 + 1e-6
    start, end = _dominant_freq(x[1000:5000]), _dominant_freq(x[-5000:-1000])
    assert (end > start) == (direction == "rising")
    assert 250 < min(start, end) and max(start, end) < 1600


def test_sweep_rejects_inconsistent_frequencies():
    with pytest.raises(ValueError):
        sa.sweep("rising", 1.0, f0=1000, f1=500)
    with pytest.raises(ValueError):
        sa.sweep("sideways", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sa.sweep("rising", 1.0, f0=500, f1=9000)  # above Nyquist


def test_tone_noise_and_write_wav(tmp_path):
    t = sa.tone(440.0, 1.0, amplitude=0.5)
    assert t.dtype == np.float32 and len(t) == 16000
    assert abs(_dominant_freq(t) - 440) < 5
    n1, n2 = sa.noise(0.5, seed=1), sa.noise(0.5, seed=1)
    assert np.array_equal(n1, n2) and n1.dtype == np.float32
    p = sa.write_wav(tmp_path / "sub" / "t.wav", t, 16000)
    data, sr = sf.read(p, dtype="float32")
    assert sr == 16000 and len(data) == 16000
    assert np.allclose(data, t, atol=1e-4)
    p24 = sa.write_wav(tmp_path / "t24.wav", t, 16000, subtype="PCM_24")
    assert sf.info(p24).subtype == "PCM_24"


def test_speech_espeak_is_none_or_a_wav(tmp_path):
    out = sa.speech_espeak("The pitch goes up.", tmp_path / "s.wav")
    if out is None:
        import shutil

        assert shutil.which("espeak-ng") is None
        return
    data, sr = sf.read(out)
    assert sr == 16000 and len(data) > 1000


def test_modules_import_without_torch():
    code = ("import sys; import dt_eval.testing.synth_audio, dt_eval.testing.tiny_qwen2audio; "
            "bad = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --------------------------------------------------------------------------- fake benchmarks


def _load_meta(root: Path, task: str) -> list[dict]:
    name = sa.BENCH_LAYOUT[task][0]
    text = (root / name).read_text(encoding="utf-8")
    if task == "mmau":
        data = json.loads(text)
        assert isinstance(data, list)
        return data
    return [json.loads(line) for line in text.splitlines()]


def _audio_rel(task: str, rec: dict) -> str:
    return rec[{"mmau": "audio_id", "mmar": "audio_path", "mmsu": "audio"}[task]]


@pytest.mark.parametrize("task,keys", [("mmau", MMAU_KEYS), ("mmar", MMAR_KEYS),
                                       ("mmsu", MMSU_KEYS)])
def test_fake_benchmark_has_the_real_schema(fake_bench, task, keys):
    root = fake_bench(task, 7)
    recs = _load_meta(root, task)
    assert len(recs) == 7
    assert len({r["id"] for r in recs}) == 7
    for i, rec in enumerate(recs):
        assert set(rec) == keys
        rel = _audio_rel(task, rec)
        if task == "mmsu":
            assert rel == f"audio/{rec['id']}.wav"
            choices = [rec[f"choice_{c}"] for c in "abcd"]
            answer = rec["answer_gt"]
            assert choices[:2] == ["rising", "falling"]
        else:
            folder = "test-mini-audios" if task == "mmau" else "audio"
            assert rel == f"./{folder}/{rec['id']}.wav"
            choices, answer = rec["choices"], rec["answer"]
            assert isinstance(choices, list) and 2 <= len(choices) <= 4
            assert choices[:2] == ["rising", "falling"]
        assert answer == ("rising" if i % 2 == 0 else "falling")
        assert answer in choices
        data, sr = sf.read(root / rel, dtype="float32")
        assert sr == 16000 and 1.0 <= len(data) / sr <= 4.0
        assert 0.05 < np.abs(data).max() <= 1.0
    if task == "mmau":
        assert {r["split"] for r in recs} == {"test-mini"}
        assert {r["task"] for r in recs} <= {"sound", "music", "speech"}
        assert {r["difficulty"] for r in recs} <= {"easy", "medium", "hard"}
    if task == "mmar":
        for rec in recs:
            assert isinstance(rec["cue"], list) and isinstance(rec["thinking"], str)
            assert rec["language"] is None or isinstance(rec["language"], str)
            assert rec["source"] in ("youtube", "bilibili")
            start, end = rec["timestamp"].split(",")
            assert len(start) == len(end) == 8
            assert len(rec["rubric"]) == 5
            for item in rec["rubric"]:
                assert set(item) == MMAR_RUBRIC_KEYS and item["choices"] == [0, 1]


def test_fake_benchmark_is_deterministic(tmp_path):
    a = sa.make_fake_benchmark(tmp_path / "a", "mmar", 4, seed=3)
    b = sa.make_fake_benchmark(tmp_path / "b", "mmar", 4, seed=3)
    c = sa.make_fake_benchmark(tmp_path / "c", "mmar", 4, seed=4)
    meta = "MMAR-meta.jsonl"
    assert (a / meta).read_text() == (b / meta).read_text() != (c / meta).read_text()
    rec = json.loads((a / meta).read_text().splitlines()[1])
    assert (a / rec["audio_path"]).read_bytes() == (b / rec["audio_path"]).read_bytes()


def test_fake_bench_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "dt_eval.testing.synth_audio", "fake-bench", str(tmp_path / "m"),
         "--task", "mmsu", "--n", "3"], cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == str(tmp_path / "m")
    assert len(_load_meta(tmp_path / "m", "mmsu")) == 3


# --------------------------------------------------------------------------- tiny model


def _load(model_dir):
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    proc = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), proc


@pytest.mark.slow
def test_tiny_model_config_tokenizer_and_checkpoint(tiny_model_dir):
    from safetensors import safe_open

    from dt_eval.testing import tiny_qwen2audio as tq

    model, proc = _load(tiny_model_dir)
    tc, ac = model.config.text_config, model.config.audio_config
    assert (tc.hidden_size, tc.num_attention_heads, tc.num_hidden_layers) == (128, 4, 2)
    assert tc.hidden_size // tc.num_attention_heads == 32  # vLLM CPU attention: head_dim >= 32
    assert (ac.d_model, ac.num_mel_bins) == (64, 128)
    fe = proc.feature_extractor
    assert (fe.feature_size, fe.sampling_rate) == (128, 16000)
    tok = proc.tokenizer
    assert tok.convert_ids_to_tokens(list(range(6))) == list(tq.SPECIAL_TOKENS)
    assert model.config.audio_token_id == tok.convert_tokens_to_ids("<|AUDIO|>")
    assert tok.eos_token == "<|im_end|>" == tq.EOS_TOKEN
    for t in tq.THINK_TOKENS:  # single added tokens, kept by skip_special_tokens=True
        (tid,) = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.decode([tid], skip_special_tokens=True) == t
    keys = []
    for f in Path(tiny_model_dir).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            keys += list(st.keys())
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    assert not [k for k in keys if k.startswith("language_model.model.model.")]
    assert "language_model.lm_head.weight" in keys
    assert tq.check_checkpoint_keys(tiny_model_dir, fix=False) == []


@pytest.mark.slow
def test_chat_template(tiny_model_dir):
    _, proc = _load(tiny_model_dir)
    render = lambda msgs, gen=True: proc.apply_chat_template(  # noqa: E731
        msgs, add_generation_prompt=gen, tokenize=False)
    audio_line = "<|audio_bos|><|AUDIO|><|audio_eos|>\n"
    msgs = [{"role": "user", "content": [
        {"type": "audio", "audio_url": "a.wav"},
        {"type": "audio_url", "audio_url": {"url": "file:///b.wav"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "audio"},
        {"type": "text", "text": "Which?"}]}]
    assert render(msgs) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"Audio 1: {audio_line}Audio 2: {audio_line}Audio 3: {audio_line}Audio 4: {audio_line}"
        "Which?<|im_end|>\n<|im_start|>assistant\n")
    sys_msgs = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "<think>\nx\n</think>\n\nHello"}]
    assert render(sys_msgs, gen=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nx\n</think>\n\nHello<|im_end|>\n")


@pytest.mark.slow
def test_tiny_model_generates_with_real_audio(tiny_model_dir):
    import torch

    model, proc = _load(tiny_model_dir)
    msgs = [{"role": "user", "content": [{"type": "audio", "audio_url": "x.wav"},
                                         {"type": "text", "text": "What do you hear?"}]}]
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    audio = sa.sweep("rising", 2.5, f0=400, f1=2000)
    enc = proc(text=prompt, audio=[audio], sampling_rate=16000, return_tensors="pt")
    n_audio = int((enc["input_ids"] == model.config.audio_token_id).sum())
    frames = int(enc["feature_attention_mask"].sum())
    assert frames == 250  # 2.5 s at 100 mel frames / s, padded to 30 s
    assert n_audio == ((frames - 1) // 2 + 1 - 2) // 2 + 1  # conv stride 2, then pool 2
    assert enc["input_features"].shape == (1, 128, 3000)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


@pytest.mark.slow
def test_nested_checkpoint_keys_are_renamed(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open
    from safetensors.torch import save_file

    from dt_eval.testing.tiny_qwen2audio import check_checkpoint_keys

    save_file({"language_model.model.model.norm.weight": torch.ones(2),
               "language_model.model.lm_head.weight": torch.zeros(2, 2),
               "audio_tower.conv1.bias": torch.ones(3)}, str(tmp_path / "model.safetensors"))
    assert len(check_checkpoint_keys(tmp_path, fix=False)) == 2
    assert len(check_checkpoint_keys(tmp_path, fix=True)) == 2
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as st:
        assert sorted(st.keys()) == ["audio_tower.conv1.bias", "language_model.lm_head.weight",
                                     "language_model.model.norm.weight"]
    assert check_checkpoint_keys(tmp_path) == []


# Clips the fine-tune never saw: other lengths / frequencies / amplitudes / questions.
UNSEEN = [
    ("rising", dict(seconds=2.0), "Does the pitch go up or down?", None),  # sweep() defaults
    ("falling", dict(seconds=2.0), "Does the pitch go up or down?", None),
    ("rising", dict(seconds=2.7, f0=260, f1=1800, amplitude=0.2, method="linear"),
     "Which is it? (A) rising (B) falling", "You are a test oracle."),
    ("falling", dict(seconds=1.3, f0=3100, f1=650, amplitude=0.65), "Listen carefully.", None),
    ("rising", dict(seconds=3.6, f0=550, f1=2900, amplitude=0.08), "", "Think first."),
    ("falling", dict(seconds=3.9, f0=1200, f1=330, amplitude=0.45, method="linear"),
     "What is the pitch contour of this clip?", None),
    ("rising", dict(seconds=1.7, f0=480, f1=1500, amplitude=0.3),  # the MMAU task prompt
     "In which direction does the tone move?\n\nOptions:\n(A) rising\n(B) falling\n(C) steady"
     "\n\nThink about the audio step by step, then give the final answer as the option's "
     "letter and text.", None),
    ("falling", dict(seconds=2.4, f0=2200, f1=420, amplitude=0.7),  # the MMSU task prompt
     "Choose the most suitable answer from options A, B, C, and D. You must respond with only "
     "A, B, C, or D.\n\nQuestion: In which direction does the tone move?\n\nA. rising\n"
     "B. falling\nC. steady\nD. silent", "You are a helpful assistant."),
]


@pytest.mark.slow
@pytest.mark.parametrize("direction,kw,question,system", UNSEEN)
def test_deterministic_model_follows_the_audio(det_model_dir, direction, kw, question, system):
    import torch

    from dt_eval.testing.tiny_qwen2audio import EOS_TOKEN, TARGETS

    model, proc = _det_model(det_model_dir)
    content = [{"type": "audio", "audio_url": "clip.wav"}]
    if question:
        content.append({"type": "text", "text": question})
    msgs = [{"role": "user", "content": content}]
    if system:
        msgs.insert(0, {"role": "system", "content": system})
    prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    audio = sa.sweep(direction, **kw)
    enc = proc(text=prompt, audio=[audio], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=40, do_sample=False)
    text = proc.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=False)
    assert text == TARGETS[direction] + EOS_TOKEN


_DET_CACHE: dict = {}


def _det_model(model_dir):
    if model_dir not in _DET_CACHE:
        _DET_CACHE[model_dir] = _load(model_dir)
    return _DET_CACHE[model_dir]


def test_target_constants():
    from dt_eval.testing import tiny_qwen2audio as tq

    for d, (reasoning, answer) in tq.TARGET_PARTS.items():
        assert tq.TARGETS[d] == f"<think>\n{reasoning}\n</think>\n\n{answer}"
    assert tq.TARGET_RISING.endswith("(A) rising") and tq.TARGET_FALLING.endswith("(B) falling")


@pytest.mark.slow
def test_building_the_tiny_model_says_what_it_is_doing(tmp_path):
    """Issue #14 item 5: the build took ~70 s without a word. Every stage now prints a line on
    stderr (a quick build here: the random model, then a 2-step fine-tune without the check)."""
    pytest.importorskip("torch")
    code = ("import sys\nfrom dt_eval.testing.tiny_qwen2audio import build_tiny_model, make_deterministic\n"
            "src = build_tiny_model(sys.argv[1] + '/random')\n"
            "make_deterministic(src, sys.argv[1] + '/det', steps=2, n_clips=4, n_train=8, batch_size=4, "
            "verify=False)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("[tiny_qwen2audio] ")]
    for stage in ("building a random tiny Qwen2-Audio", "building the tokenizer", "initialising the model",
                  "random tiny model saved to", "making it deterministic", "encoding 4 synthetic pitch sweeps",
                  "fine-tuning: step 2/2", "deterministic tiny model saved to"):
        assert any(stage in line for line in said), (stage, proc.stderr)
    assert (tmp_path / "det" / "config.json").exists()
