"""`dt-eval demo` (dt_eval/apps/demo/app.py) and its streaming client (dt_eval/backends/openai_stream.py).

Fast tests: the SSE client against an in-process fake stream (server-split reasoning, and raw
``<think>`` tags split client-side); that a stopped stream (Stop) hangs up on the server; option
rendering and what the user's turn shows; auth parsing; ``--preset`` and ``--share`` through the
CLI (Gradio's launch recorded, no share tunnel: it needs the internet); example generation; and
that ``dt-eval --help`` imports neither gradio nor torch.

Slow tests (``-m slow``): the demo launched in-process against a REAL backend -- a
``python -m dt_eval.serving.hfserver`` subprocess serving the deterministic tiny Qwen2-Audio -- driven
with gradio_client: reasoning streams into a pending "Thinking" message before the answer, the
final answer and reasoning equal what the server returns directly for the same clip, bad inputs
get chat messages, ``--auth`` is enforced, only uploads and examples are served, and
``dt-eval demo --model`` starts and stops its own server. Stop (a client hang-up, a cancelled
gradio_client job) makes the server stop generating: its ``/stats`` count the hang-up and its log
says after how many tokens. Browser tests (``-m browser``): headless Debian chromium via
Playwright -- the layout, the user's turn, the examples, and the Stop button mid-reasoning;
screenshots kept in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dt_eval.backends.openai_stream import ServerUnreachable, StreamError, stream_chat

from .servers import hfserver

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
NAME = "tiny-qwen2audio"  # served model name: also selects the tiny preset (30 s audio window)
TOKEN_DELAY_S = 0.05  # hfserver testing aid: makes the token-by-token stream observable
SLOW_TOKEN_DELAY_S = 0.5  # for the Stop tests: the answer takes ~8 s
QUESTION = "Does the pitch of the tone go up or down?"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT_H = 900
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Fast: the streaming client against a scripted SSE stream


def _fake_sse(chunks: list[dict | str], *, status: int = 200):
    """Run an aiohttp server that streams `chunks` (dicts as chunk deltas, str as raw lines)."""
    from aiohttp import web

    seen: list[dict] = []

    async def chat(request):
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        if status != 200:
            return web.json_response({"error": {"message": f"nope, key={request.headers.get('Authorization')}"}},
                                     status=status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            if isinstance(c, str):
                await resp.write(c.encode())
            else:
                ev = {"choices": [{"index": 0, "delta": c, "finish_reason": c.pop("_finish", None)}]}
                await resp.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
            await asyncio.sleep(0.001)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app, seen


async def _collect(chunks, status=200, **kw):
    from aiohttp import web

    app, seen = _fake_sse(chunks, status=status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        ups = [u async for u in stream_chat(f"http://127.0.0.1:{port}/v1", "m", [{"role": "user", "content": "x"}], **kw)]
    finally:
        await runner.cleanup()
    return ups, seen


def test_stream_server_split_reasoning_then_content():
    chunks = [{"role": "assistant", "content": ""},
              {"reasoning": "\nThe pitch ", "reasoning_content": "\nThe pitch "},  # both fields: count once
              {"reasoning_content": "goes up.\n"},  # older vLLM field only
              {"content": "\n\n(A) "}, {"content": "rising"}, {"_finish": "stop"}, "data: [DONE]\n\n"]
    ups, seen = asyncio.run(_collect(chunks, max_tokens=7))
    assert seen[0]["body"]["stream"] is True and seen[0]["body"]["max_tokens"] == 7
    assert [u.reasoning for u in ups[:2]] == ["\nThe pitch ", "\nThe pitch goes up.\n"]
    assert not ups[1].reasoning_done and ups[2].reasoning_done
    last = ups[-1]
    assert last.finished and last.finish_reason == "stop" and last.split_by == "server"
    assert (last.reasoning, last.content) == ("\nThe pitch goes up.\n", "\n\n(A) rising")


def test_stream_splits_think_tags_when_server_does_not():
    pieces = ["<th", "ink>\nThe pitch ", "goes up.\n</", "think>", "\n\n(A) rising"]
    chunks = [{"content": p} for p in pieces] + [{"_finish": "stop"}, "data: [DONE]\n\n"]
    ups, _ = asyncio.run(_collect(chunks))
    for u in ups:  # a half-received tag is never shown as text
        assert "<" not in u.reasoning + u.content, u
    pending = [u for u in ups if u.reasoning and not u.reasoning_done]
    assert pending and all(not u.content.strip() for u in pending)
    last = ups[-1]
    assert last.split_by == "client" and last.reasoning == "The pitch goes up." and last.content.strip() == "(A) rising"


def test_stream_errors_are_clean_and_keyless():
    with pytest.raises(StreamError) as e:
        asyncio.run(_collect([], status=401, api_key="sk-SECRET-123"))
    assert "401" in str(e.value) and "SECRET" not in str(e.value)
    with pytest.raises(StreamError, match="ended early"):
        asyncio.run(_collect([{"reasoning": "cut"}]))  # no finish, no [DONE]
    port = _free_port()  # nothing listens there
    with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}"):
        async def go():
            async for _ in stream_chat(f"http://user:pw@127.0.0.1:{port}/v1", "m", []):
                pass
        asyncio.run(go())


def test_demo_coalesces_a_fast_stream(tmp_path):
    """120 reasoning chunks 2 ms apart: the screen gets a handful of updates (at most one per
    update interval, plus the urgent ones), the first text at once, and the full final text."""
    pytest.importorskip("gradio")
    from aiohttp import web

    from dt_eval.apps.demo.app import make_respond, model_settings
    from dt_eval.testing.synth_audio import sweep, write_wav

    clip = write_wav(tmp_path / "rising.wav", sweep("rising", 1.0))
    words = [f"w{i} " for i in range(120)]
    chunks = ([{"reasoning": w} for w in words] + [{"content": "\n\n(A) "}, {"content": "rising"}, {"_finish": "stop"},
              "data: [DONE]\n\n"])

    async def go():
        app, _ = _fake_sse(chunks)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            respond = make_respond(f"http://127.0.0.1:{port}/v1", "m", model_settings("m"), update_interval_s=0.05)
            return [out async for out in respond({"text": "q", "files": [str(clip)]}, [], "")]
        finally:
            await runner.cleanup()

    t0 = time.perf_counter()
    outs = asyncio.run(go())
    elapsed = time.perf_counter() - t0
    assert 3 <= len(outs) <= 6 + elapsed / 0.05, len(outs)
    first = outs[0][0]
    assert first.metadata["status"] == "pending" and first.content.startswith("w0")
    final = outs[-1]
    assert final[0].content == "".join(words).strip() and final[0].metadata["status"] == "done"
    assert final[1].content == "(A) rising"


def test_options_auth_and_settings():
    from dt_eval.apps.demo.app import DemoError, InputProblem, model_settings, parse_auth, parse_options, render_question

    assert parse_options(" rising \n\nfalling\n") == ["rising", "falling"]
    assert render_question("Up or down?", ["rising", "falling"]) == "Up or down?\nChoices:\n(A) rising\n(B) falling"
    assert render_question("  ", []) == "Describe the audio."
    with pytest.raises(InputProblem):
        parse_options("only one")
    with pytest.raises(InputProblem):
        parse_options("\n".join(map(str, range(11))))
    assert parse_auth("alice:pa:ss") == ("alice", "pa:ss")
    for bad in ("alice", ":pw-x9", "alice:"):
        with pytest.raises(DemoError) as e:
            parse_auth(bad)
        assert "pw-x9" not in str(e.value)  # never echo a password
    s = model_settings("/models/tiny-qwen2audio-abc/deterministic")
    assert s.family == "tiny-qwen2audio" and s.window_s == 30 and s.think_instruction
    assert model_settings("some-unknown-model").window_s is None
    assert model_settings("some-unknown-model", window_s=12.5).window_s == 12.5


def test_examples_are_generated_once(tmp_path):
    import soundfile as sf

    from dt_eval.apps.demo.app import ensure_examples

    ex = ensure_examples(tmp_path)
    names = {e.name for e in ex}
    assert {"rising-sweep", "falling-sweep", "steady-tone"} <= names
    assert ("speech" in names) == bool(__import__("shutil").which("espeak-ng"))
    for e in ex:
        assert e.path.parent == tmp_path and e.question
        info = sf.info(str(e.path))
        assert info.samplerate == 16000 and 0.5 < info.duration < 10
    mtimes = [e.path.stat().st_mtime_ns for e in ex]
    assert [e.path.stat().st_mtime_ns for e in ensure_examples(tmp_path)] == mtimes  # cached


def test_cli_help_imports_neither_gradio_nor_torch():
    code = ("import sys\nfrom dt_eval.cli import main\n"
            "assert main(['demo', '--help']) == 0\n"
            "bad = [m for m in ('gradio', 'torch', 'transformers') if m in sys.modules]\nassert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all(f in out.stdout for f in ("--base-url", "--auth", "--preset", "--share")), out.stdout


# --------------------------------------------------------------------------------------------
# Fast: Stop hangs up on the model server; --preset, --share; what the user's turn shows


@contextlib.asynccontextmanager
async def _endless_sse(interval_s: float = 0.02, limit: int = 3000):
    """An SSE server in this event loop that streams reasoning words until the client hangs up
    (or `limit` words): `srv.hung_up` is set when a write finds the connection gone."""
    from aiohttp import web

    srv = types.SimpleNamespace(sent=0, hung_up=asyncio.Event(), url="")

    async def chat(request):
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while srv.sent < limit:
                ev = {"choices": [{"index": 0, "delta": {"reasoning": f"w{srv.sent} "}, "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
                srv.sent += 1
                await asyncio.sleep(interval_s)
        except ConnectionResetError:
            srv.hung_up.set()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("shared_session", [False, True])
@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_stream_chat_hangs_up_when_its_consumer_stops(how, shared_session):
    """Closing the stream (or cancelling the task reading it) closes the connection at once (not
    pooled, not read to the end), so the model server sees the client go away."""
    import aiohttp

    async def go():
        async with _endless_sse() as srv:
            session = aiohttp.ClientSession() if shared_session else None
            try:
                stream = stream_chat(srv.url, "m", [{"role": "user", "content": "x"}], session=session)
                if how == "aclose":
                    async for u in stream:
                        if u.chunks >= 3:
                            break
                    await stream.aclose()
                else:
                    three = asyncio.Event()

                    async def read():
                        async for u in stream:
                            if u.chunks >= 3:
                                three.set()

                    task = asyncio.create_task(read())
                    await asyncio.wait_for(three.wait(), 30)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                await asyncio.wait_for(srv.hung_up.wait(), 10)
                return srv.sent
            finally:
                if session is not None:
                    await session.close()

    assert asyncio.run(go()) < 3000


def test_demo_respond_closed_by_stop_drops_the_request(tmp_path):
    """Gradio's Stop closes the demo's answer generator mid-reasoning: the request is cancelled and
    the model server sees the hang-up (it would otherwise go on generating)."""
    pytest.importorskip("gradio")
    from dt_eval.apps.demo.app import make_respond, model_settings
    from dt_eval.testing.synth_audio import sweep, write_wav

    clip = write_wav(tmp_path / "rising.wav", sweep("rising", 1.0))

    async def go():
        async with _endless_sse() as srv:
            respond = make_respond(srv.url, "m", model_settings("m"), update_interval_s=0.0)
            answer = respond({"text": "q", "files": [str(clip)]}, [], "")
            async for out in answer:
                if out and out[0].metadata.get("status") == "pending" and len(out[0].content.split()) >= 3:
                    break
            assert not srv.hung_up.is_set()
            await answer.aclose()  # what Gradio does when Stop cancels the event
            await asyncio.wait_for(srv.hung_up.wait(), 10)
            return srv.sent

    assert asyncio.run(go()) < 3000


def test_user_turn_shows_the_clip_name_and_the_options_as_a_list(tmp_path):
    from dt_eval.apps.demo.app import STOPPED_NOTE, stopped, user_turn

    clip = str(tmp_path / "my_rising clip.wav")
    (msg,) = user_turn({"text": " Up or down? ", "files": [clip]}, "rising\n\n falling \nsteady\n")
    assert msg["role"] == "user" and msg["content"][0] == {"path": clip}  # the chat's audio player
    assert msg["content"][1] == "Clip: `my_rising clip.wav`\n\nUp or down?\n\n(A) rising\n(B) falling\n(C) steady"
    (msg,) = user_turn({"text": "", "files": []}, "")  # follow-up without a clip: no player, no name
    assert msg["content"] == ["Describe the audio."]
    pending = {"role": "assistant", "content": "hmm", "metadata": {"title": "Thinking", "status": "pending"}}
    after = stopped([msg, pending])
    assert after[1]["metadata"]["status"] == "done" and after[2]["content"] == STOPPED_NOTE
    assert pending["metadata"]["status"] == "pending"  # the input is not changed


def _run_cli(argv: list[str], monkeypatch) -> int:
    """`dt-eval ARGV` in this process; its exit code."""
    from dt_eval.cli import main

    return main(argv)


@pytest.fixture
def launches(monkeypatch):
    """Record gr.Blocks.launch calls instead of serving (and instead of opening a share tunnel,
    which needs the internet: not tested here). run_demo's SIGTERM handler is undone after."""
    gr = pytest.importorskip("gradio")
    calls: list[dict] = []

    def fake_launch(self, **kw):
        calls.append(kw)
        return None, "http://127.0.0.1:0/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    old = signal.getsignal(signal.SIGTERM)
    yield calls
    signal.signal(signal.SIGTERM, old)


