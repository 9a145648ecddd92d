"""Request parsing: an OpenAI chat-completions body -> a typed, validated ParsedRequest (audio still
encoded), or an ApiError that the app turns into an OpenAI-style error reply."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any

from dt_eval.backends.base import GenerationRequest, SamplingConfig
from dt_eval.pipeline.audio import AudioError, load_audio
from dt_eval.types import AudioRef

DEFAULT_MAX_TOKENS = 4096

_ROLES = ("system", "developer", "user", "assistant")
_UNSUPPORTED_FIELDS = ("tools", "functions", "structured_outputs", "guided_json", "guided_choice",
                       "guided_regex", "guided_grammar", "guided_decoding_backend", "logit_bias",
                       "prompt_logprobs")


class ApiError(Exception):
    """A request the server refuses: HTTP status, message, OpenAI error type and the offending field."""

    def __init__(self, status: int, message: str, type_: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.type, self.param)


def error_body(status: int, message: str, type_: str, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error reply."""
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


@dataclass
class ParsedRequest:
    request: GenerationRequest
    stream: bool
    include_usage: bool
    include_reasoning: bool
    thinking_enabled: bool
    stop: list[str] | None
    batch_key: tuple


def _decode_b64(data: Any, param: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise _bad("audio data must be a non-empty base64 string", param)
    try:
        return base64.b64decode("".join(data.split()), validate=True)  # line-wrapped base64 is fine
    except (binascii.Error, ValueError):
        raise _bad("audio data is not valid base64", param) from None


def _audio_bytes(part: dict[str, Any]) -> bytes:
    kind = part.get("type")
    if kind == "input_audio" or (kind is None and "input_audio" in part):
        spec = part.get("input_audio")
        if not isinstance(spec, dict):
            raise _bad("input_audio must be an object with 'data' and 'format'", "messages")
        fmt = spec.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise _bad("input_audio.format must be a string", "messages")
        return _decode_b64(spec.get("data"), "messages")
    spec = part.get("audio_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise _bad("audio_url must be {'url': 'data:audio/...;base64,...'}", "messages")
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url else "a path"
        raise _bad(f"audio_url: only data: URLs are accepted by this server, not {scheme[:16]!r} URLs",
                   "messages")
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise _bad("audio_url: the data URL must be base64-encoded (data:audio/wav;base64,...)", "messages")
    return _decode_b64(payload, "messages")


def _parse_messages(raw: Any) -> tuple[list[dict[str, Any]], list[bytes]]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty list", "messages")
    messages, audio = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}] must be an object", "messages")
        role = m.get("role")
        if role not in _ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(_ROLES)}; got {str(role)[:40]!r}",
                       "messages")
        if role == "developer":
            role = "system"
        content = m.get("content")
        if content is None and role == "assistant":
            content = ""
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise _bad(f"messages[{i}].content must be a string or a list of parts", "messages")
        parts = []
        for j, p in enumerate(content):
            if not isinstance(p, dict):
                raise _bad(f"messages[{i}].content[{j}] must be an object", "messages")
            kind = p.get("type")
            if kind == "text":
                if not isinstance(p.get("text"), str):
                    raise _bad(f"messages[{i}].content[{j}].text must be a string", "messages")
                parts.append({"type": "text", "text": p["text"]})
            elif kind in ("input_audio", "audio_url"):
                audio.append(_audio_bytes(p))
                parts.append({"type": "audio"})
            else:
                raise _bad(f"messages[{i}].content[{j}]: unsupported part type {str(kind)[:40]!r} "
                           "(this server takes text, input_audio and audio_url)", "messages")
        messages.append({"role": role, "content": parts})
    return messages, audio


def _number(body: dict, name: str, default: Any, *, integer: bool = False, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False) -> Any:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise _bad(f"{name} must be {'an integer' if integer else 'a number'}", name)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _bad(f"{name} must be {'>' if lo_open else '>='} {lo}", name)
    if hi is not None and v > hi:
        raise _bad(f"{name} must be <= {hi}", name)
    return v


def generation_defaults(model: Any) -> dict[str, Any]:
    """Sampling defaults from the checkpoint's generation_config (only values it sets)."""
    try:
        diff = model.generation_config.to_diff_dict()
    except Exception:  # noqa: BLE001 - no or odd generation config: plain defaults
        diff = {}
    keys = ("temperature", "top_p", "top_k", "repetition_penalty")
    return {k: diff[k] for k in keys if diff.get(k) is not None}


def load_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("the request body is not valid JSON") from None


