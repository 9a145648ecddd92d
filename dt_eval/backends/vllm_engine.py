"""vLLM in-process engine: `LLM.generate` with `multi_modal_data`, the fastest path on a GPU box.

The offline engine does not split reasoning (the server's reasoning parser does that), so the
harness splits `<think>` blocks itself, like for the `hf` backend. Requests with `logprobs=K` get
SamplingParams(logprobs=K): each token's log-probability and its top-K (read_logprobs).
"""

from __future__ import annotations

import time
from typing import Any

from dt_eval.backends.base import (
    Generation,
    GenerationRequest,
    LocalBatchedBackend,
    SamplingConfig,
)
from dt_eval.backends.hf import to_hf_messages
from dt_eval.pipeline.logprobs import topk_entropy
from dt_eval.types import TokenLogprobs


def sampling_params(s: SamplingConfig, logprobs: int | None = None):
    from vllm import SamplingParams

    kw: dict[str, Any] = {"max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p,
                          "seed": s.seed, "stop": s.stop}
    if s.top_k:
        kw["top_k"] = s.top_k
    if s.repetition_penalty:
        kw["repetition_penalty"] = s.repetition_penalty
    kw |= {k: v for k, v in s.extra.items() if k not in ("chat_template_kwargs",)}
    if logprobs is not None:
        kw["logprobs"] = logprobs
    return SamplingParams(**kw)


def read_logprobs(token_ids: Any, positions: Any, k: int, decode: Any) -> TokenLogprobs | None:
    """A completion's per-token log-probabilities from vLLM's per-position {token id: Logprob}
    (the chosen token, with its rank, and the top-K by rank 1..K). The entropy of a position is
    estimated from its top-K (topk_entropy); vLLM's default logprobs are of the raw distribution."""
    if positions is None:
        return None
    tokens, chosen, entropy, top = [], [], [], []
    for tid, pos in zip(token_ids, positions):
        if not pos or tid not in pos:
            return None
        me = pos[tid]
        ranked = sorted(((lp.rank, t, lp) for t, lp in pos.items() if lp.rank is not None and lp.rank <= k),
                        key=lambda x: x[0])
        tokens.append(me.decoded_token if me.decoded_token is not None else decode(tid))
        chosen.append(float(me.logprob))
        entropy.append(topk_entropy([float(lp.logprob) for _, _, lp in ranked]))
        top.append([(lp.decoded_token if lp.decoded_token is not None else decode(t), float(lp.logprob))
                    for _, t, lp in ranked])
    return TokenLogprobs(tokens=tokens, logprob=chosen, entropy=entropy, k=k, top=top)


def engine_args_from_preset(preset: Any) -> dict[str, Any]:
    """The family's `vllm serve` flags as `LLM(...)` keyword arguments (and its env vars set)."""
    import json
    import os

    if preset is None:
        return {}
    spec = preset.vllm
    for k, v in spec.env.items():
        os.environ.setdefault(k, v)
    out: dict[str, Any] = {}
    if spec.max_model_len:
        out["max_model_len"] = spec.max_model_len
    args = list(spec.args)
    if "--enforce-eager" in args:
        out["enforce_eager"] = True
    if "--limit-mm-per-prompt" in args:
        out["limit_mm_per_prompt"] = json.loads(args[args.index("--limit-mm-per-prompt") + 1])
    if "--trust-remote-code" in args:
        out["trust_remote_code"] = True
    return out


class VLLMBackend(LocalBatchedBackend):
    name = "vllm"
    failure_label = "vllm generate"

    def __init__(self, model: str, batch_size: int = 256, dtype: str | None = None,
                 engine_args: dict[str, Any] | None = None):
        from transformers import AutoProcessor
        from vllm import LLM

        args = {"limit_mm_per_prompt": {"audio": 1}, **(engine_args or {})}
        self.model_id = model
        self.preferred_batch = batch_size
        self.engine_args = args
        self.llm = LLM(model=model, dtype=dtype or "auto", **args)
        # Render prompts with the checkpoint's own chat template (same text the server would build).
        self.processor = AutoProcessor.from_pretrained(model)

    def describe(self) -> dict[str, Any]:
        import vllm

        return {"name": self.name, "model": self.model_id, "vllm_version": vllm.__version__,
                "batch_size": self.preferred_batch, "engine_args": self.engine_args}

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[Generation]:
        t0 = time.monotonic()
        prompts = []
        for r in batch:
            text = self.processor.apply_chat_template(
                to_hf_messages(r.messages), add_generation_prompt=True, tokenize=False, **r.chat_template_kwargs)
            audio = [(a.array, a.sampling_rate) for a in r.audio]
            prompt: dict[str, Any] = {"prompt": text}
            if audio:  # text-only requests (lm-eval text tasks) carry no multi_modal_data
                prompt["multi_modal_data"] = {"audio": audio[0] if len(audio) == 1 else audio}
            prompts.append(prompt)
        outs = self.llm.generate(prompts, [sampling_params(r.sampling, r.logprobs) for r in batch], use_tqdm=False)
        elapsed = time.monotonic() - t0
        tokenizer = getattr(self.processor, "tokenizer", self.processor)

        def decode(t: int) -> str:
            return tokenizer.decode([t], skip_special_tokens=False)

        results = []
        for r, o in zip(batch, outs):
            c = o.outputs[0]
            lp = read_logprobs(c.token_ids, c.logprobs, r.logprobs, decode) if r.logprobs is not None else None
            results.append(Generation(
                key=r.key, text=c.text, finish_reason=c.finish_reason,
                prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(c.token_ids),
                latency_s=elapsed, backend_info={"batch": len(batch)}, logprobs=lp,
            ))
        return results


def from_settings(settings) -> VLLMBackend:
    """The `vllm` entry of the backend registry: engine arguments from the family preset (the
    flags `dt-eval serve` would give `vllm serve`), then the caller's `options["engine_args"]`."""
    engine_args = {**engine_args_from_preset(settings.family_preset()),
                   **(settings.options.get("engine_args") or {})}
    return VLLMBackend(settings.model, batch_size=settings.batch_size or 256, dtype=settings.dtype,
                       engine_args=engine_args)