def test_cli_demo_preset_and_share_reach_the_app(launches, monkeypatch, capsys):
    dead = f"http://127.0.0.1:{_free_port()}/v1"  # not contacted: --served-model-name is given
    base = ["demo", "--base-url", dead, "--served-model-name", "my-finetune", "--no-examples"]

    # A served name that matches no family: the demo says how to name one.
    assert _run_cli(base, monkeypatch) == 0
    err = capsys.readouterr().err
    assert "unknown family" in err and "pass --preset" in err and "tiny-qwen2audio" in err
    assert launches[-1]["share"] is False and launches[-1]["server_name"] == "127.0.0.1"

    # --preset picks the family: its audio window (30 s) and its thinking instruction.
    assert _run_cli(base + ["--preset", "tiny-qwen2audio"], monkeypatch) == 0
    err = capsys.readouterr().err
    assert "my-finetune (tiny-qwen2audio); audio window: 30 s" in err and "warning" not in err

    # --share reaches Gradio's launch (bind address unchanged) and warns without --auth.
    assert _run_cli(base + ["--share"], monkeypatch) == 0
    err = capsys.readouterr().err
    assert launches[-1]["share"] is True and launches[-1]["server_name"] == "127.0.0.1"
    assert "warning: --share without --auth" in err
    monkeypatch.setenv("DT_EVAL_DEMO_AUTH", "alice:pw-x9")
    assert _run_cli(base + ["--share"], monkeypatch) == 0
    err = capsys.readouterr().err
    assert launches[-1]["share"] is True and launches[-1]["auth"] == ("alice", "pw-x9")
    assert "warning" not in err and "pw-x9" not in err

    # An unknown preset: a clear error listing the presets, before anything is started.
    n = len(launches)
    assert _run_cli(base + ["--preset", "no-such-family"], monkeypatch) != 0
    err = capsys.readouterr().err
    assert "no-such-family" in err and "known presets:" in err and "tiny-qwen2audio" in err
    assert len(launches) == n


