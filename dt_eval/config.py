"""Run options: dt-eval's defaults, the model family's preset (serve/presets/*.yaml) and the
user's overrides (`--gen-kwargs`, flags), merged in that order of precedence."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dt_eval.tasks.prompts import GENERIC_THINK_INSTRUCTION, PromptSettings
from dt_eval.types import SamplingConfig


@dataclass
class RunOptions:
    tasks: list[str]
    model: str
    backend: str = "openai"
    output: Path = Path("runs/latest")
    base_urls: list[str] = field(default_factory=list)
    limit: int | None = None
    repeats: int = 1
    concurrency: int = 16
    batch_size: int = 8  # hf backend
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    data_dirs: dict[str, str] = field(default_factory=dict)  # task -> dir; "*" for all
    seed: int = 0
    retry_errors: bool = False
    audio_rate: int = 16000
    audio_window_s: float | None = None
    preset: str | None = None
    timeout_s: float = 600.0
    max_retries: int = 4
    device: str | None = None
    dtype: str | None = None
    progress: bool = True
    lm_eval_include_path: str | None = None  # extra lm-eval task configs for lm-eval:NAME tasks
    logprobs: int | None = None  # record per-token log-probabilities, with K top alternatives

    def identity(self) -> dict[str, Any]:
        """Settings that change what the model is asked, or what each sample records: a resumed
        run must match them. `logprobs` is one: a run resumed with another K (or none) would hold
        records whose entropies are not comparable (or missing). Older runs have no such key, read
        as None, so they resume as before."""
        return {
            "model": self.model,
            "sampling": self.sampling.to_dict(),
            "prompt": self.prompt.to_dict(),
            "seed": self.seed,
            "audio_rate": self.audio_rate,
            "audio_window_s": self.audio_window_s,
            "logprobs": self.logprobs,
        }



def options_from_preset(*, tasks: list[str], model: str, backend: str, preset: str | None = None,
                        thinking: str = "on", system_prompt: str | None = None,
                        audio_window: float | None = None) -> RunOptions:
    from dt_eval.tasks.presets import detect_preset, load_preset

    p = load_preset(preset) if preset else detect_preset(model)
    sampling = SamplingConfig()
    prompt = PromptSettings(thinking=thinking, system_prompt=system_prompt)
    rate, window = 16000, None
    if p is not None:
        g = p.generation
        sampling = SamplingConfig(
            max_tokens=g.max_tokens or sampling.max_tokens,
            temperature=g.temperature if g.temperature is not None else sampling.temperature,
            top_p=g.top_p if g.top_p is not None else sampling.top_p,
            top_k=g.top_k,
            repetition_penalty=g.repetition_penalty,
        )
        t = p.thinking
        prompt.native_thinking = t.mode == "native"
        prompt.chat_template_kwargs_on = dict(t.chat_template_kwargs_on or {})
        prompt.chat_template_kwargs_off = dict(t.chat_template_kwargs_off or {})
        prompt.think_instruction = t.prompt_instruction or GENERIC_THINK_INSTRUCTION
        if system_prompt is None and p.system_prompt:
            prompt.system_prompt = p.system_prompt
        rate = p.audio.sampling_rate or rate
        window = p.audio.window_s
    if audio_window is not None:
        window = audio_window or None  # 0 = never trim
    return RunOptions(tasks=tasks, model=model, backend=backend, sampling=sampling, prompt=prompt,
                      audio_rate=rate, audio_window_s=window, preset=p.family if p else None)


# ---------------------------------------------------------------- --gen-kwargs

_KNOWN = {f.name for f in fields(SamplingConfig)} - {"extra"}
_ALIASES = {"max_new_tokens": "max_tokens", "max_gen_toks": "max_tokens", "do_sample": None}


def parse_data_dirs(values: list[str] | None) -> dict[str, str]:
    """`--data-dir DIR` (all tasks: key "*") or `--data-dir mmau=DIR` (one task), repeatable."""
    out: dict[str, str] = {}
    for v in values or []:
        task, sep, path = v.partition("=")
        if sep and not Path(v).exists():
            out[task] = path
        else:
            out["*"] = v
    return out


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
