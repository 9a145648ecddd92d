"""Turn the model family's preset (serve/presets/*.yaml) into run options.

Precedence: dt-eval defaults < family preset < explicit command-line flags.
"""

from __future__ import annotations

from dt_eval.backends.base import SamplingConfig
from dt_eval.prompts import GENERIC_THINK_INSTRUCTION, PromptSettings
from dt_eval.runner import RunOptions


def options_from_preset(*, tasks: list[str], model: str, backend: str, preset: str | None = None,
                        thinking: str = "on", system_prompt: str | None = None,
                        audio_window: float | None = None) -> RunOptions:
    from dt_eval.presets import detect_preset, load_preset

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