def test_demo_preset_sets_the_prompt_for_any_served_name():
    from dt_eval.apps.demo.app import DemoError, model_settings
    from dt_eval.tasks.presets import load_preset

    tiny = load_preset("tiny-qwen2audio")
    s = model_settings("my-finetune", preset="tiny-qwen2audio")
    assert (s.family, s.window_s, s.think_instruction) == ("tiny-qwen2audio", 30, tiny.thinking.prompt_instruction)
    assert model_settings("my-finetune").family is None  # detection alone finds nothing
    with pytest.raises(DemoError, match="known presets: .*tiny-qwen2audio"):
        model_settings("my-finetune", preset="nope")


# --------------------------------------------------------------------------------------------
# Slow: a real backend (hfserver + deterministic tiny model) behind the demo


def _wav_bytes(audio: np.ndarray, sr: int = 16000) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    from dt_eval.testing.synth_audio import sweep

    d = tmp_path_factory.mktemp("clips")
    out = {
        "rising": d / "rising.wav", "falling": d / "falling.wav", "long": d / "long40s.wav",
        "text": d / "notes.wav", "empty": d / "empty.wav", "corrupt": d / "corrupt.wav", "txt": d / "notes.txt",
    }
    out["txt"].write_text("not audio at all\n")
    out["rising"].write_bytes(_wav_bytes(sweep("rising", 2.0)))
    out["falling"].write_bytes(_wav_bytes(sweep("falling", 2.0)))
    out["long"].write_bytes(_wav_bytes(sweep("rising", 40.0)))
    out["text"].write_text("this is a text file, renamed to .wav\n" * 20)
    out["empty"].write_bytes(b"")
    out["corrupt"].write_bytes(out["rising"].read_bytes()[:30])  # a WAV header cut short
    return out


