"""OpenAI-compatible chat-completions backend (vLLM, SGLang, ...), on raw aiohttp.

Why not the `openai` package: it costs ~1.6 ms of client CPU per request against ~0.2 ms for a
plain aiohttp POST, which matters at hundreds of requests per second (see
benchmarks/run_overhead.py).

What it does:
- audio placeholders `{"type": "audio"}` in the request's messages become `input_audio` parts
  holding a base64 16-bit PCM WAV of the matching `request.audio[i]`;
- several servers share the load: each attempt goes to the server with the fewest requests in
  flight (ties round-robin), a retry prefers a server this request has not tried yet, and a
  server that refused a connection is avoided for a short cool-down;
- one global concurrency limit (a semaphore) across all servers and all `generate` calls;
- bounded retries with exponential backoff and jitter for connection errors, timeouts,
  HTTP 408/409/429/5xx and malformed answers; other 4xx are client errors and fail at once;
- a failed request becomes `Generation(error=...)`: `generate` never raises for one request;
- the API key goes only into the Authorization header: never into describe(), repr(), errors
  or logs (any echo of it by a server is redacted);
- a base URL with `user:password@` is sent HTTP basic auth (`Authorization: Basic`, in place of
  the bearer key) and used without its userinfo; the credentials never appear in what it shows;
- a request with `logprobs=K` asks for `logprobs: true, top_logprobs: K` and reads
  `choices[0].logprobs.content`: every completion token, the reasoning included (vLLM computes them
  over all output tokens before its reasoning parser splits the text); a server that sends none
  leaves the answer as it is, with `logprobs_missing` in its backend_info.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import aiohttp

from dt_eval.backends.base import Generation, GenerationRequest
from dt_eval.pipeline.audio import wav_base64
from dt_eval.pipeline.logprobs import topk_entropy
from dt_eval.types import TokenLogprobs
from dt_eval.util.redact import (
    basic_auth_header,
    redact_text,
    redact_url,
    split_credentials,
)

try:  # optional: faster JSON when present
    import orjson as _orjson

    def _dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj)

    _loads = _orjson.loads
    _JSON_ERRORS: tuple[type[BaseException], ...] = (_orjson.JSONDecodeError, ValueError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - depends on the environment
    import json as _json

    def _dumps(obj: Any) -> bytes:
        return _json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    _loads = _json.loads
    _JSON_ERRORS = (ValueError, UnicodeDecodeError)

log = logging.getLogger(__name__)

_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)  # distinct classes before Python 3.11
# Failures to reach the server at all (ConnectionTimeoutError exists from aiohttp 3.10 on).
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError,) + (
    (aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()
)
RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
_MAX_BACKOFF_S = 60.0
_MAX_ERROR_CHARS = 300
_COOLDOWN_CAP_S = 30.0
# Unique per process: marks where the (already base64, so JSON-safe) audio goes in the body.
_AUDIO_TOKEN = "@@dt-eval-audio-" + uuid.uuid4().hex + "-%d@@"


# --------------------------------------------------------------------------------------------
# Request building


class _BadRequest(ValueError):
    """A request that cannot be sent as it is (never retried)."""


def _build_messages(messages: list[dict[str, Any]], n_audio: int) -> list[dict[str, Any]]:
    """Copy `messages` with the i-th audio placeholder replaced by an input_audio part whose data
    is a token (spliced with the base64 audio after JSON encoding). The input is not mutated."""
    out = []
    idx = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            parts = []
            for p in content:
                if isinstance(p, dict) and p.get("type") == "audio":
                    parts.append(
                        {"type": "input_audio", "input_audio": {"data": _AUDIO_TOKEN % idx, "format": "wav"}}
                    )
                    idx += 1
                else:
                    parts.append(p)
            m = {**m, "content": parts}
        out.append(m)
    if idx != n_audio:
        raise _BadRequest(f"the messages have {idx} audio placeholder(s) but the request has {n_audio} audio input(s)")
    return out


def _sampling_fields(req: GenerationRequest) -> dict[str, Any]:
    s = req.sampling
    body: dict[str, Any] = {"max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p}
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if s.top_k is not None:
        body["top_k"] = s.top_k
    if s.repetition_penalty is not None:
        body["repetition_penalty"] = s.repetition_penalty
    if req.chat_template_kwargs:
        body["chat_template_kwargs"] = dict(req.chat_template_kwargs)
    extra = s.extra or {}
    guided = sorted(k for k in extra if k.startswith("guided_"))
    if guided:
        raise _BadRequest(
            f"{', '.join(guided)}: current vLLM ignores guided_* fields silently (unconstrained output); "
            'use {"structured_outputs": {"choice": [...]}} instead'
        )
    body.update(extra)
    body.pop("stream", None)  # this backend reads whole (non-streamed) answers
    if req.logprobs is not None:  # after the extras: the run's --logprobs decides, not a stray gen-kwarg
        body["logprobs"], body["top_logprobs"] = True, int(req.logprobs)
    return body


def build_body(model: str, req: GenerationRequest) -> bytes:
    """The JSON body for one request, audio included (exposed for tests and benchmarks)."""
    body = {"model": model, "messages": _build_messages(req.messages, len(req.audio))}
    body.update(_sampling_fields(req))
    raw = _dumps(body)
    if not req.audio:
        return raw
    pieces = []
    rest = raw
    for i, audio in enumerate(req.audio):
        token = (_AUDIO_TOKEN % i).encode("ascii")
        before, sep, after = rest.partition(token)
        if not sep or token in after:  # cannot happen unless a user string holds the token
            raise _BadRequest("internal error: audio token not found exactly once in the body")
        pieces.append(before)
        pieces.append(wav_base64(audio))
        rest = after
    pieces.append(rest)
    return b"".join(pieces)


# --------------------------------------------------------------------------------------------
# Helpers


def short_server_message(raw: bytes) -> str:
    """The server's error message: `error.message`, `message` or `detail`, else the raw text."""
    try:
        data = _loads(raw)
    except _JSON_ERRORS:
        data = None
    msg: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
        if msg is None:
            msg = data.get("message") or data.get("detail")
    if msg is None:
        msg = raw.decode("utf-8", "replace")
    msg = " ".join(str(msg).split())
    return msg[:_MAX_ERROR_CHARS] + ("..." if len(msg) > _MAX_ERROR_CHARS else "")


