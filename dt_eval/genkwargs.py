"""Parse `--gen-kwargs` (`temperature=0.6,top_p=0.95,max_tokens=8192` or a JSON object)."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from dt_eval.backends.base import SamplingConfig

_KNOWN = {f.name for f in fields(SamplingConfig)} - {"extra"}
_ALIASES = {"max_new_tokens": "max_tokens", "max_gen_toks": "max_tokens", "do_sample": None}


def parse_gen_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--gen-kwargs is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError("--gen-kwargs JSON must be an object")
        return data
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"--gen-kwargs: expected key=value, got {part!r}")
        k, v = (x.strip() for x in part.split("=", 1))
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def apply_gen_kwargs(base: SamplingConfig, kwargs: dict[str, Any]) -> SamplingConfig:
    data = base.to_dict()
    extra = dict(data.pop("extra") or {})
    for k, v in kwargs.items():
        k = _ALIASES.get(k, k)
        if k is None:  # do_sample: implied by temperature
            continue
        if k in _KNOWN:
            data[k] = v
        else:
            extra[k] = v  # passed through to the server / engine untouched
    cfg = SamplingConfig(**data, extra=extra)
    if not isinstance(cfg.max_tokens, int) or cfg.max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {cfg.max_tokens!r}")
    if cfg.temperature < 0:
        raise ValueError("temperature must be >= 0")
    return cfg
