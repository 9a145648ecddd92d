"""A tiny Qwen2-Audio model + processor, built fully offline, for tests and benchmarks.

Two variants:

* :func:`build_tiny_model` -- randomly initialised (~0.6 M parameters, ~2.4 MB), builds in a
  few seconds. Output is gibberish but every code path (processor, chat template, audio
  placeholder expansion, generate, vLLM loading) is the real Qwen2-Audio one.
* :func:`make_deterministic` -- the same model after a short CPU fine-tune on synthetic pitch
  sweeps (:mod:`dt_eval.devtools.synth_audio`). Greedy decoding then emits exactly
  :data:`TARGET_RISING` for a rising sweep and :data:`TARGET_FALLING` for a falling sweep,
  each followed by ``<|im_end|>``, whatever the question text or system prompt. This gives
  exact end-to-end assertions on reasoning/answer splitting, choice parsing and scoring, and
  the answer depends on the audio, so a harness that drops or mixes up audio is caught.

:func:`cached_tiny_model` builds once per (this module's source, transformers, torch) into
``$DT_EVAL_CACHE`` (default ``~/.cache/dt-eval``) and reuses it across processes.

CLI::

    python -m dt_eval.devtools.tiny_qwen2audio OUT_DIR [--deterministic] [--seed 0] [--steps N]

Importing this module does not import torch / transformers / tokenizers; only calling the
build functions does.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

# --------------------------------------------------------------------------- constants

#: Greedy output of the deterministic model for a rising pitch sweep (then ``<|im_end|>``).
TARGET_RISING = "<think>\nThe pitch goes up.\n</think>\n\n(A) rising"
#: Greedy output of the deterministic model for a falling pitch sweep (then ``<|im_end|>``).
TARGET_FALLING = "<think>\nThe pitch goes down.\n</think>\n\n(B) falling"
#: Direction -> target string.
TARGETS = {"rising": TARGET_RISING, "falling": TARGET_FALLING}
#: Reasoning part / answer part of each target (what a thinking-aware harness should split).
TARGET_PARTS = {
    "rising": ("The pitch goes up.", "(A) rising"),
    "falling": ("The pitch goes down.", "(B) falling"),
}
#: End-of-turn token (the tokenizer's EOS); generation stops on it.
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
#: Special tokens of the BPE tokenizer, in id order (ids 0..5), as in real Qwen2-Audio.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
)
#: Added (non-special) tokens: kept by ``decode(skip_special_tokens=True)``, like Qwen3 thinking.
THINK_TOKENS = ("<think>", "</think>")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
SAMPLING_RATE = 16000

#: Chat template in the style of Qwen2-Audio-7B-Instruct's. Differences: an audio part may be
#: ``{"type": "audio"}``, ``{"type": "audio_url", ...}``, ``{"type": "input_audio", ...}`` or any
#: dict with an ``audio`` / ``audio_url`` / ``input_audio`` key; ``{"type": "text"}`` parts and
#: plain-string contents are rendered as text. Like the original, a default system prompt is
#: inserted when the first message is not a system message. No whitespace control (``{%-``) is
#: used: the string has no incidental whitespace, and ``-`` would eat the literal newlines.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% set ctype = content['type'] if 'type' in content else '' %}"
    "{% if ctype in ['audio', 'audio_url', 'input_audio'] or 'audio' in content"
    " or 'audio_url' in content or 'input_audio' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Model shape. head_dim must be >= 32 (vLLM's CPU attention supports 32, 64, 80, 96, ...).
TEXT_CONFIG = dict(
    model_type="qwen2", hidden_size=128, intermediate_size=256, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
    tie_word_embeddings=False, rope_theta=10000.0,
)
AUDIO_CONFIG = dict(
    model_type="qwen2_audio_encoder", d_model=64, encoder_attention_heads=4, encoder_ffn_dim=128,
    encoder_layers=2, num_mel_bins=128, max_source_positions=1500,
)

# Words the deterministic model sees; the BPE is trained on them so they tokenize compactly.
TRAIN_QUESTIONS = (
    "What do you hear?",
    "Does the pitch of the tone go up or down?",
    "Which best describes how the pitch changes over the clip?",
    "Listen to the tone. Is its pitch rising or falling?",
    "What is the direction of the frequency sweep in this recording?",
    "Describe the audio.",
    "Answer with the letter of the correct option. (A) rising (B) falling",
    "Choose one: rising, falling, steady, silent.",
    "Question: how does the sound change?\nChoices:\n(A) rising\n(B) falling\n(C) steady\n(D) silent",
    "Think step by step, then answer.",
    "",
)
TRAIN_SYSTEM_PROMPTS = (
    None,  # no system message -> the template's default one
    DEFAULT_SYSTEM_PROMPT,
    "You are an expert in audio analysis. Think before you answer.",
    "Answer the multiple-choice question about the audio.",
)
_BPE_CORPUS = (
    DEFAULT_SYSTEM_PROMPT,
    "system user assistant Audio 1: Audio 2:",
    "The pitch goes up. The pitch goes down. The answer is (A) rising (B) falling (C) steady (D) silent",
    "Let me think step by step about the audio clip. What is the sound in the audio?",
    "I hear a steady tone. The tone is rising. The tone is falling. Question Choices Answer",
    *[q for q in TRAIN_QUESTIONS if q],
    *[s for s in TRAIN_SYSTEM_PROMPTS if s],
)


# --------------------------------------------------------------------------- building


def _build_tokenizer():
    """Byte-level BPE trained offline on a few sentences, wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_BPE_CORPUS) * 20, trainer)
    tok.add_tokens(list(THINK_TOKENS))  # normal added tokens, as in Qwen3 (not "special")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )


