"""`dt-eval demo` (dt_eval/demo.py) and its streaming client (dt_eval/backends/openai_stream.py).

Fast tests: the SSE client against an in-process fake stream (server-split reasoning, and raw
``<think>`` tags split client-side), option rendering, auth parsing, example generation, and that
``dt-eval --help`` imports neither gradio nor torch.

Slow tests (``-m slow``): the demo launched in-process against a REAL backend -- a
``python -m dt_eval.serving.hfserver`` subprocess serving the deterministic tiny Qwen2-Audio -- driven
with gradio_client: reasoning streams into a pending "Thinking" message before the answer, the
final answer and reasoning equal what the server returns directly for the same clip, bad inputs
get chat messages, ``--auth`` is enforced, only uploads and examples are served, and
``dt-eval demo --model`` starts and stops its own server. Browser test (``-m browser``): headless
Debian chromium via Playwright; screenshot kept in test-artifacts/demo.png.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
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
QUESTION = "Does the pitch of the tone go up or down?"
CHROMIUM = "/usr/bin/chromium"
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

    from dt_eval.apps.demo.app import build_demo
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
            demo = build_demo(f"http://127.0.0.1:{port}/v1", "m", window_s=None, examples=False,
                              update_interval_s=0.05)
            return [out async for out in demo.fn({"text": "q", "files": [str(clip)]}, [], "")]
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
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom dt_eval.cli import app\n"
            "r = CliRunner().invoke(app, ['demo', '--help'])\nassert r.exit_code == 0, r.output\n"
            "assert '--base-url' in r.output and '--auth' in r.output\n"
            "bad = [m for m in ('gradio', 'torch', 'transformers') if m in sys.modules]\nassert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


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


def _direct(base_url: str, clip: Path, options: list[str] = ()) -> dict:
    """The backend's own (non-streamed) answer for `clip`: the reference for the demo.

    Same question text as the demo sends (options as "(A) ...", then the tiny preset's prompted
    thinking instruction); the clip goes as the original file bytes.
    """
    from dt_eval.tasks.presets import load_preset

    text = QUESTION
    if options:
        text += "\nChoices:\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(options))
    text += "\n" + load_preset("tiny-qwen2audio").thinking.prompt_instruction.strip()
    body = {"model": NAME, "max_tokens": 64, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip.read_bytes()).decode(), "format": "wav"}},
        {"type": "text", "text": text}]}]}
    req = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["choices"][0]["message"]


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
# Browser: headless Debian chromium via Playwright


@pytest.mark.slow
@pytest.mark.browser
def test_demo_in_headless_chromium(demo_url, clips):
    if not Path(CHROMIUM).exists():
        pytest.skip(reason=f"{CHROMIUM} not found (Debian's chromium: `make setup-browser`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(demo_url, wait_until="load")
            box = page.get_by_placeholder("Ask about the audio")
            box.wait_for(timeout=60000)
            page.locator('input[type="file"]').first.set_input_files(str(clips["rising"]))
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Multiple choice").click()
            page.get_by_label("Options, one per line").fill("rising\nfalling\nsteady")
            box.fill(QUESTION)
            page.keyboard.press("Enter")
            # While it streams the thinking block is open and pending; then the answer arrives.
            page.locator(".thought-group").first.wait_for(timeout=60000)
            page.get_by_text("(A) rising").wait_for(timeout=60000)
            title = page.locator(".thought-group .title").first
            assert "Thinking" in title.inner_text()
            # The duration appears when the block turns "done"; Gradio may fold it then, a moment
            # after the answer shows. Wait for that state, then open it if it is folded.
            page.locator(".thought-group .duration").first.wait_for(timeout=30000)
            page.wait_for_timeout(800)
            reasoning = page.get_by_text("The pitch goes up.").first
            for _ in range(5):
                if reasoning.is_visible():
                    break
                title.click()
                page.wait_for_timeout(800)  # the unfold animation
            reasoning.wait_for(state="visible", timeout=10000)
            group = page.locator(".thought-group").first.inner_text()
            assert "The pitch goes up." in group and "(A) rising" not in group
            assert page.locator(".duration").first.inner_text().strip().endswith("s)")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.browser
def test_demo_microphone_in_headless_chromium(demo_url, tmp_path):
    """Record with Chromium's fake microphone (a 44.1 kHz sweep played as the capture device)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(reason=f"{CHROMIUM} not found (Debian's chromium: `make setup-browser`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    from dt_eval.testing.synth_audio import sweep, write_wav

    mic = write_wav(tmp_path / "mic.wav", sweep("rising", 2.0, sr=44100), 44100)
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-audio-capture={mic}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_context(viewport={"width": 1100, "height": 900}, permissions=["microphone"]).new_page()
            page.goto(demo_url, wait_until="load")
            box = page.get_by_placeholder("Ask about the audio")
            box.wait_for(timeout=60000)
            page.get_by_role("button", name="Record audio").click()
            page.get_by_role("button", name="Start recording").click()
            page.wait_for_timeout(2000)
            page.get_by_role("button", name="Stop recording").click()
            page.wait_for_timeout(1500)
            box.fill(QUESTION)
            page.keyboard.press("Enter")
            page.locator(".thought-group .duration").first.wait_for(timeout=60000)  # reasoning done
            page.wait_for_timeout(1500)
            bot = [t.strip() for t in page.locator('[data-testid="bot"]').all_inner_texts()]
            assert page.locator('[data-testid="user"][aria-label*="type audio"]').count() == 1  # the recording
        finally:
            browser.close()
    assert any(t.startswith("Thinking") for t in bot), bot
    answers = [t for t in bot if t and not t.startswith("Thinking")]
    assert answers and not any(t.startswith("⚠️") for t in answers), bot
