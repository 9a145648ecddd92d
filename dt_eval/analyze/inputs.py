"""Model inputs for the gating analysis: prompt (+ audio) and, teacher-forced, a recorded
response, with every token labelled by segment.

Segments come from the token layout the chat template produces:
  audio      the audio placeholder tokens the processor expands (one per audio-encoder frame)
  prompt     every other prompt token (system, question, options, template markup)
  reasoning  the response up to and including the closing </think> (or </reasoning>) tag
  answer     the response after it
The response is tokenized in two pieces (reasoning, answer) and appended after the generation
prompt, so the boundary is exact. A response whose reasoning was split off by the server
(`reasoning` field) is re-joined as "<think>\\n{reasoning}\\n</think>" + "\\n\\n{answer}".
All models are fed the inputs built with the *base* model's processor, so every model routes
the same token ids (checked with a digest per item).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dt_eval.util.hashing import sha256_bytes

SEGMENTS = ("audio", "prompt", "reasoning", "answer")
_CLOSING = ("</think>", "</reasoning>")


def split_response(output: str | None, reasoning: str | None = None) -> tuple[str, str]:
    """(reasoning part with its tags, answer part) of a recorded response."""
    output = output or ""
    if reasoning:
        return f"<think>\n{reasoning.strip()}\n</think>", "\n\n" + output.strip()
    lower = output.lower()
    end = max((lower.rfind(t) + len(t) if lower.rfind(t) >= 0 else -1) for t in _CLOSING)
    if end >= 0:
        return output[:end], output[end:]
    if "<think>" in lower or "<reasoning>" in lower:  # opened, never closed: cut off mid-thought
        return output, ""
    return "", output


def _audio_token_id(config: Any) -> int | None:
    for cfg in (config, getattr(config, "thinker_config", None)):
        for name in ("audio_token_id", "audio_token_index"):
            v = getattr(cfg, name, None) if cfg is not None else None
            if v is not None:
                return int(v)
    return None


def _omni_audio_tokens(config: Any):
    """Qwen3-Omni: audio placeholders per clip from the feature-mask length (transformers' own
    function, so the count is the processor's)."""
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import (
        _get_feat_extract_output_lengths,
    )

    thinker = getattr(config, "thinker_config", config)
    n_window = getattr(getattr(thinker, "audio_config", None), "n_window", 50)
    return lambda lengths: _get_feat_extract_output_lengths(lengths, n_window)


# model_type -> builder of the audio-token count, for building inputs without the multimodal
# processor (Qwen3-Omni's needs torchvision for its video part, which audio never uses).
_AUDIO_TOKEN_COUNTS = {"qwen3_omni_moe": _omni_audio_tokens, "qwen3_omni_moe_thinker": _omni_audio_tokens}
_UNUSED = ("num_audio_tokens", "token_type_ids")


def digest(ids: Any) -> str:
    return sha256_bytes(np.asarray(ids, dtype=np.int64).tobytes())[:16]


@dataclass
class Encoded:
    inputs: dict[str, Any]  # tensors, batch of one
    segments: np.ndarray  # int8 per token, index into SEGMENTS
    digest: str


class InputBuilder:
    """Turns (chat messages, audio, response) into model inputs with the base model's processor."""

    def __init__(self, path: str, config: Any):
        from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

        self.notes: list[str] = []
        self.audio_token_id = _audio_token_id(config)
        self.processor = self.feature_extractor = self._count = None
        model_type = getattr(config, "model_type", "")
        if self.audio_token_id is None:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.notes.append("text-only model: the audio is not an input, its segment is empty")
            self.sampling_rate = 16000
            return
        try:
            proc = AutoProcessor.from_pretrained(path)
        except Exception as e:  # e.g. Qwen3-Omni's processor without torchvision
            proc, why = None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        else:
            why = f"AutoProcessor gave a {type(proc).__name__}"
        if proc is not None and hasattr(proc, "feature_extractor") and hasattr(proc, "tokenizer"):
            self.processor, self.tokenizer, self.feature_extractor = proc, proc.tokenizer, proc.feature_extractor
        elif model_type in _AUDIO_TOKEN_COUNTS:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(path)
            self._count = _AUDIO_TOKEN_COUNTS[model_type](config)
            self.notes.append(f"inputs built from the tokenizer and feature extractor, the audio-token count "
                              f"from transformers' {model_type} processing code ({why})")
        else:
            raise ValueError(f"{path}: cannot build audio inputs without the model's processor ({why})")
        self.sampling_rate = int(getattr(self.feature_extractor, "sampling_rate", 16000) or 16000)
        self.audio_token = self.tokenizer.convert_ids_to_tokens(self.audio_token_id)

    @property
    def takes_audio(self) -> bool:
        return self.audio_token_id is not None

    def _messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from dt_eval.backends.hf import to_hf_messages

        if self.takes_audio:
            return to_hf_messages(messages)
        out = []
        for m in messages:
            if isinstance(m["content"], str):
                out.append(m)
            else:
                out.append({"role": m["role"], "content": [p for p in m["content"] if p.get("type") != "audio"]})
        return out

    def _prompt(self, text: str, audio: np.ndarray | None) -> dict[str, Any]:
        if audio is None or not self.takes_audio:
            return dict(self.tokenizer([text], return_tensors="pt", add_special_tokens=False))
        if self.processor is not None:
            out = self.processor(text=[text], audio=[audio], sampling_rate=self.sampling_rate, return_tensors="pt")
            return dict(out)
        import torch

        feats = self.feature_extractor([audio], sampling_rate=self.sampling_rate, padding=True, truncation=False,
                                       return_attention_mask=True, return_tensors="pt")
        n = int(self._count(feats["attention_mask"].sum(-1))[0])
        if text.count(self.audio_token) != 1:
            raise ValueError(f"the chat template rendered {text.count(self.audio_token)} audio placeholders, "
                             "expected 1")
        enc = dict(self.tokenizer([text.replace(self.audio_token, self.audio_token * n)], return_tensors="pt",
                                  add_special_tokens=False))
        enc["input_features"] = feats["input_features"]
        enc["feature_attention_mask"] = feats["attention_mask"].to(torch.long)
        return enc

    def encode(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any], audio: np.ndarray | None,
               reasoning: str = "", answer: str = "") -> Encoded:
        import torch

        text = (self.processor or self.tokenizer).apply_chat_template(self._messages(messages), add_generation_prompt=True,
                                                  tokenize=False, **template_kwargs)
        enc = {k: v for k, v in self._prompt(text, audio).items() if k not in _UNUSED}
        prompt_ids = enc["input_ids"][0]
        head = self.tokenizer(reasoning, add_special_tokens=False)["input_ids"] if reasoning else []
        tail = self.tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
        ids = torch.cat([prompt_ids, torch.tensor(head + tail, dtype=prompt_ids.dtype)])
        seg = np.full(len(ids), SEGMENTS.index("prompt"), dtype=np.int8)
        if self.audio_token_id is not None:
            seg[: len(prompt_ids)][prompt_ids.numpy() == self.audio_token_id] = SEGMENTS.index("audio")
        seg[len(prompt_ids): len(prompt_ids) + len(head)] = SEGMENTS.index("reasoning")
        seg[len(prompt_ids) + len(head):] = SEGMENTS.index("answer")
        enc["input_ids"] = ids[None]
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        return Encoded(inputs=enc, segments=seg, digest=digest(ids.numpy()))
