"""Streaming chat completions (SSE) against an OpenAI-compatible server, on raw aiohttp.

A small client for interactive use (the Gradio demo, benchmarks/serve_stream.py): one request,
``stream: true``, and a running view of what the model has said so far, split into reasoning and
answer:

* servers with a reasoning parser (vLLM ``--reasoning-parser``, ``dt_eval.serving.hfserver``) send the
  thinking as ``delta.reasoning`` (older vLLM: ``delta.reasoning_content``) and the answer as
  ``delta.content``;
* servers without one send everything as ``delta.content``, with the thinking inside
  ``<think>...</think>``: this client then splits the accumulated text itself
  (:func:`dt_eval.pipeline.extract.split_reasoning`), holding back a half-received tag.

:func:`stream_chat` yields cumulative :class:`StreamUpdate` snapshots (not deltas), so a view can
simply re-render the latest one and may skip any it has no time for.

Errors are :class:`StreamError` with a message fit to show a user: it names the server by its URL
without credentials and never contains the API key (an echo of it by a server is redacted) or the
request body (audio). A base URL with `user:password@` is sent HTTP basic auth (in place of the
bearer key).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from dt_eval.backends.openai_compat import short_server_message
from dt_eval.pipeline.extract import split_reasoning
from dt_eval.util.redact import (
    basic_auth_header,
    redact_text,
    redact_url,
    split_credentials,
)

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


class StreamError(Exception):
    """A request that failed; `str(e)` is safe to show (no key, no audio, no credentials in URLs)."""


class ServerUnreachable(StreamError):
    """Nothing answered at the server's address (down, wrong port, DNS)."""


@dataclass
class StreamUpdate:
    """What the model has said so far (cumulative)."""

    reasoning: str = ""
    content: str = ""
    reasoning_done: bool = False  # the answer has started (or the stream ended)
    finished: bool = False  # the last update of the stream
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    split_by: str = "server"  # "server" (reasoning parser) or "client" (<think> tags split here)
    t_first_token: float | None = None  # time.perf_counter() of the first non-empty delta
    t_reasoning_done: float | None = None
    chunks: int = 0  # SSE data events received


@dataclass
class _Acc:
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    server_reasoning: bool = False