def _build_processor():
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=30,
        n_fft=400, padding_value=0.0, return_attention_mask=True,
    )
    return Qwen2AudioProcessor(
        feature_extractor=fe, tokenizer=_build_tokenizer(), chat_template=CHAT_TEMPLATE
    )


def _nested_key_fix(key: str) -> str:
    """Map a transformers-5.19-style key to the one vLLM loads.

    Some transformers versions (5.19 was seen) save Qwen2-Audio's language model as
    ``language_model.model.model.*`` / ``language_model.model.lm_head.*``; vLLM's weight
    loader only accepts ``language_model.model.*`` / ``language_model.lm_head.*``.
    """
    for old, new in (
        ("language_model.model.model.", "language_model.model."),
        ("language_model.model.lm_head.", "language_model.lm_head."),
    ):
        if key.startswith(old):
            return new + key[len(old):]
    return key


def check_checkpoint_keys(model_dir: str | Path, fix: bool = True) -> list[str]:
    """Return the keys of ``model_dir``'s safetensors that vLLM would reject.

    With ``fix=True`` those keys are renamed in place (see :func:`_nested_key_fix`) and the
    list of keys that *were* bad is returned. transformers 5.23 writes the good form already,
    so this is normally a no-op check.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    bad: list[str] = []
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            keys = list(st.keys())
            metadata = st.metadata()
            wrong = [k for k in keys if _nested_key_fix(k) != k]
            if not wrong or not fix:
                bad += wrong
                continue
            tensors = {_nested_key_fix(k): st.get_tensor(k) for k in keys}
        save_file(tensors, str(f), metadata=metadata)
        bad += wrong
    index = Path(model_dir) / "model.safetensors.index.json"
    if fix and bad and index.exists():
        import json

        data = json.loads(index.read_text())
        data["weight_map"] = {_nested_key_fix(k): v for k, v in data["weight_map"].items()}
        index.write_text(json.dumps(data, indent=2))
    return bad


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Build a random tiny Qwen2-Audio (model + processor) into ``out_dir``; returns it.

    Text model: Qwen2, hidden 128, 4 heads x head_dim 32 (2 KV heads), 2 layers. Audio
    encoder: d_model 64, 2 layers, 128 mel bins. ~0.6 M parameters, float32.
    """
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor = _build_processor()
    tok = processor.tokenizer
    cfg = Qwen2AudioConfig(
        text_config=dict(TEXT_CONFIG, vocab_size=len(tok)),
        audio_config=dict(AUDIO_CONFIG),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    cfg.text_config.eos_token_id = tok.eos_token_id
    cfg.text_config.pad_token_id = tok.pad_token_id
    cfg.text_config.bos_token_id = None
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg).eval()
    gen = model.generation_config
    gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = None
    gen.do_sample = False  # greedy by default: what the deterministic variant is trained for
    model.save_pretrained(out)
    processor.save_pretrained(out)
    fixed = check_checkpoint_keys(out, fix=True)
    if fixed:
        print(f"[tiny_qwen2audio] renamed {len(fixed)} nested checkpoint keys for vLLM",
              file=sys.stderr)
    return out