def _retry_after_s(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, min(float(value), _MAX_BACKOFF_S))
    except ValueError:
        return None


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers return content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def read_logprobs(choice: dict[str, Any], k: int) -> tuple[TokenLogprobs | None, str | None]:
    """(per-token log-probabilities, None) from a chat choice's `logprobs.content`, or (None, why
    not). The entropy of each position is estimated from its `top_logprobs` (topk_entropy)."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return None, "the server returned no logprobs.content"
    tokens, chosen, entropy, top = [], [], [], []
    try:
        for entry in content:
            alts = [(str(a["token"]), float(a["logprob"])) for a in entry["top_logprobs"]]
            if not alts:
                return None, "the server returned no top_logprobs"
            tokens.append(str(entry["token"]))
            chosen.append(float(entry["logprob"]))
            entropy.append(topk_entropy([lp for _, lp in alts]))
            top.append(alts)
    except (KeyError, TypeError, ValueError):
        return None, "malformed logprobs.content from the server"
    return TokenLogprobs(tokens=tokens, logprob=chosen, entropy=entropy, k=k, top=top), None


class _Server:
    __slots__ = ("index", "url", "display", "headers", "password", "inflight", "sent", "succeeded", "failed",
                 "fail_streak", "down_until")

    def __init__(self, index: int, url: str, headers: dict[str, str]) -> None:
        self.index = index
        # aiohttp refuses a URL with userinfo next to an Authorization header: send it as basic auth.
        self.url, credentials = split_credentials(url)
        self.display = redact_url(url)  # for describe(), records and errors
        self.headers = headers
        self.password = None
        if credentials is not None:
            self.headers = {**headers, "Authorization": basic_auth_header(credentials)}
            self.password = credentials[1]
        self.inflight = 0
        self.sent = 0
        self.succeeded = 0
        self.failed = 0
        self.fail_streak = 0  # consecutive connection refusals
        self.down_until = 0.0  # avoid (but never forbid) until then


class _Attempt(Exception):
    """One failed attempt: `retry` says whether another attempt may help."""

    def __init__(self, message: str, retry: bool, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry
        self.wait_s = wait_s


# --------------------------------------------------------------------------------------------
# The backend


class OpenAIBackend:
    """Chat completions against one or more OpenAI-compatible servers.

    `base_urls` are API roots such as "http://127.0.0.1:8000/v1" (requests go to
    `{base_url}/chat/completions`). `max_retries` counts retries: a request is tried at most
    `max_retries + 1` times.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: list[str] | str,
        concurrency: int = 32,
        timeout_s: float = 600,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        urls = [u.strip().rstrip("/") for u in base_urls if u and u.strip()]
        if not urls:
            raise ValueError("OpenAIBackend needs at least one base URL")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.model = model
        self.base_urls = urls
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        if api_key is not None:
            key, self._key_source = api_key, "argument"
        elif os.environ.get("DT_EVAL_API_KEY"):
            key, self._key_source = os.environ["DT_EVAL_API_KEY"], "env:DT_EVAL_API_KEY"
        elif os.environ.get("OPENAI_API_KEY"):
            key, self._key_source = os.environ["OPENAI_API_KEY"], "env:OPENAI_API_KEY"
        else:
            key, self._key_source = "EMPTY", "none"
        self._secret = key if key and key != "EMPTY" else None  # what redaction hides
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._servers = [_Server(i, u, self._headers) for i, u in enumerate(urls)]
        self._secrets = [self._secret] + [s.password for s in self._servers]
        self._rr = 0
        self._session: Any = None  # aiohttp.ClientSession, made in the running loop
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._encode_in_thread = False  # measured: no gain (see benchmarks/run_overhead.py)

    # -- protocol ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "base_urls": [s.display for s in self._servers],
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "backoff_s": self.backoff_s,
            "api_key_source": self._key_source,
        }

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_urls={[s.display for s in self._servers]!r}, "
            f"concurrency={self.concurrency})"
        )

    def stats(self) -> dict[str, Any]:
        """Per-server counters (attempts sent, successes, failures, in flight)."""
        return {
            s.display: {"sent": s.sent, "succeeded": s.succeeded, "failed": s.failed, "inflight": s.inflight}
            for s in self._servers
        }

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def generate(self, requests: Iterable[GenerationRequest] | Sequence[GenerationRequest]) -> AsyncIterator[Generation]:
        """Yield one Generation per request as each completes. Requests are started lazily, a
        window slightly larger than `concurrency` at a time, so huge request lists are fine."""
        self._ensure_session()
        done: asyncio.Queue[asyncio.Task[Generation]] = asyncio.Queue()
        pending: set[asyncio.Task[Generation]] = set()
        window = self.concurrency + max(2, self.concurrency // 4)
        it = iter(requests)

        def launch() -> bool:
            try:
                req = next(it)
            except StopIteration:
                return False
            task = asyncio.ensure_future(self._one(req))
            pending.add(task)
            task.add_done_callback(done.put_nowait)
            return True

        try:
            while len(pending) < window and launch():
                pass
            while pending:
                task = await done.get()
                pending.discard(task)
                launch()
                yield task.result()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def health(self) -> dict[str, Any]:
        """GET {base_url}/models on every server: reachable, which models, serves `model`?"""
        self._ensure_session()
        timeout = aiohttp.ClientTimeout(total=min(10.0, self.timeout_s))

        async def one(s: _Server) -> dict[str, Any]:
            info: dict[str, Any] = {"base_url": s.display, "ok": False}
            t0 = time.perf_counter()
            try:
                async with self._session.get(s.url + "/models", headers=s.headers, timeout=timeout) as resp:
                    raw = await resp.read()
                    info["latency_s"] = round(time.perf_counter() - t0, 4)
                    if resp.status != 200:
                        info["error"] = self._redact(f"HTTP {resp.status}: {short_server_message(raw)}")
                        return info
                    data = _loads(raw)
                    models = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
            except (aiohttp.ClientError, *_TIMEOUTS, OSError) as e:
                info["error"] = self._redact(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
                return info
            except (*_JSON_ERRORS, AttributeError) as e:
                info["error"] = f"malformed /models answer: {type(e).__name__}"
                return info
            info["models"] = models
            info["serves_model"] = self.model in models
            info["ok"] = info["serves_model"]
            if not info["ok"]:
                info["error"] = f"model {self.model!r} not served (served: {', '.join(map(str, models))})"
            return info

        servers = await asyncio.gather(*(one(s) for s in self._servers))
        return {"ok": all(s["ok"] for s in servers), "model": self.model, "servers": list(servers)}

    # -- internals -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def _ensure_session(self) -> None:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed and self._loop is loop:
            return
        # A session belongs to one event loop; a new loop (e.g. a second asyncio.run) gets a new one.
        connector = aiohttp.TCPConnector(limit=self.concurrency + 8, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(self.timeout_s, 30.0)),
        )
        self._sem = asyncio.Semaphore(self.concurrency)
        self._loop = loop

    def _pick(self, tried: dict[int, int]) -> _Server:
        """Fewest in flight; not cooling down; least tried by this request; ties round-robin."""
        now = time.monotonic()
        n = len(self._servers)
        best: _Server | None = None
        best_key: tuple[bool, int, int] | None = None
        for j in range(n):
            s = self._servers[(self._rr + j) % n]
            key = (s.down_until > now, tried.get(s.index, 0), s.inflight)
            if best_key is None or key < best_key:
                best, best_key = s, key
        assert best is not None
        self._rr = (best.index + 1) % n
        return best

    def _backoff(self, retry_number: int, hint: float | None) -> float:
        delay = min(_MAX_BACKOFF_S, self.backoff_s * (2 ** (retry_number - 1)))
        delay *= 0.5 + random.random() * 0.5  # jitter: spread synchronized retries
        if hint is not None:
            delay = max(delay, hint)
        return delay

    async def _one(self, req: GenerationRequest) -> Generation:
        try:
            if self._encode_in_thread and req.audio:
                body = await asyncio.to_thread(build_body, self.model, req)
            else:
                body = build_body(self.model, req)
        except _BadRequest as e:
            return Generation(key=req.key, error=self._redact(f"bad request: {e}"), backend_info={"attempts": 0})
        except Exception as e:  # e.g. audio that cannot be encoded
            return Generation(
                key=req.key,
                error=self._redact(f"cannot build the request: {type(e).__name__}: {e}"),
                backend_info={"attempts": 0},
            )
        tried: dict[int, int] = {}
        errors: list[str] = []
        server: _Server | None = None
        attempts = 0
        try:
            while True:
                attempts += 1
                assert self._sem is not None
                async with self._sem:
                    server = self._pick(tried)
                    tried[server.index] = tried.get(server.index, 0) + 1
                    try:
                        gen = await self._attempt(server, req.key, body, req.logprobs)
                    except _Attempt as e:
                        failure = e
                    else:
                        gen.backend_info = {**gen.backend_info, "base_url": server.display, "attempts": attempts}
                        if errors:
                            gen.backend_info["retried_errors"] = errors
                        return gen
                errors.append(failure.message)
                if not failure.retry or attempts > self.max_retries:
                    break
                delay = self._backoff(attempts, failure.wait_s)
                log.debug("request %s attempt %d failed (%s); retrying in %.2f s", req.key, attempts, failure.message, delay)
                if delay > 0:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never raise out of generate for one request
            errors.append(self._redact(f"internal error: {type(e).__name__}: {e}"))
        if len(errors) == 1 or attempts <= 1:
            message = errors[-1]
        else:
            message = f"failed after {attempts} attempts; last error: {errors[-1]}"
        info: dict[str, Any] = {"attempts": attempts, "errors": errors}
        if server is not None:
            info["base_url"] = server.display
        log.debug("request %s failed: %s", req.key, message)
        return Generation(key=req.key, error=message, backend_info=info)

    async def _attempt(self, server: _Server, key: str, body: bytes, logprobs_k: int | None = None) -> Generation:
        server.inflight += 1
        server.sent += 1
        t0 = time.perf_counter()
        try:
            try:
                async with self._session.post(server.url + "/chat/completions", data=body, headers=server.headers) as resp:
                    raw = await resp.read()
                    status = resp.status
                    headers = resp.headers
            except _CONNECT_ERRORS as e:
                # The server is down or unreachable: avoid it for a while (doubling, capped).
                server.fail_streak += 1
                server.down_until = time.monotonic() + min(_COOLDOWN_CAP_S, 0.5 * 2 ** (server.fail_streak - 1))
                detail = str(e) or type(e).__name__
                raise _Attempt(self._redact(f"cannot connect to {server.display}: {detail}"), retry=True) from None
            except _TIMEOUTS:
                raise _Attempt(f"timeout after {self.timeout_s:g} s at {server.display}", retry=True) from None
            except aiohttp.ClientError as e:
                detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                raise _Attempt(self._redact(f"connection error at {server.display}: {detail}"), retry=True) from None
            latency = time.perf_counter() - t0
            server.fail_streak = 0
            server.down_until = 0.0
            if status != 200:
                msg = self._redact(f"HTTP {status} from {server.display}: {short_server_message(raw)}")
                retry = status in RETRY_STATUSES or status >= 500
                raise _Attempt(msg, retry=retry, wait_s=_retry_after_s(headers) if retry else None)
            try:
                data = _loads(raw)
                choice = data["choices"][0]
                message = choice.get("message") or {}
            except (*_JSON_ERRORS, KeyError, IndexError, TypeError, AttributeError):
                snippet = raw[:80].decode("utf-8", "replace")
                raise _Attempt(
                    self._redact(f"malformed response from {server.display} (no choices): {snippet!r}"), retry=True
                ) from None
            reasoning = message.get("reasoning")
            if reasoning is None:
                reasoning = message.get("reasoning_content")
            usage = data.get("usage") or {}
            logprobs, missing = read_logprobs(choice, logprobs_k) if logprobs_k is not None else (None, None)
            server.succeeded += 1
            return Generation(
                key=key,
                text=_content_text(message.get("content")),
                reasoning=reasoning,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                latency_s=latency,
                logprobs=logprobs,
                backend_info={"logprobs_missing": missing} if missing else {},
            )
        except _Attempt:
            server.failed += 1
            raise
        finally:
            server.inflight -= 1


def from_settings(settings) -> OpenAIBackend:
    """The `openai` entry of the backend registry (dt_eval/backends/registry.py)."""
    if not settings.base_urls:
        raise ValueError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    return OpenAIBackend(settings.model, settings.base_urls, concurrency=settings.concurrency,
                         timeout_s=settings.timeout_s, max_retries=settings.max_retries,
                         api_key=settings.options.get("api_key"))
