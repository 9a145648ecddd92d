"""Credentials never reach a file or a log; `user:password@` URLs work as HTTP basic auth.

Fast tests: the redaction helper, the OpenAI backend, the streaming client and the judge against
real aiohttp servers on 127.0.0.1, and `dt-eval serve --dry-run`. The whole path (a real
`dt-eval run` with a basic-auth model server and judge, then `leaderboard build`) is in
test_run_outcome.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys

import pytest

from dt_eval.backends.base import GenerationRequest, SamplingConfig
from dt_eval.backends.openai_compat import OpenAIBackend
from dt_eval.backends.openai_stream import StreamError, fetch_models, stream_chat
from dt_eval.reasoning.judge import JudgeCall, JudgeClient, JudgeConfig
from dt_eval.util.redact import redact_argv, redact_text, redact_url, split_credentials

from .fault_server import FaultServer
from .paths import REPO

pytestmark = pytest.mark.timeout(60)

PASSWORD = "pw-SENTINEL-4e1d"  # never to be seen outside the Authorization header
USER = "alice"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def with_userinfo(url: str, user: str = USER, password: str = PASSWORD) -> str:
    return url.replace("http://", f"http://{user}:{password}@", 1)


def assert_clean(*texts: str) -> None:
    for t in texts:
        assert PASSWORD not in t and BASIC.split()[1] not in t, t


# --------------------------------------------------------------------------------------------
# The helper


def test_redact_url_text_and_argv():
    assert redact_url("http://u:p@h:8000/v1") == "http://***@h:8000/v1"
    assert redact_url("https://h/v1?api-version=2&api-key=s3cret") == "https://h/v1?api-version=2&api-key=***"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"  # nothing to hide: unchanged
    assert split_credentials("http://us%40er:p%3Ass@h/v1") == ("http://h/v1", ("us@er", "p:ss"))
    assert split_credentials("http://h/v1") == ("http://h/v1", None)
    text = (f"HTTP 401 from http://{USER}:{PASSWORD}@h/v1: bad header Authorization: {BASIC}, "
            "or Bearer sk-abc123; basic auth failed")
    out = redact_text(text)
    assert_clean(out)
    assert "sk-abc123" not in out and "basic auth failed" in out and "http://***@h/v1" in out
    assert redact_text("the key is hunter22 here", ["hunter22"]) == "the key is *** here"
    argv = ["dt-eval", "run", "--base-url", f"http://{USER}:{PASSWORD}@a/v1,http://b:{PASSWORD}@b/v1",
            "--judge-url=http://j:" + PASSWORD + "@j/v1", "--api-key", PASSWORD, "--auth=u:" + PASSWORD,
            "--max-tokens", "512", "--model_args", f"base_url=http://h/v1,api_key={PASSWORD},model=m"]
    red = redact_argv(argv)
    assert_clean(*red)
    assert red[3] == "http://***@a/v1,http://***@b/v1" and red[4] == "--judge-url=http://***@j/v1"
    assert red[5:10] == ["--api-key", "***", "--auth=***", "--max-tokens", "512"]  # --max-tokens is no secret
    assert red[11] == "base_url=http://h/v1,api_key=***,model=m"


# --------------------------------------------------------------------------------------------
# Clients: basic auth is sent, the credentials appear nowhere else


def _request(key: str, text: str) -> GenerationRequest:
    return GenerationRequest(key=key, messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
                             audio=[], sampling=SamplingConfig(max_tokens=8))


def test_openai_backend_sends_basic_auth_and_hides_it():
    with FaultServer() as srv:
        b = OpenAIBackend("fake-model", [with_userinfo(srv.url)], timeout_s=5, max_retries=1, backoff_s=0.01)

        async def go():
            try:
                gens = [g async for g in b.generate([_request("ok", "hi [[id=ok]]"),
                                                     _request("echo", "x [[id=echo faults=401_echo_key]]"),
                                                     _request("e500", "y [[id=e500 faults=500,500]]")])]
                return {g.key: g for g in gens}, await b.health()
            finally:
                await b.aclose()

        gens, health = asyncio.run(go())
        seen = {r.headers.get("Authorization") for r in srv.requests}
    assert seen == {BASIC}  # chat and /models: basic auth, never a bearer key beside it
    assert gens["ok"].ok and health["ok"]
    assert "401" in gens["echo"].error and "Basic ***" in gens["echo"].error  # the server echoed it
    assert "500" in gens["e500"].error
    assert_clean(*(json.dumps(g.__dict__, default=str) for g in gens.values()), json.dumps(b.describe()),
                 repr(b), json.dumps(b.stats()), json.dumps(health))
    assert b.describe()["base_urls"] == [srv.url.replace("http://", "http://***@")]


def test_stream_client_sends_basic_auth_and_hides_it():
    from aiohttp import web

    seen: list[str | None] = []

    async def chat(request):
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"error": {"message": f"denied: {request.headers.get('Authorization')}"}},
                                 status=401)

    async def models(request):
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"data": [{"id": "m"}]})

    async def go():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = with_userinfo(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1")
        try:
            names = await fetch_models(url)
            with pytest.raises(StreamError) as e:
                async for _ in stream_chat(url, "m", [{"role": "user", "content": "x"}]):
                    pass
            return names, str(e.value)
        finally:
            await runner.cleanup()

    names, error = asyncio.run(go())
    assert names == ["m"] and seen == [BASIC, BASIC]
    assert "401" in error and "***@127.0.0.1" in error
    assert_clean(error)


def test_judge_with_basic_auth_url(tmp_path):
    with FaultServer(default="401_echo_key") as srv:
        cfg = JudgeConfig(base_url=with_userinfo(srv.url), model="fake-model", max_retries=0, parse_retries=0,
                          cache_path=tmp_path / "cache.sqlite")

        async def go():
            async with JudgeClient(cfg) as client:
                return await client.judge(JudgeCall("i1", "v1", [{"role": "user", "content": "q"}], json.loads))

        out = asyncio.run(go())
        assert srv.requests[0].headers["Authorization"] == BASIC
    assert not out.ok and "401" in out.error
    assert_clean(out.error, json.dumps(out.raw), json.dumps(cfg.describe()))
    assert cfg.describe()["base_urls"] == [srv.url.replace("http://", "http://***@")]


def test_serve_dry_run_hides_api_key():
    proc = subprocess.run([sys.executable, "-m", "dt_eval.cli", "serve", "--model", "some/model", "--engine", "hf",
                           "--dry-run", "--", "--api-key", PASSWORD], capture_output=True, text=True, cwd=REPO,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--api-key '***'" in proc.stdout or "--api-key ***" in proc.stdout
    assert_clean(proc.stdout, proc.stderr)
