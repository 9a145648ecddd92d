"""A tiny Qwen2-Audio model + processor, built fully offline, for tests and benchmarks.

Two variants:

* :func:`build_tiny_model` -- randomly initialised (~0.6 M parameters, ~2.4 MB), builds in a
  few seconds. Output is gibberish but every code path (processor, chat template, audio
  placeholder expansion, generate, vLLM loading) is the real Qwen2-Audio one.
* :func:`make_deterministic` -- the same architecture with a hand-set "pitch contour" audio
  encoder and a language model fine-tuned for a minute on CPU to read it. Greedy decoding
  then emits exactly :data:`TARGET_RISING` for a rising pitch sweep and
  :data:`TARGET_FALLING` for a falling one (:func:`dt_eval.testing.synth_audio.sweep`), each
  followed by ``<|im_end|>``, whatever the question text or system prompt. This gives exact
  end-to-end assertions on reasoning/answer splitting, choice parsing and scoring, and the
  answer depends on the audio, so a harness that drops or mixes up audio clips is caught.
  Trained range: 1-4 s sweeps, lowest frequency 200-700 Hz, top/bottom ratio 2-6, top
  <= 4 kHz, amplitude 0.05-0.8 (:func:`random_sweep_params`). Outside it (tones, noise,
  speech, > 30 s) the output is one of the two targets or something else: don't assert on it.

:func:`cached_tiny_model` builds once per (this module's + synth_audio's source,
transformers, torch) into ``$DT_EVAL_CACHE`` (default ``~/.cache/dt-eval``) and reuses it
across processes.

CLI::

    python -m dt_eval.testing.tiny_qwen2audio OUT_DIR [--deterministic] [--seed 0] [--steps N] [-v]

Importing this module does not import torch / transformers / tokenizers; only calling the
build functions does.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from dt_eval.util.hashing import sha256_bytes
from dt_eval.util.locks import wait_lock
from dt_eval.util.resources import cache_root

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

# Prompt material for the fine-tune. :func:`random_question` combines stems, option lists in
# several layouts (the MMAU/MMAR "(A) x" and MMSU "A. x" styles included) and instructions,
# so the model learns to ignore the prompt text and answer from the audio.
TRAIN_QUESTIONS = (
    "What do you hear?",
    "Does the pitch of the tone go up or down?",
    "Which best describes how the pitch changes over the clip?",
    "Listen to the tone. Is its pitch rising or falling?",
    "What is the direction of the frequency sweep in this recording?",
    "Describe the audio.",
    "How does the sound change over time?",
    "Identify the sound in the recording.",
    "What is the speaker's emotion?",
    "Which instrument is playing?",
    "",
)
TRAIN_INSTRUCTIONS = (
    "",
    "Answer with the letter of the correct option.",
    "Think step by step, then answer.",
    "Think about the audio step by step, then give the final answer as the option's letter and text.",
    "Choose the most suitable answer from options A, B, C, and D. You must respond with only A, B, C, or D.",
    "Respond briefly.",
)
TRAIN_OPTION_WORDS = ("rising", "falling", "steady", "silent", "a dog barking", "speech",
                      "music", "noise", "happy", "sad", "piano", "guitar")
TRAIN_SYSTEM_PROMPTS = (
    None,  # no system message -> the template's default one
    DEFAULT_SYSTEM_PROMPT,
    "You are an expert in audio analysis. Think before you answer.",
    "Answer the multiple-choice question about the audio.",
)


def random_question(rng) -> str:
    """A random user text: a stem, maybe 2-4 options in one of several layouts, maybe an
    instruction (``rng``: a numpy Generator)."""
    pick = lambda seq: seq[int(rng.integers(0, len(seq)))]  # noqa: E731
    stem, instruction = pick(TRAIN_QUESTIONS), pick(TRAIN_INSTRUCTIONS)
    n = int(rng.integers(0, 5))
    if n < 2:
        return " ".join(x for x in (stem, instruction) if x)
    words = [TRAIN_OPTION_WORDS[i] for i in rng.permutation(len(TRAIN_OPTION_WORDS))[:n]]
    fmt = pick(("({l}) {t}", "{l}. {t}", "{l}) {t}", "{t}"))
    opts = [fmt.format(l="ABCD"[i], t=t) for i, t in enumerate(words)]
    layout = int(rng.integers(0, 4))
    if layout == 0:  # MMAU / MMAR task config
        text = f"{stem}\n\nOptions:\n" + "\n".join(opts) + f"\n\n{instruction}"
    elif layout == 1:  # MMSU task config
        text = f"{instruction}\n\nQuestion: {stem}\n\n" + "\n".join(opts)
    elif layout == 2:
        text = f"{stem} " + " ".join(opts) + f" {instruction}"
    else:
        text = f"{stem}\nChoices:\n" + "\n".join(opts)
    return text.strip()


_BPE_CORPUS = (
    DEFAULT_SYSTEM_PROMPT,
    "system user assistant Audio 1: Audio 2:",
    "The pitch goes up. The pitch goes down. The answer is (A) rising (B) falling (C) steady (D) silent",
    "Let me think step by step about the audio clip. What is the sound in the audio?",
    "I hear a steady tone. The tone is rising. The tone is falling. Question Choices Answer",
    "Options: (A) (B) (C) (D) A. B. C. D.",
    *[q for q in TRAIN_QUESTIONS if q],
    *[q for q in TRAIN_INSTRUCTIONS if q],
    *TRAIN_OPTION_WORDS,
    *[s for s in TRAIN_SYSTEM_PROMPTS if s],
)


# --------------------------------------------------------------------------- building


def build_tokenizer():
    """Byte-level BPE trained offline on a few sentences, wrapped as a fast HF tokenizer."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
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
        feature_extractor=fe, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE
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