@pytest.fixture(scope="module")
def model_dir(det_model_dir) -> Path:  # tests/conftest.py: deterministic tiny Qwen2-Audio
    return Path(det_model_dir)


@pytest.fixture(scope="module")
def backend(model_dir, tmp_path_factory):
    """hfserver for the deterministic tiny model, streaming one token per TOKEN_DELAY_S."""
    with hfserver(model_dir, NAME, tmp_path_factory.mktemp("hfserver"), "--token-delay", str(TOKEN_DELAY_S),
                  ready_s=300) as url:
        yield url


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-examples")


@pytest.fixture(scope="module")
def demo_url(backend, examples_dir):
    from dt_eval.apps.demo.app import build_demo, launch

    demo = build_demo(backend, NAME, window_s=None, examples=examples_dir)  # window from the preset
    _, url, _ = launch(demo, port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def _ask(url: str, clip: Path | None, text: str = QUESTION, options: str = "", auth=None) -> tuple[list, list]:
    """Submit one turn in a fresh session; (every streamed update, final messages)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, auth=auth)
    files = [handle_file(str(clip))] if clip else []
    job = client.submit(message={"text": text, "files": files}, options=options, api_name="/respond")
    updates = [list(u) for u in job]
    return updates, job.result()


def _demo_messages(clip: Path, options: list[str] = ()) -> list[dict]:
    """The request the demo sends for `clip`: the question (options as "(A) ...", then the tiny
    preset's prompted thinking instruction); the clip as the original file bytes."""
    from dt_eval.tasks.presets import load_preset

    text = QUESTION
    if options:
        text += "\nChoices:\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(options))
    text += "\n" + load_preset("tiny-qwen2audio").thinking.prompt_instruction.strip()
    return [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip.read_bytes()).decode(), "format": "wav"}},
        {"type": "text", "text": text}]}]


