"""OpenAIBackend against the fault-injection server (tests/fault_server.py).

The real request path (a real vLLM server and model) is tested elsewhere; here: request shape,
retries, timeouts, load balancing, concurrency limit, and that the API key never leaks.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))

from fault_server import FaultServer  # noqa: E402

from dt_eval.backends.base import AudioInput, GenerationRequest, SamplingConfig  # noqa: E402
from dt_eval.pipeline.audio import wav_base64  # noqa: E402
from dt_eval.backends.openai_compat import OpenAIBackend  # noqa: E402

pytestmark = pytest.mark.timeout(60)

SENTINEL_KEY = "sk-SENTINEL-7f3a9c-do-not-leak"
MODEL = "fake-model"


def tone(seconds: float = 0.5, sr: int = 16000, freq: float = 440.0) -> AudioInput:
    t = np.arange(int(seconds * sr)) / sr
    return AudioInput((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def request(key: str, text: str = "What is this sound?", n_audio: int = 1, **kw) -> GenerationRequest:
    content = [{"type": "audio"} for _ in range(n_audio)] + [{"type": "text", "text": text}]
    return GenerationRequest(
        key=key,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
        audio=[tone(0.25 + 0.25 * i, freq=300 + 100 * i) for i in range(n_audio)],
        sampling=kw.pop("sampling", SamplingConfig(max_tokens=64)),
        **kw,
    )


def tagged(key: str, faults: str = "", **kw) -> GenerationRequest:
    """A request the fault server recognises: `faults` is its per-attempt action list."""
    tag = f"[[id={key} faults={faults}]]" if faults else f"[[id={key}]]"
    return request(key, text=f"Q {tag}", **kw)


def backend(urls, **kw) -> OpenAIBackend:
    kw.setdefault("concurrency", 8)
    kw.setdefault("timeout_s", 5)
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("api_key", SENTINEL_KEY)
    return OpenAIBackend(MODEL, urls if isinstance(urls, list) else [urls], **kw)


def run_all(b: OpenAIBackend, reqs) -> dict:
    async def go():
        try:
            return [g async for g in b.generate(reqs)]
        finally:
            await b.aclose()

    gens = asyncio.run(go())
    assert len(gens) == len(reqs)
    return {g.key: g for g in gens}


def dead_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


# ------------------------------------------------------------------------------------------
# Request shape and response parsing


def test_request_body_audio_sampling_and_headers(server):
    sampling = SamplingConfig(
        max_tokens=123, temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.05, seed=7,
        stop=["</answer>"], extra={"min_p": 0.05},
    )
    req = request("k1", n_audio=2, sampling=sampling, chat_template_kwargs={"enable_thinking": True})
    original = json.dumps(req.messages)
    gens = run_all(backend(server.url), [req])
    g = gens["k1"]
    assert g.ok, g.error
    assert json.dumps(req.messages) == original  # placeholders untouched in the request
    (rec,) = server.chat_requests()
    body = rec.body
    assert rec.headers["Authorization"] == f"Bearer {SENTINEL_KEY}"
    assert body["model"] == MODEL
    assert body["max_tokens"] == 123 and body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["top_k"] == 20 and body["repetition_penalty"] == 1.05 and body["seed"] == 7
    assert body["stop"] == ["</answer>"] and body["min_p"] == 0.05
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert not any(k.startswith("guided_") for k in body) and "stream" not in body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["input_audio", "input_audio", "text"]
    for i, p in enumerate(parts[:2]):
        assert p["input_audio"]["format"] == "wav"
        data, sr = sf.read(io.BytesIO(base64.b64decode(p["input_audio"]["data"], validate=True)), dtype="float32")
        assert sr == 16000
        assert data.shape == req.audio[i].array.shape
        np.testing.assert_allclose(data, req.audio[i].array, atol=1 / 16000)
    # response parsing
    assert g.text == "echo[2 audio]: Be brief.\nWhat is this sound?"
    assert g.reasoning == "thinking about 2 clip(s), max_tokens=123"
    assert g.finish_reason == "stop"
    assert g.prompt_tokens == 10 + len("Be brief.\nWhat is this sound?") and g.completion_tokens == 7
    assert g.latency_s is not None and 0 < g.latency_s < 5
    assert g.backend_info == {"base_url": server.url, "attempts": 1}


def test_optional_fields_omitted(server):
    run_all(backend(server.url), [request("k", sampling=SamplingConfig())])
    body = server.chat_requests()[0].body
    for absent in ("top_k", "repetition_penalty", "seed", "stop", "chat_template_kwargs"):
        assert absent not in body
    assert body["max_tokens"] == 4096 and body["temperature"] == 0.0


def test_text_only_request(server):
    req = GenerationRequest("t", [{"role": "user", "content": "plain text"}], [], SamplingConfig())
    g = run_all(backend(server.url), [req])["t"]
    assert g.ok and g.text == "echo[0 audio]: plain text"


def _soundfile_b64(audio) -> str:  # the oracle: libsndfile's own PCM_16 writer
    import base64
    import io

    buf = io.BytesIO()
    sf.write(buf, audio.array, audio.sampling_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_wav_encoding_matches_soundfile():
    rng = np.random.default_rng(0)
    specials = [1.0, -1.0, 0.99999, -0.99999, 0.0, -0.0, 2.0**-16, -(2.0**-17), 3 * 2.0**-17, np.inf, -np.inf, np.nan]
    x = np.concatenate(
        [rng.uniform(-1.2, 1.2, 20011), rng.normal(0, 1e-6, 2000), rng.normal(0, 1e-10, 500), specials]
    ).astype(np.float32)
    rng.shuffle(x)
    for audio in (AudioInput(x, 16000), tone(1.0, sr=24000), tone(0.1, sr=8000, freq=3000.0)):
        assert wav_base64(audio).decode() == _soundfile_b64(audio)


def test_placeholder_mismatch_is_an_error_without_a_request(server):
    req = request("bad", n_audio=1)
    req.audio.append(tone())
    g = run_all(backend(server.url), [req])["bad"]
    assert not g.ok and "placeholder" in g.error
    assert server.chat_requests() == []


def test_guided_fields_refused(server):
    g = run_all(backend(server.url), [request("g", sampling=SamplingConfig(extra={"guided_choice": ["A", "B"]}))])["g"]
    assert not g.ok and "structured_outputs" in g.error
    assert server.chat_requests() == []


@pytest.mark.parametrize(
    ("action", "reasoning"),
    [("ok", "thinking about 1 clip(s), max_tokens=64"), ("ok_reasoning_content", "thinking about 1 clip(s), max_tokens=64")],
)
def test_reasoning_and_reasoning_content(action, reasoning):
    with FaultServer(default=action) as srv:
        g = run_all(backend(srv.url), [request("r")])["r"]
    assert g.ok and g.reasoning == reasoning and g.text.startswith("echo[1 audio]")


def test_null_content_becomes_empty_text():
    with FaultServer(default="ok_null_content") as srv:
        g = run_all(backend(srv.url), [request("n")])["n"]
    assert g.ok and g.text == "" and g.finish_reason == "length" and g.reasoning


def test_yields_in_completion_order(server):
    reqs = [tagged("slow", "delay:0.4"), tagged("fast")]
    async def go():
        b = backend(server.url)
        try:
            return [g.key async for g in b.generate(reqs)]
        finally:
            await b.aclose()
    assert asyncio.run(go()) == ["fast", "slow"]


# ------------------------------------------------------------------------------------------
# Retries and errors


@pytest.mark.parametrize("fault", ["500", "503", "429", "408", "drop", "malformed", "no_choices"])
def test_retry_then_success(server, fault):
    g = run_all(backend(server.url), [tagged("x", fault)])["x"]
    assert g.ok, g.error
    assert g.backend_info["attempts"] == 2
    assert server.attempts_for("x") == 2


def test_several_faults_then_success(server):
    g = run_all(backend(server.url, max_retries=4), [tagged("x", "drop,malformed,500,429")])["x"]
    assert g.ok and g.backend_info["attempts"] == 5


def test_exhausted_retries_give_error_others_succeed(server):
    reqs = [tagged("doomed", "500,500,500,500,500")] + [tagged(f"ok{i}", "500" if i % 2 else "") for i in range(6)]
    gens = run_all(backend(server.url, max_retries=2), reqs)
    doomed = gens.pop("doomed")
    assert not doomed.ok
    assert "3 attempts" in doomed.error and "HTTP 500" in doomed.error and "injected HTTP 500" in doomed.error
    assert doomed.backend_info["attempts"] == 3 and server.attempts_for("doomed") == 3
    assert all(g.ok for g in gens.values())


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "422"])
def test_client_errors_not_retried(server, status):
    g = run_all(backend(server.url), [tagged("c", f"{status},ok")])["c"]
    assert not g.ok
    assert g.error.startswith(f"HTTP {status}") and f"injected HTTP {status}" in g.error
    assert server.attempts_for("c") == 1 and g.backend_info["attempts"] == 1


def test_timeout_retried_then_success(server):
    t0 = time.monotonic()
    g = run_all(backend(server.url, timeout_s=0.5), [tagged("t", "timeout"), tagged("quick")])
    assert g["t"].ok and g["t"].backend_info["attempts"] == 2
    assert "timeout" in g["t"].backend_info["retried_errors"][0]
    assert g["quick"].ok
    assert time.monotonic() - t0 < 5


def test_timeout_exhausted(server):
    g = run_all(backend(server.url, timeout_s=0.3, max_retries=1), [tagged("t", "timeout,timeout")])["t"]
    assert not g.ok and "timeout after 0.3 s" in g.error and g.backend_info["attempts"] == 2


def test_all_servers_dead_gives_errors_not_exceptions():
    g = run_all(backend([dead_url()], max_retries=1), [request("a"), request("b")])
    assert all(not x.ok and "cannot connect" in x.error for x in g.values())


# ------------------------------------------------------------------------------------------
# Load balancing and concurrency


def test_two_servers_share_load():
    with FaultServer(default="delay:0.03") as a, FaultServer(default="delay:0.03") as b:
        gens = run_all(backend([a.url, b.url], concurrency=8), [request(f"k{i}") for i in range(40)])
        na, nb = len(a.chat_requests()), len(b.chat_requests())
    assert all(g.ok for g in gens.values())
    assert na + nb == 40 and 15 <= na <= 25, (na, nb)
    by_url = {u: sum(g.backend_info["base_url"] == u for g in gens.values()) for u in (a.url, b.url)}
    assert by_url == {a.url: na, b.url: nb}


def test_slow_server_gets_fewer_requests():
    with FaultServer(default="delay:0.2") as slow, FaultServer(default="delay:0.01") as fast:
        gens = run_all(backend([slow.url, fast.url], concurrency=4), [request(f"k{i}") for i in range(40)])
        ns, nf = len(slow.chat_requests()), len(fast.chat_requests())
    assert all(g.ok for g in gens.values())
    assert nf > 3 * ns, (ns, nf)


def test_dead_server_requests_retried_on_live_one():
    dead = dead_url()
    with FaultServer() as live:
        gens = run_all(backend([dead, live.url], concurrency=4, max_retries=2), [request(f"k{i}") for i in range(20)])
        assert len(live.chat_requests()) == 20
    assert all(g.ok for g in gens.values())
    assert all(g.backend_info["base_url"] == live.url for g in gens.values())
    retried = [g for g in gens.values() if g.backend_info["attempts"] > 1]
    assert retried and all(g.backend_info["attempts"] == 2 for g in retried)
    assert all("cannot connect" in g.backend_info["retried_errors"][0] for g in retried)
    # the dead server cools down: most requests never tried it
    assert len(retried) < 10


def test_retry_prefers_other_server():
    with FaultServer(default="500") as bad, FaultServer() as good:
        gens = run_all(backend([bad.url, good.url], concurrency=2, max_retries=3), [request(f"k{i}") for i in range(10)])
        n_bad = len(bad.chat_requests())
    assert all(g.ok and g.backend_info["base_url"] == good.url for g in gens.values())
    assert all(g.backend_info["attempts"] <= 2 for g in gens.values())
    assert n_bad == sum(g.backend_info["attempts"] - 1 for g in gens.values())


def test_concurrency_limit_respected():
    with FaultServer(default="delay:0.05") as srv:
        gens = run_all(backend(srv.url, concurrency=5), [request(f"k{i}") for i in range(30)])
        assert srv.max_inflight == 5
    assert all(g.ok for g in gens.values())


def test_concurrency_limit_is_global_across_servers_and_generate_calls():
    with FaultServer(default="delay:0.05") as a, FaultServer(default="delay:0.05") as b:
        bk = backend([a.url, b.url], concurrency=4)
        peak = 0

        async def watch():
            nonlocal peak
            while True:
                peak = max(peak, a.inflight + b.inflight)
                await asyncio.sleep(0.002)

        async def go():
            w = asyncio.create_task(watch())
            try:
                async def consume(prefix):
                    return [g async for g in bk.generate([request(f"{prefix}{i}") for i in range(12)])]

                r1, r2 = await asyncio.gather(consume("x"), consume("y"))
                return r1 + r2
            finally:
                w.cancel()
                await bk.aclose()

        gens = asyncio.run(go())
        assert a.max_inflight <= 4 and b.max_inflight <= 4
    assert len(gens) == 24 and all(g.ok for g in gens)
    assert peak <= 4


def test_early_close_cancels_pending(server):
    async def go():
        b = backend(server.url, concurrency=4)
        reqs = [tagged("first")] + [tagged(f"s{i}", "delay:5") for i in range(6)]
        agen = b.generate(reqs)
        first = await agen.__anext__()
        t0 = time.monotonic()
        await agen.aclose()
        await b.aclose()
        return first, time.monotonic() - t0

    first, closing = asyncio.run(go())
    assert first.key == "first" and closing < 2


def test_backend_reusable_across_event_loops(server):
    b = backend(server.url)

    async def once(k):
        return [g async for g in b.generate([request(k)])]

    assert asyncio.run(once("a"))[0].ok
    assert asyncio.run(once("b"))[0].ok  # a fresh loop gets a fresh session
    asyncio.run(b.aclose())


# ------------------------------------------------------------------------------------------
# Health and secrets


def test_health(server):
    dead = dead_url()

    async def go():
        b = backend([server.url, dead])
        try:
            return await b.health()
        finally:
            await b.aclose()

    h = asyncio.run(go())
    assert h["ok"] is False and h["model"] == MODEL
    live, down = h["servers"]
    assert live["ok"] and live["models"] == ["fake-model"] and live["serves_model"]
    assert not down["ok"] and down["error"]

    async def other_model():
        b = OpenAIBackend("other", [server.url], api_key=SENTINEL_KEY)
        try:
            return await b.health()
        finally:
            await b.aclose()

    h2 = asyncio.run(other_model())
    assert not h2["ok"] and "not served" in h2["servers"][0]["error"]


def test_api_key_never_leaks(server, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    dead = dead_url()
    b = backend([server.url], max_retries=1)
    reqs = [tagged("echo", "401_echo_key"), tagged("e500", "500,500"), tagged("ok")]
    gens = run_all(b, reqs)
    assert not gens["echo"].ok and "401" in gens["echo"].error
    assert "Bearer ***" in gens["echo"].error  # the server echoed the header; we redacted it
    gens.update(run_all(backend([dead], max_retries=1), [request("dead")]))
    texts = [repr(g) for g in gens.values()]
    texts += [json.dumps(b.describe()), repr(b), str(b.stats()), caplog.text]
    assert server.chat_requests()[0].headers["Authorization"] == f"Bearer {SENTINEL_KEY}"  # it was sent
    for t in texts:
        assert SENTINEL_KEY not in t
        assert "SENTINEL" not in t
    assert b.describe()["api_key_source"] == "argument"


def test_api_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    monkeypatch.setenv("DT_EVAL_API_KEY", "sk-from-dt-eval-env")
    b = OpenAIBackend(MODEL, [server.url], backoff_s=0.01)
    assert b.describe()["api_key_source"] == "env:DT_EVAL_API_KEY"
    assert "sk-from" not in json.dumps(b.describe()) + repr(b)
    run_all(b, [request("a")])
    monkeypatch.delenv("DT_EVAL_API_KEY")
    run_all(OpenAIBackend(MODEL, [server.url]), [request("b")])
    monkeypatch.delenv("OPENAI_API_KEY")
    b3 = OpenAIBackend(MODEL, [server.url])
    run_all(b3, [request("c")])
    assert b3.describe()["api_key_source"] == "none"
    auth = [r.headers["Authorization"] for r in server.chat_requests()]
    assert auth == ["Bearer sk-from-dt-eval-env", "Bearer sk-from-openai-env", "Bearer EMPTY"]


def test_describe_hides_url_credentials():
    b = OpenAIBackend(MODEL, ["http://user:pw@host:8000/v1/"], api_key="k")
    d = b.describe()
    assert d["base_urls"] == ["http://***@host:8000/v1"] and d["name"] == "openai" and d["model"] == MODEL