def say(message: str) -> None:
    """One progress line on stderr: building takes a while (about a minute for the deterministic
    variant on a laptop CPU) and should never look stuck."""
    print(f"[tiny_qwen2audio] {message}", file=sys.stderr, flush=True)


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Build a random tiny Qwen2-Audio (model + processor) into ``out_dir``; returns it.

    Text model: Qwen2, hidden 128, 4 heads x head_dim 32 (2 KV heads), 2 layers. Audio
    encoder: d_model 64, 2 layers, 128 mel bins. ~0.6 M parameters, float32.
    """
    say("building a random tiny Qwen2-Audio: loading torch and transformers ...")
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say("building the tokenizer and processor ...")
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
    say("initialising the model (~0.6 M parameters) ...")
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
        say(f"renamed {len(fixed)} nested checkpoint keys for vLLM")
    say(f"random tiny model saved to {out}")
    return out


# --------------------------------------------------------------------------- fine-tuning
#
# How the deterministic model hears pitch direction
# -------------------------------------------------
# A 2-layer, d_model-64 encoder trained from random init for a minute on CPU does not learn
# to tell a rising sweep from a falling one (tried: the LM learns the text, the decision
# stays at chance on unseen clips). So the audio encoder's weights are *set by hand* to a
# small pitch-contour circuit, with the real Qwen2-Audio architecture unchanged (HF and vLLM
# run the same maths), and only the projector + language model are fine-tuned to read it:
#
#   conv1   56 "peak detectors": channel j = GELU(a * (triangle-weighted mean of mel bins
#           around 2j, 3 frames) - a * theta): which bins hold the tone (0..~5 kHz).
#   conv2   passes the detector profile through (3-tap smoothing, stride 2).
#   pos     embed_positions marks encoder positions [ANCHOR) (~0.08-0.18 s into the clip).
#   layer0  MLP: c_t = w . LayerNorm(profile_t), w linear in the bin index: a scale-free
#           "spectral centroid" per position (LayerNorm divides out loudness); also writes a
#           large constant K (so later LayerNorms are ~linear) and re-amplifies the anchor.
#   layer1  attention head 0: every position attends to the anchor positions and subtracts
#           their c: d_t = c_t - c_anchor (> 0 when the pitch is higher than at the start).
#           MLP: vote_t = clip(s * d_t, -1, 1).
#   final   LayerNorm, 2x average pooling -> one +-1 vote per audio token (and the constant
#           marker channel, which lets the LM's attention find audio tokens).
#
# Rising sweeps give mostly +1 votes, falling mostly -1; the fine-tuned LM averages them.

_MAX_TRAIN_SECONDS = 4.0
_N_DETECTORS = 56
_ANCHOR = (4, 9)  # encoder positions (20 ms each) used as the "start of clip" reference


def install_pitch_contour_encoder(model) -> dict[str, int]:
    """Overwrite ``model``'s audio encoder with the hand-set pitch-contour circuit.

    Returns the channel indices used (``vote``, ``marker``, ``ref``...). The projector is
    re-initialised to read the vote and marker channels. Works on the tiny config only
    (d_model 64, 2 encoder layers, 128 mel bins).
    """
    import torch

    at = model.model.audio_tower
    d = at.conv1.out_channels
    n_mels = at.conv1.in_channels
    J = _N_DETECTORS
    if d < J + 8 or len(at.layers) < 2 or n_mels < 2 * J:
        raise ValueError("install_pitch_contour_encoder needs the tiny config "
                         f"(d_model >= {J + 8}, >= 2 encoder layers, >= {2 * J} mel bins)")
    ch = dict(anchor=J, centroid=J + 1, const=J + 2, vote=J + 3, ref=J + 4)
    ANC, C, KC, VOTE, REF = (ch[k] for k in ("anchor", "centroid", "const", "vote", "ref"))
    theta, a, width = 0.3, 4.0, 3.0   # detector threshold (normalised log-mel), gain, width
    K = 1024.0                        # constant channel: dominates LayerNorm statistics
    sigma = K * math.sqrt(d - 1) / d  # LayerNorm std once K dominates
    M, s, S = 2.0, 1000.0, 10.0       # centroid gain, vote gain, GELU-as-ReLU sharpness
    QK = 40.0                         # anchor attention sharpness
    with torch.no_grad():
        for p in at.parameters():
            p.zero_()
        for ln in [at.layer_norm, *(lay.self_attn_layer_norm for lay in at.layers),
                   *(lay.final_layer_norm for lay in at.layers)]:
            ln.weight.fill_(1.0)
        bins = torch.arange(n_mels, dtype=torch.float32)
        for j in range(J):
            tri = torch.clamp(1 - (bins - 2 * j).abs() / width, min=0)
            at.conv1.weight[j] = (a / 3) * (tri / tri.sum())[:, None]
            at.conv1.bias[j] = -a * theta
            at.conv2.weight[j, j, :] = 1.0
        at.embed_positions.weight[_ANCHOR[0]:_ANCHOR[1], ANC] = 1.0
        k = torch.arange(J, dtype=torch.float32)
        w = (k - k.mean()) / k.mean()
        L0, L1 = at.layers[0], at.layers[1]
        # layer 0 MLP. GELU(x) - GELU(-x) = x, so unit pairs pass signed values linearly.
        L0.fc1.weight[0, :J], L0.fc1.weight[1, :J] = w, -w
        L0.fc1.weight[2, ANC], L0.fc1.weight[2, REF] = 1.0, -1.0
        L0.fc1.weight[3, ANC], L0.fc1.weight[3, REF] = -1.0, 1.0
        L0.fc2.weight[C, 0], L0.fc2.weight[C, 1] = M, -M
        L0.fc2.weight[ANC, 2], L0.fc2.weight[ANC, 3] = 64.0, -64.0
        L0.fc2.bias[KC] = K
        # layer 1 attention, head 0 (dims 0..head_dim-1): attend to the anchor, subtract c.
        sa = L1.self_attn
        sa.q_proj.bias[0] = QK
        sa.k_proj.weight[0, ANC], sa.k_proj.weight[0, REF] = QK, -QK
        sa.v_proj.weight[0, C], sa.v_proj.weight[0, REF] = 1.0, -1.0
        sa.out_proj.weight[C, 0] = -sigma
        # layer 1 MLP: vote = relu(s*x + 1) - relu(s*x - 1) - 1 = clip(s*x, -1, 1).
        for u, off in enumerate((1.0, -1.0)):
            L1.fc1.weight[u, C], L1.fc1.weight[u, REF] = S * s, -S * s
            L1.fc1.bias[u] = S * off
        L1.fc2.weight[VOTE, 0], L1.fc2.weight[VOTE, 1] = sigma / S, -sigma / S
        L1.fc2.bias[VOTE] = -sigma
        # projector: vote (+-1 after the final LayerNorm) and marker (~7.9) into LM space.
        proj = model.model.multi_modal_projector.linear
        g = torch.Generator().manual_seed(1234)
        proj.weight.zero_()
        proj.bias.zero_()
        h = proj.out_features
        proj.weight[:, VOTE] = torch.randn(h, generator=g) / math.sqrt(h) * 4.0
        proj.weight[:, REF] = -proj.weight[:, VOTE]  # cancel the LayerNorm mean term
        proj.weight[:, KC] = torch.randn(h, generator=g) / math.sqrt(h) * 0.5
    return ch


def _render_prompt(processor, question: str, system: str | None, audio_first: bool) -> str:
    parts: list[dict] = [{"type": "audio", "audio_url": "clip.wav"}]
    if question:
        text = [{"type": "text", "text": question}]
        parts = parts + text if audio_first else text + parts
    messages = [{"role": "user", "content": parts}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def random_sweep_params(rng, direction: str) -> dict:
    """Random sweep parameters within the range the deterministic model is trained on:
    1-4 s, lowest frequency 200-700 Hz, ratio 2-6 (top <= 4 kHz), amplitude 0.05-0.8,
    log or linear."""
    lo = float(rng.uniform(200.0, 700.0))
    hi = float(min(lo * rng.uniform(2.0, 6.0), 4000.0))
    f0, f1 = (lo, hi) if direction == "rising" else (hi, lo)
    return dict(
        direction=direction, seconds=float(rng.uniform(1.0, _MAX_TRAIN_SECONDS)), f0=f0, f1=f1,
        amplitude=float(rng.uniform(0.05, 0.8)),
        method=("log", "linear")[int(rng.integers(0, 2))],
    )


def _decisive_offset(tok) -> int:
    """Index (within the target) of the first token where the two targets differ."""
    a, b = (tok(TARGETS[d], add_special_tokens=False)["input_ids"] for d in ("rising", "falling"))
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def _encode_clips(model, processor, audios, batch: int = 16):
    """Audio-encoder outputs (one ``(n_audio_tokens, d_model)`` tensor per clip), computed
    through the real HF forward (a hook on the encoder) with a minimal prompt."""
    import torch

    captured: list = []
    hook = model.model.audio_tower.register_forward_hook(
        lambda _m, _i, out: captured.append(out.last_hidden_state.detach()))
    audio_id = model.config.audio_token_id
    states = []
    try:
        for b0 in range(0, len(audios), batch):
            chunk = audios[b0:b0 + batch]
            enc = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"] * len(chunk),
                            audio=chunk, sampling_rate=SAMPLING_RATE, return_tensors="pt",
                            padding=True)
            captured.clear()
            with torch.no_grad():
                model.model(**enc)
            n_audio = (enc["input_ids"] == audio_id).sum(-1)
            states += [captured[0][j, : int(n_audio[j])].clone() for j in range(len(chunk))]
    finally:
        hook.remove()
    return states


def _make_examples(model, processor, n_clips: int, n_examples: int, seed: int):
    """Training examples ``(input_ids, labels, audio_states, decisive_index)``.

    ``n_clips`` sweeps (half rising) are encoded once by the frozen audio encoder; each of
    the ``n_examples`` pairs one of them with a random question / system prompt / order.
    Prompts are expanded the way Qwen2AudioProcessor does it (one ``<|AUDIO|>`` per audio
    token) and tokenized as text.
    """
    import numpy as np
    import torch

    from dt_eval.testing.synth_audio import sweep

    rng = np.random.default_rng(seed)
    tok = processor.tokenizer
    offset = _decisive_offset(tok)
    audios, directions = [], []
    for i in range(n_clips):
        directions.append(("rising", "falling")[i % 2])
        p = random_sweep_params(rng, directions[-1])
        audio = sweep(p.pop("direction"), sr=SAMPLING_RATE, **p)
        if rng.random() < 0.3:  # a little noise now and then
            audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * 0.005
        audios.append(audio)
    states = _encode_clips(model, processor, audios)
    targets = {d: tok(TARGETS[d] + EOS_TOKEN, add_special_tokens=False)["input_ids"]
               for d in TARGETS}
    out = []
    for i in range(n_examples):
        c = i % n_clips
        prompt = _render_prompt(
            processor,
            random_question(rng),
            TRAIN_SYSTEM_PROMPTS[int(rng.integers(0, len(TRAIN_SYSTEM_PROMPTS)))],
            audio_first=bool(rng.random() < 0.8),
        ).replace("<|AUDIO|>", "<|AUDIO|>" * len(states[c]))
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        full = torch.tensor(ids + targets[directions[c]])
        labels = full.clone()
        labels[: len(ids)] = -100
        out.append((full, labels, states[c], len(ids) + offset))
    return out


def _lm_loss(model, examples, pad_id: int, audio_id: int, decisive_weight: float):
    """Cross-entropy of a right-padded batch, audio tokens filled with projector(states).

    The decisive token (``up`` / ``down``: the only audio-dependent choice) is weighted
    ``decisive_weight``. Returns ``(loss, decisive_accuracy)``.
    """
    import torch

    n = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), n), dtype=torch.long)
    for j, (x, y, _, _) in enumerate(examples):
        ids[j, : len(x)], labels[j, : len(y)], attn[j, : len(x)] = x, y, 1
    embeds = model.get_input_embeddings()(ids)
    audio = model.model.multi_modal_projector(torch.cat([e[2] for e in examples]))
    embeds = embeds.masked_scatter((ids == audio_id).unsqueeze(-1), audio.to(embeds.dtype))
    logits = model(inputs_embeds=embeds, attention_mask=attn).logits[:, :-1].float()
    tgt = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100,
        reduction="none").view_as(tgt)
    w = (tgt != -100).float()
    rows = torch.arange(len(examples))
    cols = torch.tensor([e[3] for e in examples]) - 1
    w[rows, cols] *= decisive_weight
    acc = (logits[rows, cols].argmax(-1) == tgt[rows, cols]).float().mean().item()
    return (ce * w).sum() / w.sum(), acc


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
    steps: int = 100,
    *,
    seed: int = 0,
    n_clips: int = 48,
    n_train: int = 384,
    batch_size: int = 8,
    lr: float = 3e-3,
    decisive_weight: float = 4.0,
    verify: bool = True,
    verbose: bool = False,
) -> Path:
    """Make the tiny model at ``src`` answer by pitch direction; save it to ``dst``.

    The audio encoder is replaced by a hand-set pitch-contour circuit (see the comment
    above :func:`install_pitch_contour_encoder`) and frozen; the projector and language model
    are fine-tuned (AdamW, CPU) on ``n_train`` examples pairing ``n_clips`` synthetic sweeps
    (see :func:`random_sweep_params`; some with light noise) with random question texts from
    :data:`TRAIN_QUESTIONS`, with and without a system prompt, audio before or after the
    text. Rising -> :data:`TARGET_RISING`, falling -> :data:`TARGET_FALLING`, each followed by
    ``<|im_end|>``.

    With ``verify`` the result is checked with real greedy ``generate`` on fresh sweeps,
    unseen questions and system prompts; ``RuntimeError`` (nothing saved) if any output is
    not exact.
    """
    import numpy as np
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from dt_eval.testing.synth_audio import sweep

    src, dst = Path(src), Path(dst)
    torch.manual_seed(seed)
    say(f"making it deterministic: hand-set pitch-contour audio encoder, then {steps} fine-tuning steps")
    processor = AutoProcessor.from_pretrained(src)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
    install_pitch_contour_encoder(model)
    model.model.audio_tower.requires_grad_(False)
    model.eval()
    pad_id = processor.tokenizer.pad_token_id
    audio_id = model.config.audio_token_id

    t0 = time.perf_counter()
    say(f"encoding {n_clips} synthetic pitch sweeps into {n_train} training examples ...")
    data = _make_examples(model, processor, n_clips, n_train, seed=seed + 1)
    say(f"{n_clips} clips encoded in {time.perf_counter() - t0:.1f} s; fine-tuning on the CPU ...")

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps))
    order_rng = np.random.default_rng(seed + 2)
    model.train()
    t0 = time.perf_counter()
    order: list[int] = []
    accs: list[float] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += [int(i) for i in order_rng.permutation(len(data))]
        loss, acc = _lm_loss(model, [data[order.pop()] for _ in range(batch_size)],
                             pad_id, audio_id, decisive_weight)
        accs.append(acc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 25 == 0 or step == steps - 1:
            detail = (f" (loss {loss.item():.4f}, decision acc {sum(accs[-25:]) / len(accs[-25:]):.2f})"
                      if verbose else "")
            say(f"fine-tuning: step {step + 1}/{steps}, {time.perf_counter() - t0:.0f} s{detail}")
    model.eval()

    if verify:
        say("checking greedy answers on fresh sweeps ...")
        rng = np.random.default_rng(seed + 10_000)
        questions = ("Is the pitch rising or falling?", "What happens to the tone?",
                     "Pick one. (A) rising (B) falling")
        failures = []
        n_check = 8
        for i in range(n_check):
            direction = ("rising", "falling")[i % 2]
            p = random_sweep_params(rng, direction)
            audio = sweep(p.pop("direction"), sr=SAMPLING_RATE, **p)
            system = (None, "You are a careful listener.")[i // 2 % 2]
            got = greedy_generate(model, processor, audio, questions[i % 3], system)
            if got != TARGETS[direction] + EOS_TOKEN:
                failures.append((direction, p, got))
        say(f"check: {n_check - len(failures)}/{n_check} exact")
        if failures:
            raise RuntimeError(f"deterministic fine-tune did not converge: {failures}")

    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    check_checkpoint_keys(dst, fix=True)
    say(f"deterministic tiny model saved to {dst}")
    return dst


# --------------------------------------------------------------------------- cache


def _source_digest() -> str:
    here = Path(__file__)
    # the training clips come from synth_audio.py
    return sha256_bytes(here.read_bytes() + (here.parent / "synth_audio.py").read_bytes())


# Taken at import, so the cache key describes the code that is running even if the file is
# edited while a long build is under way.
_SOURCE_DIGEST = _source_digest()


def _cache_key() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [_SOURCE_DIGEST]
    for pkg in ("transformers", "torch"):
        try:
            parts.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg}==none")
    return sha256_bytes("".join(parts).encode())[:12]


def cached_tiny_model(deterministic: bool = True) -> Path:
    """Path of a cached tiny model, built on first use (deterministic or random variant).

    Lives in ``cache_root()/tiny-qwen2audio-<key>/{random,deterministic}``, where ``<key>``
    hashes this module's source and the transformers/torch versions. Builds happen under a
    file lock, into a temp dir that is renamed into place, so concurrent processes never see
    a half-written model. Treat the returned directory as read-only.
    """
    base = cache_root() / f"tiny-qwen2audio-{_cache_key()}"
    final = base / ("deterministic" if deterministic else "random")
    if (final / "config.json").exists():
        return final
    say(f"no cached {final.name} tiny model for this code and these library versions: building it "
        f"into {base} (once; other processes wait for it)")
    with wait_lock(base.parent / f"{base.name}.lock"):  # waits while another process builds
        if (final / "config.json").exists():  # built by another process meanwhile
            say(f"built by another process: {final}")
            return final
        base.mkdir(parents=True, exist_ok=True)
        for stale in base.glob(".build-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=base))
        try:
            random_dir = base / "random"
            if not (random_dir / "config.json").exists():
                build_tiny_model(tmp / "random")
                os.rename(tmp / "random", random_dir)
            if deterministic:
                _make_deterministic_with_retry(random_dir, tmp / "deterministic")
                os.rename(tmp / "deterministic", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _make_deterministic_with_retry(src: Path, dst: Path, seed: int = 0, steps: int | None = None,
                                   verbose: bool = False) -> Path:
    """:func:`make_deterministic`, retried once (the next seed, twice the steps) if the
    verification fails, so a build does not hinge on one unlucky run."""
    kw = {} if steps is None else {"steps": steps}
    try:
        return make_deterministic(src, dst, seed=seed, verbose=verbose, **kw)
    except RuntimeError as exc:
        say(f"retrying the fine-tune with another seed and twice the steps: {exc}"[:500])
        shutil.rmtree(dst, ignore_errors=True)
        return make_deterministic(src, dst, steps=2 * (steps or 100), seed=seed + 1, verbose=verbose)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dt_eval.testing.tiny_qwen2audio",
                                description="Build a tiny offline Qwen2-Audio model.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--deterministic", action="store_true",
                   help="fine-tune so greedy output is TARGET_RISING / TARGET_FALLING")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="fine-tune steps")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()

    def took(since_wall: float, since_cpu: float) -> str:
        return (f"{time.perf_counter() - since_wall:.1f}s wall, "
                f"{time.process_time() - since_cpu:.1f}s CPU")

    if args.deterministic:
        with tempfile.TemporaryDirectory() as tmp:
            src = build_tiny_model(Path(tmp) / "random", seed=args.seed)
            if args.verbose:
                print(f"build: {took(t0, c0)}", file=sys.stderr)
            t1, c1 = time.perf_counter(), time.process_time()
            _make_deterministic_with_retry(src, args.out_dir, seed=args.seed, steps=args.steps, verbose=args.verbose)
            if args.verbose:
                print(f"fine-tune: {took(t1, c1)}", file=sys.stderr)
    else:
        build_tiny_model(args.out_dir, seed=args.seed)
        if args.verbose:
            print(f"build: {took(t0, c0)}", file=sys.stderr)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