def resolve_api_key(api_key: str | None) -> str | None:
    """`api_key`, else $DT_EVAL_API_KEY, else $OPENAI_API_KEY (as the openai backend)."""
    return api_key or os.environ.get("DT_EVAL_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def _redact(text: str, *secrets: str | None) -> str:
    return redact_text(text, secrets)


def _endpoint(base_url: str, path: str, key: str | None) -> tuple[str, dict[str, str], str | None]:
    """(URL to request without userinfo, auth headers, the URL's password): `user:password@`
    becomes HTTP basic auth, else the bearer key (when there is one)."""
    url, credentials = split_credentials(base_url.rstrip("/"))
    if credentials is not None:
        return url + path, {"Authorization": basic_auth_header(credentials)}, credentials[1]
    return url + path, ({"Authorization": f"Bearer {key}"} if key else {}), None


def _held_back(text: str) -> int:
    """Length of a trailing piece of `text` that may still grow into a think tag."""
    for tag in (_THINK_CLOSE, _THINK_OPEN):
        for k in range(min(len(tag) - 1, len(text)), 0, -1):
            if text.endswith(tag[:k]):
                return k
    return 0


def _client_split(text: str, final: bool) -> tuple[str, str, bool]:
    """(reasoning, content, reasoning_done) of tagged text from a server without a parser."""
    if not final:
        text = text[: len(text) - _held_back(text)]
    reasoning, rest, truncated = split_reasoning(text)
    if reasoning is None:  # no tags (yet)
        return "", rest, False
    if truncated:  # <think> opened, not closed yet
        return reasoning, "", final
    return reasoning, rest, True


def _snapshot(acc: _Acc, final: bool) -> tuple[str, str, bool, str]:
    content = "".join(acc.content)
    if acc.server_reasoning or not content:
        reasoning = "".join(acc.reasoning)
        return reasoning, content, bool(content) or final, "server"
    r, c, done = _client_split(content, final)
    return r, c, done or final, "client"


async def fetch_models(base_url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> list[str]:
    """Model ids served at `base_url` (``GET {base_url}/models``)."""
    key = resolve_api_key(api_key)
    url, headers, password = _endpoint(base_url, "/models", key)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.get(url, headers=headers) as r:
                raw = await r.read()
                if r.status != 200:
                    raise StreamError(
                        f"{redact_url(base_url)} answered HTTP {r.status} to GET /models: "
                        f"{_redact(short_server_message(raw), key, password)}")
                data = json.loads(raw)
    except aiohttp.ClientConnectorError:
        raise ServerUnreachable(f"cannot connect to the model server at {redact_url(base_url)}") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        raise StreamError(f"GET {redact_url(base_url)}/models failed: {type(e).__name__}") from None
    return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def stream_chat(
    base_url: str,
    model: str,
    messages: list[dict[str, Any]],
    *,
    api_key: str | None = None,
    session: aiohttp.ClientSession | None = None,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 600.0,
    **fields: Any,
) -> AsyncIterator[StreamUpdate]:
    """POST ``{base_url}/chat/completions`` with ``stream: true``; yield a snapshot per SSE event.

    `messages` are sent as they are (audio already as ``input_audio`` parts); `fields` are further
    body fields (max_tokens, temperature, chat_template_kwargs, ...). The last update has
    ``finished=True``. Raises :class:`ServerUnreachable` / :class:`StreamError`.

    A consumer that stops early (closes this generator or cancels its task: the demo's Stop)
    hangs up: aiohttp closes a connection whose response was not read to the end rather than
    pooling it, so the model server sees the disconnect and stops generating (tested).
    """
    key = resolve_api_key(api_key)
    url, auth, password = _endpoint(base_url, "/chat/completions", key)
    shown = redact_url(base_url)
    body = {"model": model, "messages": messages, **fields, "stream": True,
            "stream_options": {"include_usage": True}}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **auth}
    own = session is None
    if own:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        session = aiohttp.ClientSession(timeout=timeout)
    acc = _Acc()
    upd = StreamUpdate()
    try:
        try:
            resp = await session.post(url, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers)
        except aiohttp.ClientConnectorError:
            raise ServerUnreachable(
                f"cannot connect to the model server at {shown}: is it running?") from None
        except asyncio.TimeoutError:
            raise ServerUnreachable(f"the model server at {shown} did not answer in time") from None
        except aiohttp.ClientError as e:
            raise StreamError(f"request to {shown} failed: {type(e).__name__}") from None
        async with resp:
            if resp.status != 200:
                raw = await resp.read()
                raise StreamError(f"the model server at {shown} answered HTTP {resp.status}: "
                                  f"{_redact(short_server_message(raw), key, password)}")
            buf = b""
            done = False
            try:
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        line = line.strip()
                        if not line.startswith(b"data:"):
                            continue  # comments, event:, id:, blank separators
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            done = True
                            break
                        try:
                            event = json.loads(data)
                        except ValueError:
                            raise StreamError(f"the model server at {shown} sent a malformed stream event") from None
                        if isinstance(event, dict) and isinstance(event.get("error"), dict):
                            msg = _redact(str(event["error"].get("message", "error")), key, password)
                            raise StreamError(f"the model server at {shown} reported an error: {msg[:300]}")
                        if _apply(event, acc, upd):
                            upd.chunks += 1
                            yield _fill(upd, acc, final=False)
                    if done:
                        break
            except asyncio.TimeoutError:
                raise StreamError(f"the model server at {shown} stopped sending for {read_timeout_s:g} s") from None
            except aiohttp.ClientPayloadError:
                raise StreamError(f"the connection to {shown} broke off mid-answer") from None
            except aiohttp.ClientError as e:
                raise StreamError(f"the stream from {shown} failed: {type(e).__name__}") from None
            if not done and upd.finish_reason is None:
                raise StreamError(f"the stream from {shown} ended early (no [DONE])")
        upd.finished = True
        yield _fill(upd, acc, final=True)
    finally:
        if own:
            await session.close()


def _apply(event: Any, acc: _Acc, upd: StreamUpdate) -> bool:
    """Fold one chunk into `acc`/`upd`; True if anything changed."""
    if not isinstance(event, dict):
        return False
    changed = False
    if isinstance(event.get("usage"), dict):
        upd.usage = event["usage"]
        changed = True
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return changed
    choice = choices[0]
    delta = choice.get("delta") or {}
    if isinstance(delta, dict):
        # hfserver and some vLLM versions send both fields with the same text: take one.
        r = delta.get("reasoning")
        if r is None:
            r = delta.get("reasoning_content")
        if isinstance(r, str) and r:
            acc.reasoning.append(r)
            acc.server_reasoning = True
            changed = True
        c = delta.get("content")
        if isinstance(c, str) and c:
            acc.content.append(c)
            changed = True
        if changed and upd.t_first_token is None and (acc.reasoning or acc.content):
            upd.t_first_token = time.perf_counter()
    if choice.get("finish_reason"):
        upd.finish_reason = choice["finish_reason"]
        changed = True
    return changed


def _fill(upd: StreamUpdate, acc: _Acc, final: bool) -> StreamUpdate:
    upd.reasoning, upd.content, done, upd.split_by = _snapshot(acc, final)
    if done and not upd.reasoning_done:
        upd.reasoning_done = True
        upd.t_reasoning_done = time.perf_counter()
    return StreamUpdate(**upd.__dict__)  # a copy: callers may keep it