# --------------------------------------------------------------------------- fine-tuning


def _render_prompt(processor, question: str, system: str | None, audio_first: bool) -> str:
    parts = [{"type": "audio", "audio_url": "clip.wav"}]
    if question:
        parts = parts + [{"type": "text", "text": question}] if audio_first else (
            [{"type": "text", "text": question}] + parts)
    messages = [{"role": "user", "content": parts}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def random_sweep_params(rng, direction: str) -> dict:
    """Random sweep parameters within the range the deterministic model is trained on."""
    lo = float(rng.uniform(150.0, 700.0))
    hi = float(min(lo * rng.uniform(1.8, 6.0), 4000.0))
    f0, f1 = (lo, hi) if direction == "rising" else (hi, lo)
    return dict(
        direction=direction, seconds=float(rng.uniform(1.0, 4.0)), f0=f0, f1=f1,
        amplitude=float(rng.uniform(0.05, 0.8)),
        method=("log", "linear")[int(rng.integers(0, 2))],
    )


def _make_examples(processor, n: int, seed: int):
    """``n`` training examples: (input_ids, labels, input_features, feature_attention_mask)."""
    import numpy as np
    import torch

    from dt_eval.devtools.synth_audio import sweep

    rng = np.random.default_rng(seed)
    tok = processor.tokenizer
    out = []
    for i in range(n):
        direction = ("rising", "falling")[i % 2]
        p = random_sweep_params(rng, direction)
        audio = sweep(p.pop("direction"), sr=SAMPLING_RATE, **p)
        if rng.random() < 0.3:  # a little noise, so the model keys on the pitch contour
            audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * 0.01
        prompt = _render_prompt(
            processor,
            TRAIN_QUESTIONS[int(rng.integers(0, len(TRAIN_QUESTIONS)))],
            TRAIN_SYSTEM_PROMPTS[int(rng.integers(0, len(TRAIN_SYSTEM_PROMPTS)))],
            audio_first=bool(rng.random() < 0.8),
        )
        enc = processor(text=prompt, audio=[audio], sampling_rate=SAMPLING_RATE,
                        return_tensors="pt")
        target = tok(TARGETS[direction] + EOS_TOKEN, add_special_tokens=False)["input_ids"]
        prompt_ids = enc["input_ids"][0]
        ids = torch.cat([prompt_ids, torch.tensor(target)])
        labels = ids.clone()
        labels[: len(prompt_ids)] = -100
        out.append((ids, labels, enc["input_features"][0], enc["feature_attention_mask"][0]))
    return out


def _collate(examples, pad_id: int):
    import torch

    n = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), n), dtype=torch.long)
    for j, (x, y, _, _) in enumerate(examples):  # right padding
        ids[j, : len(x)] = x
        labels[j, : len(y)] = y
        attn[j, : len(x)] = 1
    return dict(
        input_ids=ids, attention_mask=attn, labels=labels,
        input_features=torch.stack([e[2] for e in examples]),
        feature_attention_mask=torch.stack([e[3] for e in examples]),
    )


def greedy_generate(model, processor, audio, question: str = "What do you hear?",
                    system: str | None = None, max_new_tokens: int = 48) -> str:
    """Greedy HF generation for one clip; returns the decoded new tokens (specials kept)."""
    import torch

    prompt = _render_prompt(processor, question, system, audio_first=True)
    enc = processor(text=prompt, audio=[audio], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:],
                                      skip_special_tokens=False)