def _direct_reply(base_url: str, clip: Path, options: list[str] = ()) -> dict:
    body = {"model": NAME, "max_tokens": 64, "temperature": 0, "messages": _demo_messages(clip, options)}
    req = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _direct(base_url: str, clip: Path, options: list[str] = ()) -> dict:
    """The backend's own (non-streamed) answer for `clip`: the reference for the demo."""
    return _direct_reply(base_url, clip, options)["choices"][0]["message"]


def _thinking(msgs: list) -> dict | None:
    return next((m for m in msgs if (m.get("metadata") or {}).get("title") == "Thinking"), None)


def _answers(msgs: list) -> list[str]:
    return [m["content"] for m in msgs if not (m.get("metadata") or {}).get("title")]


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["rising", "falling"])
def test_demo_streams_reasoning_then_the_backends_answer(demo_url, backend, clips, direction):
    from dt_eval.testing.tiny_qwen2audio import TARGET_PARTS

    updates, final = _ask(demo_url, clips[direction], options="rising\nfalling")
    ref = _direct(backend, clips[direction], ["rising", "falling"])
    assert (ref["reasoning"].strip(), ref["content"].strip()) == TARGET_PARTS[direction]

    # Streamed: several updates with the thinking block pending and no answer yet, then the answer.
    pending = [u for u in updates if (t := _thinking(u)) and t["metadata"]["status"] == "pending"]
    assert len(pending) >= 3, [(_thinking(u), _answers(u)) for u in updates]
    assert all(not _answers(u) for u in pending)
    first_answer = next(i for i, u in enumerate(updates) if _answers(u))
    last_pending = max(i for i, u in enumerate(updates) if u in pending)
    assert last_pending < first_answer
    texts = [_thinking(u)["content"] for u in pending]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])) and len(set(texts)) >= 3  # grows

    # Final: thinking done (with a duration) holding the backend's reasoning, then its answer.
    think = _thinking(final)
    assert think["metadata"]["status"] == "done" and think["metadata"]["duration"] > 0
    assert think["content"] == ref["reasoning"].strip()
    assert _answers(final) == [ref["content"].strip()]
    assert final.index(think) < len(final) - 1


@pytest.mark.slow
def test_demo_bad_inputs_get_chat_messages(demo_url, clips):
    cases = {
        None: "attach an audio clip",
        "text": "Could not read notes.wav as audio",
        "txt": "Could not read notes.txt as audio (is it an audio file?)",  # Gradio lets it through to us
        "empty": "empty.wav is empty",
        "corrupt": "Could not read corrupt.wav as audio",
    }
    for key, expected in cases.items():
        updates, final = _ask(demo_url, clips[key] if key else None)
        assert len(final) == 1 and final[0]["content"].startswith("⚠️"), (key, final)
        assert expected in final[0]["content"], (key, final)
        assert "Traceback" not in final[0]["content"] and "/tmp" not in final[0]["content"]

    _, final = _ask(demo_url, clips["long"])  # 40 s > the tiny preset's 30 s window
    assert "40.0 s" in final[0]["content"] and "only the first 30 s were used" in final[0]["content"]
    # Then the model's turn (the tiny model was trained on 1-4 s clips: its words do not matter).
    assert _thinking(final)["metadata"]["status"] == "done", final
    assert not any("server" in a or "Could not" in a for a in _answers(final)[1:]), final

    _, final = _ask(demo_url, clips["rising"], options="just one option")
    assert "at least two options" in final[-1]["content"]


@pytest.mark.slow
def test_demo_reports_a_server_that_is_down(clips, examples_dir):
    from dt_eval.apps.demo.app import build_demo, launch

    dead = f"http://127.0.0.1:{_free_port()}/v1"
    demo = build_demo(dead, NAME, window_s=None, examples=False)
    _, url, _ = launch(demo, port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        t0 = time.monotonic()
        _, final = _ask(url, clips["rising"])
        assert time.monotonic() - t0 < 30
    finally:
        demo.close()
    assert len(final) == 1 and final[0]["content"].startswith("⚠️")
    assert "Cannot connect to the model server" in final[0]["content"] and dead in final[0]["content"]


@pytest.mark.slow
def test_demo_follow_up_question_reuses_the_clip(demo_url, clips):
    from gradio_client import Client, handle_file

    client = Client(demo_url, verbose=False)
    client.predict(message={"text": QUESTION, "files": [handle_file(str(clips["falling"]))]}, options="",
                   api_name="/respond")
    final = client.predict(message={"text": "And again?", "files": []}, options="", api_name="/respond")
    assert "using the clip from earlier" in final[0]["content"]
    assert _answers(final)[-1] == "(B) falling"


@pytest.mark.slow
def test_demo_auth_is_enforced(backend):
    from gradio_client import Client

    from dt_eval.apps.demo.app import build_demo, launch

    demo = build_demo(backend, NAME, window_s=None, examples=False)
    _, url, _ = launch(demo, port=_free_port(), prevent_thread_lock=True, quiet=True, auth=("alice", "s3cret-pw"))
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False)
        with pytest.raises(Exception):
            Client(url, verbose=False, auth=("alice", "wrong"))
        with pytest.raises(urllib.error.HTTPError) as e:  # the API refuses, not just the page
            urllib.request.urlopen(url.rstrip("/") + "/gradio_api/info", timeout=10)
        assert e.value.code in (401, 403)
        c = Client(url, verbose=False, auth=("alice", "s3cret-pw"))
        assert "/respond" in c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        demo.close()


