"""Model-family presets (one YAML file per family in `serve/presets/`) and their registry.

A preset holds what one model family needs, for both halves of dt-eval:

* `dt-eval serve` -- how to start vLLM's OpenAI server (`vllm` section: dtype, context length,
  reasoning parser, extra flags, env vars);
* `dt-eval run` -- how to prompt and sample (`audio`, `thinking`, `generation`, `system_prompt`).

Every value in the files cites where it comes from; values nobody published are marked
`# unconfirmed` there. Light module: msgspec schemas; PyYAML loads when a file is read.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from dt_eval.errors import DtEvalError
from dt_eval.util.resources import resource_paths
from dt_eval.util.schema import Schema, SchemaError


class AudioSpec(Schema, kw_only=True):
    sampling_rate: int = 16000  # Hz the family's feature extractor expects
    # Seconds of audio one item can carry before the processor truncates it; None = no cap
    # (long audio is split into windows by the model's own front end, not cut).
    window_s: float | None = None
    max_items_per_prompt: Annotated[int, Meta(ge=1)] = 1  # what `--limit-mm-per-prompt` allows


class ThinkingSpec(Schema, kw_only=True):
    """How this family is made to reason.

    native: the model reasons by itself (`<think>...</think>`); `chat_template_kwargs_on/off`
    hold its chat-template switch when it has one. prompted: no native reasoning; thinking on
    appends `prompt_instruction` to the question. none: the family is never asked to reason.
    """

    mode: Literal["none", "native", "prompted"]
    chat_template_kwargs_on: dict[str, Any] = msgspec.field(default_factory=dict)
    chat_template_kwargs_off: dict[str, Any] = msgspec.field(default_factory=dict)
    prompt_instruction: str | None = None
    # A native thinker without an off switch (a thinking-only checkpoint): "--thinking off"
    # cannot stop it reasoning.
    always_on: bool = False

    def __post_init__(self) -> None:
        if self.mode == "prompted" and not (self.prompt_instruction or "").strip():
            raise ValueError("thinking.mode 'prompted' needs a prompt_instruction")
        if self.mode != "prompted" and self.prompt_instruction:
            raise ValueError("thinking.prompt_instruction is only used with mode 'prompted'")
        if self.always_on and self.mode != "native":
            raise ValueError("thinking.always_on only makes sense with mode 'native'")


class GenerationSpec(Schema, kw_only=True):
    """The family's published decoding defaults. None = not published: leave to the server."""

    temperature: Annotated[float, Meta(ge=0)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: int | None = None  # -1 / None: disabled
    repetition_penalty: Annotated[float, Meta(gt=0)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None


class VllmSpec(Schema, kw_only=True):
    supported: bool  # the architecture is in mainline vLLM
    min_version: str | None = None  # first vLLM release known to serve it; None = unknown
    reasoning_parser: str | None = None  # `--reasoning-parser` name (vllm/reasoning/__init__.py)
    dtype: str = "bfloat16"
    max_model_len: Annotated[int, Meta(ge=1)] | None = None
    args: list[str] = msgspec.field(default_factory=list)  # extra `vllm serve` flags, already split
    env: dict[str, str] = msgspec.field(default_factory=dict)
    notes: str = ""

    def serve_args(self, *, tensor_parallel_size: int | None = None,
                   data_parallel_size: int | None = None, extra: list[str] | None = None) -> list[str]:
        """`vllm serve MODEL` flags for this family (without the model)."""
        out = ["--dtype", self.dtype]
        if self.max_model_len:
            out += ["--max-model-len", str(self.max_model_len)]
        if self.reasoning_parser:
            out += ["--reasoning-parser", self.reasoning_parser]
        if tensor_parallel_size and tensor_parallel_size > 1:
            out += ["--tensor-parallel-size", str(tensor_parallel_size)]
        if data_parallel_size and data_parallel_size > 1:
            out += ["--data-parallel-size", str(data_parallel_size)]
        return out + list(self.args) + list(extra or [])


class Preset(Schema, kw_only=True):
    """Everything dt-eval knows about one model family. Loaded from `serve/presets/<family>.yaml`."""

    family: str
    description: str
    # Lowercase substrings of hub ids / local paths / config.json model_type or architectures.
    match: Annotated[list[str], Meta(min_length=1)]
    sources: list[str] = msgspec.field(default_factory=list)
    audio: AudioSpec = msgspec.field(default_factory=AudioSpec)
    thinking: ThinkingSpec
    generation: GenerationSpec = msgspec.field(default_factory=GenerationSpec)
    system_prompt: str | None = None
    vllm: VllmSpec

    def __post_init__(self) -> None:
        bad = [m for m in self.match if m != m.lower() or not m.strip()]
        if bad:
            raise ValueError(f"match entries must be non-empty lowercase strings: {bad}")
        if self.vllm.reasoning_parser and self.thinking.mode == "none":
            raise ValueError("a reasoning parser is set but thinking.mode is 'none'")
        if "--limit-mm-per-prompt" in self.vllm.args:
            i = self.vllm.args.index("--limit-mm-per-prompt")
            try:
                limits = json.loads(self.vllm.args[i + 1])
            except (IndexError, json.JSONDecodeError) as e:
                raise ValueError(f"--limit-mm-per-prompt needs a JSON object after it: {e}") from None
            if not isinstance(limits, dict) or limits.get("audio", 0) < self.audio.max_items_per_prompt:
                raise ValueError("--limit-mm-per-prompt allows fewer audios than audio.max_items_per_prompt")


class UnknownPresetError(DtEvalError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class PresetError(DtEvalError, ValueError):
    """A preset YAML that does not validate (the message names the file and the field)."""


def preset_dirs() -> list[Path]:
    """Where presets live: the repo's `serve/presets` (editable install) or the wheel's bundled copy."""
    return [d for d in resource_paths("serve", "presets") if d.is_dir()]


@lru_cache(maxsize=None)
def _registry() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def list_presets() -> list[str]:
    """Names of the known family presets."""
    return sorted(_registry())


def load_preset(name_or_path: str) -> Preset:
    """Load a preset by family name (`qwen2-audio`) or by path to a YAML file."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) and path.is_file():
        return _parse(path.resolve())
    reg = _registry()
    if name_or_path not in reg:
        raise UnknownPresetError(
            f"unknown model preset {name_or_path!r}; known presets: {', '.join(sorted(reg)) or '(none found)'}"
        )
    return _parse(reg[name_or_path])


@lru_cache(maxsize=None)
def _parse(path: Path) -> Preset:
    from dt_eval.util.yamlfile import load_yaml

    try:
        preset = Preset.model_validate(load_yaml(path))
    except (SchemaError, ValueError) as e:
        raise PresetError(f"{path}: not a valid model preset: {e}") from None
    if preset.family != path.stem:
        raise PresetError(f"{path}: family {preset.family!r} must match the file name {path.stem!r}")
    return preset


def _local_config_keys(model: str) -> list[str]:
    """model_type / architectures of a local model directory, lowercased ([] if none)."""
    cfg_path = Path(model).expanduser() / "config.json"
    try:
        if not cfg_path.is_file():
            return []
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(cfg, dict):
        return []
    keys: list[str] = []
    for c in (cfg, cfg.get("thinker_config") or {}):  # omni configs nest the thinker
        if isinstance(c, dict):
            if isinstance(c.get("model_type"), str):
                keys.append(c["model_type"].lower())
            archs = c.get("architectures")
            if isinstance(archs, list):
                keys += [a.lower() for a in archs if isinstance(a, str)]
    return keys


def detect_preset(model: str) -> Preset | None:
    """The family preset for a hub id or local path, or None.

    The id/path is matched first (`Qwen/Qwen3-Omni-30B-A3B-Thinking`); for a local directory
    whose path names no family, its config.json `model_type` / `architectures` are used. The
    longest matching `match` entry wins, so `qwen3-omni-30b-a3b-thinking` beats `qwen3-omni`
    and `tiny-qwen2audio` beats `qwen2audio`.
    """
    name = model.strip().rstrip("/").lower()
    if not name:
        return None
    presets = [load_preset(n) for n in list_presets()]

    def best(texts: list[str]) -> Preset | None:
        top: tuple[int, str] | None = None
        winner: Preset | None = None
        for p in presets:
            for m in p.match:
                if any(m in t for t in texts):
                    key = (len(m), p.family)
                    if top is None or key[0] > top[0]:
                        top, winner = key, p
        return winner

    return best([name]) or best(_local_config_keys(model))