def _logprobs(body: dict) -> int | None:
    """None (not asked), else how many top alternatives per token (OpenAI: 0-20), as vLLM reads
    `logprobs` / `top_logprobs`: top_logprobs needs logprobs."""
    asked = body.get("logprobs")
    if asked is not None and not isinstance(asked, bool):
        raise _bad("logprobs must be a boolean", "logprobs")
    top = _number(body, "top_logprobs", None, integer=True, lo=0, hi=20)
    if top and not asked:
        raise _bad("when using top_logprobs, logprobs must be set to true", "top_logprobs")
    return (top or 0) if asked else None


def parse_request(body: Any, served_name: str, defaults: dict[str, Any]) -> tuple[ParsedRequest, list[bytes]]:
    """Validate an OpenAI chat body; returns the request (audio still encoded) and the audio bytes."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != served_name:
        raise ApiError(404, f"The model `{str(model)[:200]}` does not exist.", param="model")
    for name in _UNSUPPORTED_FIELDS:
        if body.get(name):
            raise _bad(f"{name} is not supported by dt_eval.serving.hfserver", name)
    logprobs = _logprobs(body)
    fmt = body.get("response_format")
    if fmt and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise _bad("response_format other than text is not supported by dt_eval.serving.hfserver", "response_format")
    if _number(body, "n", 1, integer=True, lo=1) != 1:
        raise _bad("n must be 1", "n")
    messages, audio = _parse_messages(body.get("messages"))

    max_tokens = body.get("max_completion_tokens")
    max_tokens = _number(body, "max_completion_tokens" if max_tokens is not None else "max_tokens",
                         DEFAULT_MAX_TOKENS, integer=True, lo=1)
    temperature = float(_number(body, "temperature", defaults.get("temperature", 1.0), lo=0))
    top_p = float(_number(body, "top_p", defaults.get("top_p", 1.0), lo=0, hi=1, lo_open=True))
    top_k = _number(body, "top_k", defaults.get("top_k"), integer=True, lo=-1)
    top_k = top_k if top_k and top_k > 0 else None
    rep = _number(body, "repetition_penalty", defaults.get("repetition_penalty"), lo=0, lo_open=True)
    seed = _number(body, "seed", None, integer=True)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _bad("stop must be a string or a list of strings", "stop")
    stop = [s for s in stop if s] if stop else None
    ctk = body.get("chat_template_kwargs") or {}
    if not isinstance(ctk, dict):
        raise _bad("chat_template_kwargs must be an object", "chat_template_kwargs")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("stream must be a boolean", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise _bad("stream_options must be an object", "stream_options")
    include_reasoning = body.get("include_reasoning", True)

    sampling = SamplingConfig(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                              repetition_penalty=float(rep) if rep is not None else None, seed=seed,
                              stop=stop)
    if logprobs is not None and stream:
        raise _bad("logprobs are returned on non-streamed requests only by dt_eval.serving.hfserver", "logprobs")
    greq = GenerationRequest(key=f"chatcmpl-{uuid.uuid4().hex}", messages=messages, audio=[],
                             sampling=sampling, chat_template_kwargs=dict(ctk), logprobs=logprobs)
    if temperature == 0:  # greedy: top_p / top_k / seed do not matter
        key: tuple = (max_tokens, 0.0, sampling.repetition_penalty, logprobs)
    else:
        key = (max_tokens, temperature, top_p, top_k, sampling.repetition_penalty, seed, logprobs)
        if seed is not None:
            key = key + (greq.key,)  # seeded sampling runs alone, so the seed alone fixes the output
    return ParsedRequest(
        request=greq, stream=stream, include_usage=bool(opts.get("include_usage")),
        include_reasoning=bool(include_reasoning), thinking_enabled=bool(ctk.get("enable_thinking", True)),
        stop=stop, batch_key=key,
    ), audio


def decode_audio(blobs: list[bytes], rate: int) -> list:
    """The request's audio as arrays at `rate`; a clip that does not decode is the client's 400."""
    out = []
    for i, data in enumerate(blobs):
        try:
            out.append(load_audio(AudioRef(data=data), target_rate=rate).audio)
        except AudioError as e:
            raise _bad(f"audio {i + 1}: {e}", "messages") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure is the client's audio
            raise _bad(f"audio {i + 1}: cannot decode embedded audio ({type(e).__name__})", "messages") from None
    return out


def check_template(backend: Any, req: GenerationRequest) -> None:
    """Render the chat template once, so a template error is a 400 before the request queues."""
    from dt_eval.backends.hf import to_hf_messages

    try:
        backend.processor.apply_chat_template(to_hf_messages(req.messages), add_generation_prompt=True,
                                              tokenize=False, **req.chat_template_kwargs)
    except Exception as e:  # noqa: BLE001 - jinja raise_exception(), bad kwargs
        raise _bad(f"chat template error: {type(e).__name__}: {str(e)[:300]}", "messages") from None
