"""Streamed generation: one request's generate() in a worker thread, its text handed over piece by
piece (transformers' TextStreamer) and stopped early when the client goes away or a stop string
appears (the `cancel` event)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dt_eval.backends.base import GenerationRequest


def stream_generate(backend: Any, req: GenerationRequest, push: Callable[[str], None], cancel: threading.Event,
                    sampling_rate: int, token_delay_s: float = 0.0,
                    progress: dict[str, int] | None = None) -> dict[str, Any]:
    """Run generate() for one request in this (worker) thread; text pieces go to `push`.
    Returns finish reason and token counts as HFBackend counts them. `token_delay_s` (testing
    aid) sleeps after each generated token; ``progress["tokens"]`` counts the tokens generated
    so far (the server logs it when a client hangs up mid-stream)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    from dt_eval.backends.hf import generate_kwargs, to_hf_messages

    progress = progress if progress is not None else {}
    progress["tokens"] = 0

    class _Streamer(TextStreamer):
        def put(self, value):
            prompt = self.skip_prompt and self.next_tokens_are_prompt
            super().put(value)
            if not prompt:
                progress["tokens"] += 1
                if token_delay_s:
                    time.sleep(token_delay_s)  # testing aid: makes incremental delivery observable

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                push(text)

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    prompt = backend.processor.apply_chat_template(to_hf_messages(req.messages), add_generation_prompt=True,
                                                   tokenize=False, **req.chat_template_kwargs)
    audios = [a.array for a in req.audio]
    rate = req.audio[0].sampling_rate if req.audio else sampling_rate
    inputs = backend.processor(text=[prompt], audio=audios or None, sampling_rate=rate, return_tensors="pt",
                               padding=True).to(backend.device)
    streamer = _Streamer(backend.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kw = generate_kwargs(req.sampling)
    with torch.inference_mode():
        out = backend.model.generate(**inputs, **kw, streamer=streamer,
                                     stopping_criteria=StoppingCriteriaList([_Cancel()]))
    prompt_len = inputs["input_ids"].shape[1]
    new = out[0, prompt_len:].tolist()
    eos = backend.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
    n = next((j + 1 for j, t in enumerate(new) if t in eos_ids), len(new))
    pad = backend.tokenizer.pad_token_id
    n_out = len([t for t in new[:n] if t != pad or t in eos_ids])
    hit_eos = n < len(new) or bool(n and new[n - 1] in eos_ids)
    finish = "stop" if hit_eos or cancel.is_set() or n < req.sampling.max_tokens else "length"
    mask = inputs.get("attention_mask")
    return {"finish": finish, "prompt_tokens": int(mask.sum()) if mask is not None else prompt_len,
            "completion_tokens": n_out}
