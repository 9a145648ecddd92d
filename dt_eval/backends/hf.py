"""transformers backend: batched generate on CPU or GPU; loads local paths and hub ids.

The model class comes from the checkpoint's own config (`architectures`), so any HF audio-LM
whose processor takes `audio=` works, not only Qwen2-Audio. Requests with `logprobs` get each
token's log-probability and the exact entropy of its full-vocabulary distribution (hf_logprobs.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from dt_eval.backends.base import Generation, GenerationRequest, LocalBatchedBackend, SamplingConfig


def resolve_device_dtype(device: str | None, dtype: str | None) -> tuple[str, Any]:
    """(device, torch dtype): CUDA when available; "auto"/None = bfloat16 on CUDA, float32 on CPU."""
    import torch

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype in (None, "auto"):
        return dev, torch.bfloat16 if dev.startswith("cuda") else torch.float32
    return dev, getattr(torch, dtype)


def generate_kwargs(s: SamplingConfig) -> dict[str, Any]:
    """transformers `generate()` settings for `s` (greedy at temperature 0). A seed seeds torch's
    global generator here, right before the call."""
    import torch

    kw: dict[str, Any] = {"max_new_tokens": s.max_tokens, "do_sample": s.temperature > 0}
    if s.temperature > 0:
        kw |= {"temperature": s.temperature, "top_p": s.top_p}
        if s.top_k:
            kw["top_k"] = s.top_k
        if s.seed is not None:
            torch.manual_seed(s.seed)
    if s.repetition_penalty:
        kw["repetition_penalty"] = s.repetition_penalty
    return kw


def to_hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dt-eval chat messages as HF chat templates take them (audio parts as ``{"type": "audio"}``)."""
    out = []
    for m in messages:
        if isinstance(m["content"], str):
            out.append(m)
            continue
        parts = []
        for p in m["content"]:
            # Qwen-style templates key on type == "audio" (and older ones on "audio_url").
            parts.append({"type": "audio", "audio_url": "audio"} if p["type"] == "audio" else p)
        out.append({"role": m["role"], "content": parts})
    return out


class HFBackend(LocalBatchedBackend):
    name = "hf"
    failure_label = "hf generate"

    def __init__(self, model: str, batch_size: int = 8, device: str | None = None, dtype: str | None = None,
                 trust_remote_code: bool = False):
        import transformers
        from transformers import AutoConfig, AutoProcessor

        self.model_id = model
        self.preferred_batch = batch_size
        self.device, torch_dtype = resolve_device_dtype(device, dtype)
        self.dtype = str(torch_dtype).replace("torch.", "")
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            raise ValueError(f"{model}: cannot find a transformers class for architectures={arch!r}")
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # batched decoding needs left padding
        self.model = cls.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_id, "device": self.device, "dtype": self.dtype,
                "batch_size": self.preferred_batch}

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[Generation]:
        import torch
        from transformers import StoppingCriteriaList

        from dt_eval.backends.hf_logprobs import StepRecorder

        t0 = time.monotonic()
        texts, audios = [], []
        for r in batch:
            texts.append(self.processor.apply_chat_template(
                to_hf_messages(r.messages), add_generation_prompt=True, tokenize=False, **r.chat_template_kwargs))
            audios.extend(a.array for a in r.audio)
        rate = batch[0].audio[0].sampling_rate if batch[0].audio else 16000
        inputs = self.processor(text=texts, audio=audios or None, sampling_rate=rate, return_tensors="pt",
                                padding=True)
        inputs = inputs.to(self.device)
        s = batch[0].sampling
        k = batch[0].logprobs  # callers batch requests of the same settings (runner, hfserver)
        recorder = StepRecorder(self.model, k) if k is not None else None  # 0: no alternatives (hfserver)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        criteria = [recorder] if recorder is not None else []
        if self.on_generated is not None and eos_ids:
            criteria.append(_rows_done([r.key for r in batch], eos_ids, self.on_generated))
        extra = {"stopping_criteria": StoppingCriteriaList(criteria)} if criteria else {}
        with torch.inference_mode(), (recorder if recorder is not None else contextlib.nullcontext()):
            out = self.model.generate(**inputs, **generate_kwargs(s), **extra)
        prompt_len = inputs["input_ids"].shape[1]
        pad = self.tokenizer.pad_token_id
        elapsed = time.monotonic() - t0
        kept = []
        for i in range(len(batch)):
            new = out[i, prompt_len:].tolist()
            n = len(new)
            for j, tok in enumerate(new):
                if tok in eos_ids:
                    n = j + 1
                    break
            kept.append((new, n))
        logprobs = ([None] * len(batch) if recorder is None
                    else recorder.rows(self.tokenizer, [new[:n] for new, n in kept]))
        results = []
        for i, (r, (new, n), lp) in enumerate(zip(batch, kept, logprobs)):
            stopped = n < len(new) or (n and new[n - 1] in eos_ids)
            text = self.tokenizer.decode(new[:n], skip_special_tokens=True)
            mask = inputs["attention_mask"][i] if "attention_mask" in inputs else None
            results.append(Generation(
                key=r.key,
                text=text,
                finish_reason="stop" if stopped else ("length" if n >= s.max_tokens else "stop"),
                prompt_tokens=int(mask.sum()) if mask is not None else prompt_len,
                completion_tokens=len([t for t in new[:n] if t != pad or t in eos_ids]),
                latency_s=elapsed,
                backend_info={"batch": len(batch)},
                logprobs=lp,
            ))
        return results


def _rows_done(keys: list[str], eos_ids: set[int], report: Callable[[str], None]):
    """A transformers stopping criterion that stops nothing: it reports each row of the batch
    (by its request key) at the step the row emits an end-of-sequence token."""
    import torch
    from transformers import StoppingCriteria

    class RowsDone(StoppingCriteria):
        def __init__(self) -> None:
            self.reported: set[int] = set()

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            for i, token in enumerate(input_ids[:, -1].tolist()):
                if token in eos_ids and i not in self.reported:
                    self.reported.add(i)
                    report(keys[i])
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return RowsDone()


def from_settings(settings) -> HFBackend:
    """The `hf` entry of the backend registry (dt_eval/backends/registry.py)."""
    return HFBackend(settings.model, batch_size=settings.batch_size or 8, device=settings.device,
                     dtype=settings.dtype)
