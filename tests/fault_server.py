"""A fake OpenAI-compatible server for FAULT INJECTION tests and the overhead benchmark.

Not a model: the real request path is tested against a real vLLM server elsewhere. This one
answers `POST /v1/chat/completions` and `GET /v1/models` and does, per request, one action:

  ok                    200, deterministic answer echoing the request, `message.reasoning` set
  ok_reasoning_content  same, with the old field name `reasoning_content`
  ok_null_content       200 with `content: null`, finish_reason "length"
  delay:<s>             wait <s> seconds, then ok
  timeout               wait `hang_s` (default 30 s; far past any test's client timeout)
  500 / 503 / 429 / 408 / 400 / 401 / 404 / 422 ...   that HTTP status with an OpenAI-style error
  401_echo_key          401 whose message repeats the request's Authorization header (redaction test)
  malformed             200 with an invalid JSON body
  no_choices            200 with valid JSON lacking `choices`
  drop                  close the connection without answering

Which action: `script` is a list (consumed in arrival order, then `default`), or a function
`(n, body) -> action` of the request's arrival number and parsed JSON body. Also, whatever the
script, a request whose text holds a tag `[[id=X faults=a,b,c]]` gets action a on its 1st attempt
at this server, b on its 2nd, ... and "ok" after the list: deterministic per-request faults even
under concurrency.

Usage in tests::

    with FaultServer(script=["500", "ok"]) as srv:
        backend = OpenAIBackend("fake-model", [srv.url], ...)
        ...
        srv.requests[0].body, srv.requests[0].headers, srv.max_inflight

Benchmark mode (separate process, fixed delay, no JSON parsing or recording)::

    python tests/fault_server.py --delay 0.05        # prints "PORT <n>", serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_TAG_RE = re.compile(r"\[\[id=(?P<id>[^\s\]]+)(?:\s+faults=(?P<faults>[^\]]*))?\]\]")

Script = list[str] | Callable[[int, dict[str, Any]], str] | None


@dataclass
class Received:
    n: int  # arrival number, from 0
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None  # parsed JSON (None when not JSON or when recording is off)
    action: str
    t: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return request_text(self.body or {})


def request_text(body: dict[str, Any]) -> str:
    """All text parts of all messages, joined by newlines."""
    out = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(out)


def _count_audio(body: dict[str, Any]) -> int:
    n = 0
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            n += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "input_audio")
    return n


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "fault_injection", "code": status}, "object": "error"}, status=status
    )


class FaultServer:
    def __init__(
        self,
        script: Script = None,
        default: str = "ok",
        hang_s: float = 30.0,
        record: bool = True,
        models: list[str] | None = None,
    ) -> None:
        self.script = script
        self.default = default
        self.hang_s = hang_s
        self.record = record
        self.models = models or ["fake-model"]
        self.requests: list[Received] = []
        self.inflight = 0
        self.max_inflight = 0
        self.count = 0
        self._tag_attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._canned = self._ok_bytes("ok", 0)
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024**2)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    def start(self) -> FaultServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            try:
                fut.result(10)
            except Exception:
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- queries for tests -------------------------------------------------------------------

    def chat_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def attempts_for(self, tag_id: str) -> int:
        return self._tag_attempts.get(tag_id, 0)

    # -- handlers ----------------------------------------------------------------------------

    def _choose(self, n: int, body: dict[str, Any]) -> str:
        m = _TAG_RE.search(request_text(body)) if body else None
        if m:
            with self._lock:
                k = self._tag_attempts.get(m.group("id"), 0)
                self._tag_attempts[m.group("id")] = k + 1
            faults = [f.strip() for f in (m.group("faults") or "").split(",") if f.strip()]
            return faults[k] if k < len(faults) else "ok"
        if callable(self.script):
            return self.script(n, body)
        if isinstance(self.script, list):
            with self._lock:
                if self.script:
                    return self.script.pop(0)
        return self.default

    async def _models(self, request: web.Request) -> web.Response:
        if self.record:
            self.requests.append(Received(-1, request.path, dict(request.headers), None, "models"))
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fault-server"} for m in self.models]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            raw = await request.read()
            with self._lock:
                n = self.count
                self.count += 1
            if not self.record:  # benchmark mode: no parsing, canned answer
                action = self.default
                if action.startswith("delay:"):
                    await asyncio.sleep(float(action.split(":", 1)[1]))
                return web.Response(body=self._canned, content_type="application/json")
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            action = self._choose(n, body or {})
            self.requests.append(Received(n, request.path, dict(request.headers), body, action))
            return await self._act(action, request, body or {}, n)
        finally:
            self.inflight -= 1

    async def _act(self, action: str, request: web.Request, body: dict[str, Any], n: int) -> web.StreamResponse:
        if action.startswith("delay:"):
            await asyncio.sleep(float(action.split(":", 1)[1]))
            action = "ok"
        if action in ("ok", "ok_reasoning_content", "ok_null_content"):
            return web.Response(body=self._ok_bytes(action, n, body), content_type="application/json")
        if action == "timeout":
            await asyncio.sleep(self.hang_s)
            return _error(504, "hung")
        if action == "401_echo_key":
            return _error(401, f"invalid API key in header: {request.headers.get('Authorization')}")
        if action.isdigit():
            status = int(action)
            resp = _error(status, f"injected HTTP {status}")
            if status == 429:
                resp.headers["Retry-After"] = "0"
            return resp
        if action == "malformed":
            return web.Response(body=b'{"id": "x", "choices": [ {"mess', content_type="application/json")
        if action == "no_choices":
            return web.json_response({"id": f"chatcmpl-{n}", "object": "chat.completion", "model": body.get("model")})
        if action == "drop":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing more to send on a closed connection
        raise ValueError(f"unknown fault action {action!r}")

    def _ok_bytes(self, action: str, n: int, body: dict[str, Any] | None = None) -> bytes:
        body = body or {}
        text = request_text(body)
        n_audio = _count_audio(body)
        content: str | None = f"echo[{n_audio} audio]: {text[-60:]}"
        reasoning = f"thinking about {n_audio} clip(s), max_tokens={body.get('max_tokens')}"
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = "stop"
        if action == "ok_reasoning_content":
            message["reasoning_content"] = reasoning
        elif action == "ok_null_content":
            message["content"] = None
            message["reasoning"] = reasoning
            finish = "length"
        else:
            message["reasoning"] = reasoning
        out = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10 + len(text), "completion_tokens": 7, "total_tokens": 17 + len(text)},
        }
        return json.dumps(out).encode()


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fixed-delay fake OpenAI server (benchmark mode)")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per request (default 0.05)")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    srv = FaultServer(default=f"delay:{args.delay}", record=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))

    async def serve() -> None:
        runner = web.AppRunner(srv.app(), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    _main(sys.argv[1:])
