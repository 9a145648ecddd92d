"""Inference backends behind one small async protocol (see `base.py`).

Imports are lazy: choosing the `openai` backend never imports torch.
"""

from __future__ import annotations

from typing import Any

BACKENDS = ("hf", "openai", "vllm")


def make_backend(kind: str, model: str, **kw: Any):
    if kind == "hf":
        from dt_eval.backends.hf import HFBackend

        return HFBackend(model, batch_size=kw.get("batch_size", 8), device=kw.get("device"), dtype=kw.get("dtype"))
    if kind == "openai":
        from dt_eval.backends.openai_compat import OpenAIBackend

        urls = kw.get("base_urls") or []
        if not urls:
            raise ValueError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIBackend(model, urls, concurrency=kw.get("concurrency", 32), timeout_s=kw.get("timeout_s", 600),
                             max_retries=kw.get("max_retries", 4))
    if kind == "vllm":
        from dt_eval.backends.vllm_engine import VLLMBackend

        return VLLMBackend(model, batch_size=kw.get("batch_size", 256), dtype=kw.get("dtype"),
                           engine_args=kw.get("engine_args") or {})
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