def make_deterministic(
    src: str | Path,
    dst: str | Path,
    steps: int = 300,
    *,
    seed: int = 0,
    n_train: int = 96,
    batch_size: int = 8,
    lr: float = 3e-3,
    verify: bool = True,
    verbose: bool = False,
) -> Path:
    """Fine-tune the tiny model at ``src`` so greedy output follows the pitch direction.

    AdamW on ``n_train`` synthetic sweeps (1-4 s, 150-4000 Hz, log or linear, amplitudes
    0.05-0.8, some with light noise), random question texts from :data:`TRAIN_QUESTIONS`,
    with and without a system prompt, audio before or after the text. Rising -> target
    :data:`TARGET_RISING`, falling -> :data:`TARGET_FALLING`, each + ``<|im_end|>``.

    With ``verify`` the result is checked on fresh sweeps and unseen questions; a
    ``RuntimeError`` is raised (nothing saved) if any greedy output is not exact.
    """
    import numpy as np
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from dt_eval.devtools.synth_audio import sweep

    src, dst = Path(src), Path(dst)
    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(src)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
    pad_id = processor.tokenizer.pad_token_id
    data = _make_examples(processor, n_train, seed=seed + 1)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps))
    order_rng = np.random.default_rng(seed + 2)
    model.train()
    t0 = time.perf_counter()
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += list(order_rng.permutation(len(data)))
        batch = _collate([data[order.pop()] for _ in range(batch_size)], pad_id)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if verbose and (step % 25 == 0 or step == steps - 1):
            print(f"step {step:4d} loss {loss.item():.4f} {time.perf_counter() - t0:.1f}s",
                  file=sys.stderr)
    model.eval()

    if verify:
        rng = np.random.default_rng(seed + 10_000)
        failures = []
        for i in range(8):
            direction = ("rising", "falling")[i % 2]
            p = random_sweep_params(rng, direction)
            audio = sweep(p.pop("direction"), sr=SAMPLING_RATE, **p)
            q = ("Is the pitch rising or falling?", "What happens to the tone?")[i % 4 // 2]
            system = (None, "You are a careful listener.")[i % 3 // 2]
            got = greedy_generate(model, processor, audio, q, system)
            if got != TARGETS[direction] + EOS_TOKEN:
                failures.append((direction, got))
        if failures:
            raise RuntimeError(f"deterministic fine-tune did not converge: {failures}")

    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    check_checkpoint_keys(dst, fix=True)
    return dst


# --------------------------------------------------------------------------- cache


def _cache_key() -> str:
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(Path(__file__).read_bytes())
    for pkg in ("transformers", "torch"):
        try:
            h.update(f"{pkg}=={version(pkg)}".encode())
        except PackageNotFoundError:
            h.update(f"{pkg}==none".encode())
    return h.hexdigest()[:12]


def cache_root() -> Path:
    """``$DT_EVAL_CACHE`` or ``~/.cache/dt-eval``."""
    return Path(os.environ.get("DT_EVAL_CACHE") or Path.home() / ".cache" / "dt-eval")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another process builds
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_tiny_model(deterministic: bool = True) -> Path:
    """Path of a cached tiny model, built on first use (deterministic or random variant).

    Lives in ``cache_root()/tiny-qwen2audio-<key>/{random,deterministic}``, where ``<key>``
    hashes this module's source and the transformers/torch versions. Builds happen under an
    fcntl lock, into a temp dir that is renamed into place, so concurrent processes never see
    a half-written model. Treat the returned directory as read-only.
    """
    base = cache_root() / f"tiny-qwen2audio-{_cache_key()}"
    final = base / ("deterministic" if deterministic else "random")
    if (final / "config.json").exists():
        return final
    with _file_lock(base.parent / f"{base.name}.lock"):
        if (final / "config.json").exists():  # built by another process meanwhile
            return final
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=base))
        try:
            if deterministic:
                src = base / "random"
                if not (src / "config.json").exists():
                    src = build_tiny_model(tmp / "random")
                make_deterministic(src, tmp / "model")
            else:
                build_tiny_model(tmp / "model")
            os.rename(tmp / "model", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dt_eval.devtools.tiny_qwen2audio",
                                description="Build a tiny offline Qwen2-Audio model.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--deterministic", action="store_true",
                   help="fine-tune so greedy output is TARGET_RISING / TARGET_FALLING")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="fine-tune steps")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.deterministic:
        with tempfile.TemporaryDirectory() as tmp:
            src = build_tiny_model(Path(tmp) / "random", seed=args.seed)
            t1 = time.perf_counter()
            kw = {} if args.steps is None else {"steps": args.steps}
            make_deterministic(src, args.out_dir, seed=args.seed, verbose=args.verbose, **kw)
        if args.verbose:
            print(f"build {t1 - t0:.1f}s, fine-tune {time.perf_counter() - t1:.1f}s",
                  file=sys.stderr)
    else:
        build_tiny_model(args.out_dir, seed=args.seed)
        if args.verbose:
            print(f"build {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