@pytest.mark.slow
def test_demo_serves_only_uploads_and_examples(demo_url, examples_dir):
    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(demo_url.rstrip("/") + "/gradio_api/file=" + path, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    example = next(examples_dir.glob("*.wav"))
    assert status(str(example)) == 200
    for p in (ROOT / "pyproject.toml", Path.home() / ".bashrc", Path("/etc/passwd"), examples_dir.parent):
        assert status(str(p)) in (403, 404), p
    assert demo_url.startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_cli_demo_model_starts_and_stops_its_server(model_dir, clips, tmp_path):
    from gradio_client import Client, handle_file

    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", DT_EVAL_CACHE=str(tmp_path / "cache"))
    err_path = tmp_path / "demo.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dt_eval.cli", "demo", "--model", str(model_dir),
                                 "--port", str(port), "--window", "1.5", "--no-examples"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, err_path.read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.monotonic() < deadline, err_path.read_text()[-3000:]
                time.sleep(0.5)
        log = err_path.read_text()
        server_url = next(x.split()[-1] for x in log.splitlines() if x.startswith("model server ready at"))
        assert "window: 1.5 s" in log
        final = Client(url, verbose=False).predict(
            message={"text": QUESTION, "files": [handle_file(str(clips["rising"]))]}, options="", api_name="/respond")
        assert "only the first 1.5 s were used" in final[0]["content"]
        assert _answers(final)[-1] == "(A) rising"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # its model server is gone
        urllib.request.urlopen(server_url.rsplit("/v1", 1)[0] + "/health", timeout=5)


# --------------------------------------------------------------------------------------------
# Slow: Stop makes the real model server stop generating


@pytest.fixture(scope="module")
def slow_backend(model_dir, tmp_path_factory):
    """hfserver streaming one token per SLOW_TOKEN_DELAY_S (the tiny model's ~15-token answer
    then takes ~8 s): time to press Stop mid-reasoning. `.log` is its log file."""
    log_dir = tmp_path_factory.mktemp("hfserver-slow")
    with hfserver(model_dir, NAME, log_dir, "--token-delay", str(SLOW_TOKEN_DELAY_S), ready_s=300) as url:
        yield types.SimpleNamespace(url=url, log=log_dir / "hfserver.stderr.log")


@pytest.fixture(scope="module")
def slow_demo_url(slow_backend, examples_dir):
    from dt_eval.apps.demo.app import build_demo, launch

    demo = build_demo(slow_backend.url, NAME, window_s=None, examples=examples_dir)
    _, url, _ = launch(demo, port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def _server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=10) as r:
        return json.loads(r.read())


def _full_answer_tokens(server, clip: Path) -> int:
    """Tokens the model generates for `clip` when let finish (non-streamed: no token delay)."""
    return _direct_reply(server.url, clip)["usage"]["completion_tokens"]


def _wait_for_hang_up(server, seen_before: int, timeout_s: float = 60) -> int:
    """Wait until the model server has counted a new client hang-up and runs no generation;
    return after how many tokens it stopped generating (its log line)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = _server_stats(server.url)
        if stats["disconnects"] > seen_before and stats["generating"] == 0:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)  # polling the server's own state
    stopped = re.findall(r"client disconnected; generation stopped after (\d+) tokens", server.log.read_text())
    assert stopped, server.log.read_text()[-2000:]
    return int(stopped[-1])


@pytest.mark.slow
def test_hfserver_stops_generating_when_the_client_hangs_up(slow_backend, clips):
    full = _full_answer_tokens(slow_backend, clips["rising"])
    before = _server_stats(slow_backend.url)["disconnects"]

    async def go():
        stream = stream_chat(slow_backend.url, NAME, _demo_messages(clips["rising"]), max_tokens=64, temperature=0)
        async for u in stream:
            if u.reasoning.strip():
                break
        await stream.aclose()

    asyncio.run(go())
    stopped_after = _wait_for_hang_up(slow_backend, before)
    assert 1 <= stopped_after < full, (stopped_after, full)
    # The server is free again and answers the next request in full.
    assert _direct(slow_backend.url, clips["rising"])["content"].strip() == "(A) rising"


@pytest.mark.slow
def test_demo_cancelled_by_an_api_client_stops_the_model(slow_demo_url, slow_backend, clips):
    """gradio_client's cancel (what Stop sends) reaches the model server: it stops generating."""
    from gradio_client import Client, handle_file

    full = _full_answer_tokens(slow_backend, clips["rising"])
    before = _server_stats(slow_backend.url)["disconnects"]
    client = Client(slow_demo_url, verbose=False)
    job = client.submit(message={"text": QUESTION, "files": [handle_file(str(clips["rising"]))]}, options="",
                        api_name="/respond")
    for update in job:
        if (t := _thinking(update)) and t["content"].strip():
            break
    job.cancel()
    stopped_after = _wait_for_hang_up(slow_backend, before)
    assert 1 <= stopped_after < full, (stopped_after, full)


# --------------------------------------------------------------------------------------------
# Browser: headless Debian chromium via Playwright


@contextlib.contextmanager
def _chromium(*args: str, **context):
    """A page in headless Debian chromium (skips without it or playwright)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(reason=f"{CHROMIUM} not found (Debian's chromium: `make setup-browser`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + list(args))
        try:
            yield browser.new_context(viewport={"width": 1100, "height": VIEWPORT_H}, **context).new_page()
        finally:
            browser.close()


def _open_demo(page, url: str):
    """Load the demo; its question box."""
    page.goto(url, wait_until="load")
    box = page.get_by_placeholder("Ask about the audio")
    box.wait_for(timeout=60000)
    return box


def _attach(page, clip: Path) -> None:
    page.locator('#dt-input input[type="file"]').set_input_files(str(clip))
    page.locator('#dt-input [aria-label="File thumbnail"]').wait_for(timeout=30000)  # uploaded


def _user_texts(page) -> str:
    return "\n".join(t.strip() for t in page.locator('[data-testid="user"]').all_inner_texts())


def _open_thinking(page) -> str:
    """The text of the (done) Thinking block, unfolded if Gradio folded it."""
    title = page.locator(".thought-group .title").first
    assert "Thinking" in title.inner_text()
    page.locator(".thought-group .duration").first.wait_for(timeout=60000)  # reasoning done
    body = page.locator(".thought-group .message-content").first
    for _ in range(5):  # Gradio folds a block when it turns done: unfold it (again) if so
        if body.is_visible():
            break
        title.click()
        with contextlib.suppress(Exception):
            body.wait_for(state="visible", timeout=3000)
    return page.locator(".thought-group").first.inner_text()


@pytest.mark.slow
@pytest.mark.browser
def test_demo_in_headless_chromium(demo_url, clips):
    """Options box in view right under the input; the user's turn shows the clip (player and file
    name) and the options one per line; the reasoning streams into Thinking, then the answer."""
    shot = ARTIFACTS / "demo.png"
    with _chromium() as page:
        box = _open_demo(page, demo_url)
        options = page.get_by_label("Options, one per line")
        # Visible without scrolling or unfolding anything, directly under the input.
        assert options.is_visible() and options.is_editable()
        ob, ib = options.bounding_box(), page.locator("#dt-input").bounding_box()
        assert ob["y"] + ob["height"] <= VIEWPORT_H, ob
        assert 0 <= ob["y"] - (ib["y"] + ib["height"]) < 80, (ib, ob)
        assert page.get_by_role("button", name="Stop", exact=True).count() == 0

        _attach(page, clips["rising"])
        options.fill("rising\nfalling\nsteady")
        box.fill(QUESTION)
        box.press("Enter")
        # The user's turn: an audio player, the clip's name, the question, the options as a list.
        page.get_by_text("Clip: rising.wav").wait_for(timeout=30000)
        page.locator('[data-testid="user"] audio').first.wait_for(state="attached", timeout=30000)
        assert page.locator('[data-testid="user"] audio').count() == 1
        assert f"Clip: rising.wav\n\n{QUESTION}\n\n(A) rising\n(B) falling\n(C) steady" in _user_texts(page)
        # While it streams the thinking block is open and pending; then the answer arrives.
        page.locator(".thought-group").first.wait_for(timeout=60000)
        page.locator('[data-testid="bot"]').get_by_text("(A) rising").wait_for(timeout=60000)
        group = _open_thinking(page)
        assert "The pitch goes up." in group and "(A) rising" not in group
        assert page.locator(".duration").first.inner_text().strip().endswith("s)")
        page.get_by_role("button", name="Submit").wait_for(timeout=30000)  # ready for the next question
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.browser
def test_demo_stop_button_in_chromium(slow_demo_url, slow_backend, clips):
    """Mid-reasoning, Stop replaces Submit; clicking it makes the model server stop generating
    (it counts the hang-up and logs after how many tokens), and the chat says it stopped."""
    from dt_eval.apps.demo.app import STOPPED_NOTE

    full = _full_answer_tokens(slow_backend, clips["rising"])
    before = _server_stats(slow_backend.url)["disconnects"]
    shot = ARTIFACTS / "demo-stopped.png"
    with _chromium() as page:
        box = _open_demo(page, slow_demo_url)
        _attach(page, clips["rising"])
        box.fill(QUESTION)
        box.press("Enter")
        page.locator(".thought-group .message-content").first.wait_for(timeout=60000)  # reasoning streams
        stop = page.get_by_role("button", name="Stop", exact=True)
        assert stop.is_visible() and page.get_by_role("button", name="Submit").count() == 0
        page.screenshot(path=str(ARTIFACTS / "demo-streaming.png"))
        stop.click()
        stopped_after = _wait_for_hang_up(slow_backend, before)
        page.get_by_text(STOPPED_NOTE).wait_for(timeout=30000)
        page.get_by_role("button", name="Submit").wait_for(timeout=30000)
        assert stop.count() == 0 and box.is_editable()
        # The answer never came: the server had stopped before it.
        assert page.locator('[data-testid="bot"]').get_by_text("(A) rising").count() == 0
        page.screenshot(path=str(shot), full_page=True)
    assert 1 <= stopped_after < full, (stopped_after, full)


@pytest.mark.slow
@pytest.mark.browser
def test_demo_examples_in_chromium(demo_url, backend, examples_dir):
    """The examples show their clip (a player), question and options (one per line); a click fills
    in all three, and Enter asks the model."""
    from dt_eval.apps.demo.app import ensure_examples

    examples = ensure_examples(examples_dir)
    rising = next(e for e in examples if e.name == "rising-sweep")
    ref = _direct(backend, rising.path, rising.options)
    assert rising.question == QUESTION  # so _direct asked the same question
    with _chromium() as page:
        box = _open_demo(page, demo_url)
        table = page.locator("#dt-examples")
        table.locator("audio").nth(len(examples) - 1).wait_for(state="attached", timeout=30000)
        assert table.locator("audio").count() == len(examples)
        for e in examples:
            assert table.get_by_text(e.question).is_visible()
        cell = page.get_by_test_id("dataset-cell-0-1")  # options of the first example
        assert cell.inner_text().strip() == "\n".join(rising.options)
        page.screenshot(path=str(ARTIFACTS / "demo-examples.png"), full_page=True)

        table.get_by_text(rising.question).click()  # (a click on its player plays the clip)
        page.locator('#dt-input [aria-label="File thumbnail"]').wait_for(timeout=30000)
        assert box.input_value() == rising.question
        assert page.get_by_label("Options, one per line").input_value() == "\n".join(rising.options)
        box.press("Enter")
        page.get_by_text(f"Clip: {rising.path.name}").wait_for(timeout=30000)
        listed = "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(rising.options))
        assert listed in _user_texts(page)
        page.locator('[data-testid="bot"]').get_by_text(ref["content"].strip()).wait_for(timeout=60000)


@pytest.mark.slow
@pytest.mark.browser
def test_demo_microphone_in_headless_chromium(demo_url, tmp_path):
    """Record with Chromium's fake microphone (a 44.1 kHz sweep played as the capture device)."""
    from dt_eval.testing.synth_audio import sweep, write_wav

    mic = write_wav(tmp_path / "mic.wav", sweep("rising", 2.0, sr=44100), 44100)
    with _chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                   f"--use-file-for-fake-audio-capture={mic}", permissions=["microphone"]) as page:
        box = _open_demo(page, demo_url)
        page.get_by_role("button", name="Record audio").click()
        page.get_by_role("button", name="Start recording").click()
        page.wait_for_timeout(2000)  # the length of the recording
        page.get_by_role("button", name="Stop recording").click()
        page.get_by_role("button", name="Attach audio").wait_for(timeout=30000)  # the recording is ready
        box.fill(QUESTION)
        box.press("Enter")
        page.locator(".thought-group .duration").first.wait_for(timeout=60000)  # reasoning done
        page.get_by_role("button", name="Submit").wait_for(timeout=60000)  # the turn has ended
        bot = [t.strip() for t in page.locator('[data-testid="bot"]').all_inner_texts()]
        page.locator('[data-testid="user"] audio').first.wait_for(state="attached", timeout=30000)
        assert page.locator('[data-testid="user"][aria-label*="type audio"]').count() == 1  # the recording
    assert any(t.startswith("Thinking") for t in bot), bot
    answers = [t for t in bot if t and not t.startswith("Thinking")]
    assert answers and not any(t.startswith("⚠️") for t in answers), bot
