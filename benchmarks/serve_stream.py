"""How much the Gradio demo adds to streaming: time to first reasoning token (TTFT) and tokens/s
through the demo vs. directly from the model server, as ratios. Goal: the demo adds < 5%.

Setup (one machine, 127.0.0.1, three processes: model server, demo, this client):

* backend: ``python -m dt_eval.serving.hfserver`` (transformers, CPU, reasoning parser on) serving the
  tiny RANDOM Qwen2-Audio (``cached_tiny_model(deterministic=False)``, ~0.6 M parameters) unless
  ``--variant deterministic`` or ``--model``. Greedy, ``--max-tokens`` (200): the random model's
  gibberish never closes ``</think>``, so every token streams as reasoning -- a long,
  fixed-length, reproducible generation. Figures measure the harness, not a real model (a real
  model's slower tokens make the demo's share smaller).
* demo: ``dt-eval demo --base-url ...`` in its own process, as deployed.
* direct: the request body the demo sends (same clip, prompt, sampling; built with
  dt_eval.apps.demo.app.prepare_turn), streamed by dt_eval.backends.openai_stream (SSE).
* via demo, two clients:
  - ``gradio_client``: ``Client.submit`` + iterating the job (as the issue asks). Includes the
    clip upload, and gradio_client's own delivery loop, which polls for new messages every
    50 ms (gradio_client/utils.py ``stream_sse_v1plus``): up to 50 ms per update is the
    client's, not the demo's.
  - ``http``: Gradio's HTTP streaming API (``POST /gradio_api/call/respond`` + its SSE stream,
    event-driven like the browser). The clip is uploaded before the clock starts, as a browser
    uploads it when it is attached: TTFT runs from "send" to the first reasoning on screen.

* floor: the same HTTP API against benchmarks/gradio_floor_app.py, a no-op streaming
  ChatInterface shaped like the demo: Gradio's own cost from request to first update, which no
  Gradio app can go below (two HTTP requests, its queue, pre/postprocessing).

Runs alternate (direct, http, gradio_client) after a warm-up; medians are reported, and each
ratio is the median over rounds of (demo run / the direct run just before it), so drifting load
from other processes hits both sides alike. TTFT = request sent -> first non-empty reasoning at the
client. tokens/s end to end = completion_tokens / (request -> last token); after the first token
= (completion_tokens - 1) / (first -> last). completion_tokens comes from the server's usage
(the same greedy text on every path: checked). "demo CPU" = the demo process's user+system CPU
time per answer (/proc), which on a small CPU-only machine is taken from the model server.

    python benchmarks/serve_stream.py [--runs 10] [--max-tokens 200] [--variant random|deterministic]
                                      [--model DIR] [--server-threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dt_eval.serving.procs import ServerProcess, ServerProcessError  # noqa: E402

NAME = "tiny-qwen2audio"  # served name: selects the tiny preset (prompted thinking, 30 s window)
QUESTION = "Does the pitch of the tone go up or down?"
PATHS = ("direct", "http", "gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path, ready_line: str | None = None, health_url: str | None = None,
           timeout_s: float = 600, env: dict[str, str] | None = None) -> tuple[ServerProcess, str | None]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", **(env or {}))
    name = cmd[2] if cmd[1] == "-m" else Path(cmd[1]).name
    proc = ServerProcess(cmd, name=name, log_path=log, env=env, cwd=ROOT, ready_prefix=ready_line)
    try:
        return proc, proc.wait_ready(timeout_s, health_url=health_url)
    except ServerProcessError as e:
        proc.stop()
        raise SystemExit(str(e)) from None


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thinking(msgs: list) -> dict | None:
    return next((m for m in msgs or [] if (m.get("metadata") or {}).get("title") == "Thinking"), None)


def _answer(msgs: list) -> str:
    answers = [m["content"] for m in msgs or [] if not (m.get("metadata") or {}).get("title")]
    return answers[-1] if answers else ""


def direct_run(base_url: str, messages: list, fields: dict) -> dict:
    from dt_eval.backends.openai_stream import stream_chat

    async def go() -> dict:
        t0 = time.perf_counter()
        first = last = None
        upd = None
        async for upd in stream_chat(base_url, NAME, messages, **fields):
            now = time.perf_counter()
            if first is None and upd.reasoning.strip():
                first = now
            if upd.reasoning.strip() or upd.content.strip():
                last = now
        return {"t0": t0, "first": first, "last": last, "tokens": (upd.usage or {}).get("completion_tokens"),
                "reasoning": upd.reasoning.strip(), "content": upd.content.strip(), "updates": upd.chunks}

    return asyncio.run(go())


def gradio_client_run(client, clip: Path) -> dict:
    from gradio_client import handle_file

    t0 = time.perf_counter()
    job = client.submit(message={"text": QUESTION, "files": [handle_file(str(clip))]}, options="",
                        api_name="/respond")
    first = last = None
    updates = 0
    final = None
    for out in job:
        now = time.perf_counter()
        updates += 1
        think = _thinking(out)
        if first is None and think and think["content"].strip():
            first = now
        last = now
        final = out
    think = _thinking(final)
    return {"t0": t0, "first": first, "last": last, "updates": updates,
            "reasoning": think["content"] if think else "", "content": _answer(final)}


def http_run(http, demo_url: str, clip: Path) -> dict:
    """Gradio's HTTP API: upload (not timed, as a browser does on attach), then call + SSE."""
    api = demo_url.rstrip("/") + "/gradio_api"
    with open(clip, "rb") as f:
        path = http.post(api + "/upload", files={"files": (clip.name, f, "audio/wav")}).json()[0]
    payload = {"data": [{"text": QUESTION, "files": [{"path": path, "orig_name": clip.name,
                                                       "meta": {"_type": "gradio.FileData"}}]}, ""]}
    t0 = time.perf_counter()
    event_id = http.post(api + "/call/respond", json=payload).json()["event_id"]
    first = last = None
    updates = 0
    final = None
    with http.stream("GET", f"{api}/call/respond/{event_id}") as resp:
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            now = time.perf_counter()
            data = json.loads(line[5:])
            if not isinstance(data, list) or not data:
                raise SystemExit(f"demo error: {line[:300]}")
            msgs = data[0]
            updates += 1
            think = _thinking(msgs)
            if first is None and think and think["content"].strip():
                first = now
            last = now
            final = msgs
    think = _thinking(final)
    return {"t0": t0, "first": first, "last": last, "updates": updates - 1,  # "complete" repeats the last
            "reasoning": think["content"] if think else "", "content": _answer(final)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the tiny Qwen2-Audio of --variant, built/cached)")
    p.add_argument("--variant", choices=("random", "deterministic"), default="random",
                   help="tiny model: random (--max-tokens tokens of gibberish, all reasoning) or deterministic "
                        "(its ~20-token '<think>...</think> (A) rising')")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--server-threads", type=int, default=1,
                   help="torch intra-op threads of the model server (OMP_NUM_THREADS); torch's default "
                        "(one per core) oversubscribes a small machine shared with the demo and this "
                        "client and made runs vary 3x here; 0 = torch's default")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    import httpx

    from dt_eval.apps.demo.app import model_settings, prepare_turn, request_fields
    from dt_eval.testing.synth_audio import sweep, write_wav

    if args.model:
        model_dir, what = Path(args.model), f"the checkpoint {args.model}"
    else:
        from dt_eval.testing.tiny_qwen2audio import cached_tiny_model

        model_dir = cached_tiny_model(deterministic=args.variant == "deterministic")
        what = ("the tiny RANDOM Qwen2-Audio (~0.6 M params; greedy gibberish, all reasoning)"
                if args.variant == "random" else
                "the tiny DETERMINISTIC Qwen2-Audio (~0.6 M params; '<think>...</think> (A) rising')")
    tmp = Path(tempfile.mkdtemp(prefix="dt-eval-bench-"))
    clip = write_wav(tmp / "rising.wav", sweep("rising", 2.0))

    threads = {"OMP_NUM_THREADS": str(args.server_threads), "MKL_NUM_THREADS": str(args.server_threads)} \
        if args.server_threads > 0 else {}
    server, base_url = _start([sys.executable, "-m", "dt_eval.serving.hfserver", "--model", str(model_dir), "--port", "0",
                               "--served-model-name", NAME, "--device", "cpu"], tmp / "hfserver.log", "ready: ",
                              env=threads)
    assert base_url is not None
    port = _free_port()
    demo = None
    runs: dict[str, list[dict]] = {k: [] for k in PATHS}
    try:
        demo_url = f"http://127.0.0.1:{port}/"
        demo, _ = _start([sys.executable, "-m", "dt_eval.cli", "demo", "--base-url", base_url,
                          "--served-model-name", NAME, "--port", str(port), "--no-examples",
                          "--max-tokens", str(args.max_tokens)], tmp / "demo.log", health_url=demo_url)
        from gradio_client import Client

        client = Client(demo_url, verbose=False)
        http = httpx.Client(timeout=600)
        # The exact body the demo sends (same settings: preset of NAME, same max_tokens).
        settings = model_settings(NAME, max_tokens=args.max_tokens)
        turn = prepare_turn({"text": QUESTION, "files": [str(clip)]}, [], "", settings, [])
        fields = request_fields(settings)
        do = {
            "direct": lambda: direct_run(base_url, turn.messages, fields),
            "http": lambda: http_run(http, demo_url, clip),
            "gradio_client": lambda: gradio_client_run(client, clip),
        }
        for k in PATHS:  # warm-up
            do[k]()
        for _ in range(args.runs):
            for k in PATHS:
                cpu0, scpu0 = _cpu_s(demo.pid), _cpu_s(server.pid)
                r = do[k]()
                r["demo_cpu_s"] = _cpu_s(demo.pid) - cpu0
                r["server_cpu_s"] = _cpu_s(server.pid) - scpu0
                runs[k].append(r)
        # Gradio's own floor: the same HTTP API against a no-op app shaped like the demo.
        floor_port = _free_port()
        floor_url = f"http://127.0.0.1:{floor_port}/"
        floor, _ = _start([sys.executable, str(ROOT / "benchmarks" / "gradio_floor_app.py"), str(floor_port)],
                          tmp / "floor.log", health_url=floor_url)
        try:
            http_run(http, floor_url, clip)  # warm-up
            floor_ttft = [(lambda r: r["first"] - r["t0"])(http_run(http, floor_url, clip)) for _ in range(args.runs)]
        finally:
            floor.stop(((signal.SIGTERM, 20.0),))
        http.close()
    finally:
        if demo is not None:
            demo.stop(((signal.SIGTERM, 20.0),))
        server.stop(((signal.SIGTERM, 20.0),))

    ref = runs["direct"][0]
    tokens = ref["tokens"]
    identical = all(r["reasoning"] == ref["reasoning"] for rs in runs.values() for r in rs) and all(
        r["content"] == ref["content"] or not ref["content"] for k in ("http", "gradio_client") for r in runs[k])

    med = statistics.median
    fig: dict = {
        "backend": f"dt_eval.serving.hfserver (transformers, CPU) serving {what}",
        "model_dir": str(model_dir), "runs": args.runs, "max_tokens": args.max_tokens,
        "completion_tokens": tokens, "outputs_identical": identical, "cpus": os.cpu_count(),
        "loadavg_1min_at_end": os.getloadavg()[0],
    }
    for k, rs in runs.items():
        fig[k] = {
            "ttft_s": med(r["first"] - r["t0"] for r in rs),
            "tokens_per_s": med(tokens / (r["last"] - r["t0"]) for r in rs),
            "decode_tokens_per_s": med((tokens - 1) / max(r["last"] - r["first"], 1e-9) for r in rs),
            "e2e_s": med(r["last"] - r["t0"] for r in rs),
            "updates": med(r["updates"] for r in rs),
            "demo_cpu_s": med(r["demo_cpu_s"] for r in rs),
            "server_cpu_s": med(r["server_cpu_s"] for r in rs),
        }
    metrics = {"ttft_s": lambda r: r["first"] - r["t0"], "tokens_per_s": lambda r: tokens / (r["last"] - r["t0"]),
               "decode_tokens_per_s": lambda r: (tokens - 1) / max(r["last"] - r["first"], 1e-9),
               "e2e_s": lambda r: r["last"] - r["t0"]}
    for k in ("http", "gradio_client"):
        # Median of per-round ratios (each demo run against the direct run just before it):
        # drifting load from other processes cancels out better than in a ratio of medians.
        fig[f"ratio_{k}"] = {m: med(f(v) / f(d) for v, d in zip(runs[k], runs["direct"])) for m, f in metrics.items()}

    d = fig["direct"]
    print(f"backend: {fig['backend']}; server torch threads: {args.server_threads or 'default'}")
    print(f"generation: greedy, max_tokens {args.max_tokens} -> {tokens} tokens; {args.runs} alternating runs "
          f"after a warm-up; medians; same output on every path: {identical}; {os.cpu_count()} CPUs, "
          f"load average {fig['loadavg_1min_at_end']:.1f}")
    print("medians; ratio = median over rounds of (demo run / the direct run just before it)")
    print(f"{'':27}{'direct SSE':>12}{'demo (http)':>13}{'ratio':>8}{'demo (gradio_client)':>22}{'ratio':>8}")

    def row(label: str, m: str, fmt: str, scale: float = 1.0) -> None:
        cells = [format(d[m] * scale, fmt).rjust(12)]
        for k in ("http", "gradio_client"):
            cells.append(format(fig[k][m] * scale, fmt).rjust(13 if k == "http" else 22))
            cells.append(f"{fig[f'ratio_{k}'][m]:.3f}".rjust(8))
        print(f"{label:27}" + "".join(cells))

    row("TTFT, first reasoning (ms)", "ttft_s", ".1f", 1000)
    row("tokens/s, end to end", "tokens_per_s", ".1f")
    row("tokens/s, after 1st token", "decode_tokens_per_s", ".1f")
    row("request -> last token (s)", "e2e_s", ".2f")
    print(f"updates per answer: server SSE chunks {d['updates']:.0f}, demo http {fig['http']['updates']:.0f}, "
          f"gradio_client {fig['gradio_client']['updates']:.0f}; demo CPU per answer "
          f"{fig['http']['demo_cpu_s'] * 1000:.0f} ms (http) / {fig['gradio_client']['demo_cpu_s'] * 1000:.0f} ms "
          f"(gradio_client), {d['demo_cpu_s'] * 1000:.0f} ms while idle (direct runs); model server CPU per "
          f"answer {d['server_cpu_s'] * 1000:.0f} ms")
    if min(fig[k]["updates"] for k in PATHS) < 5:
        print("note: some path delivered the text in under 5 updates (short answer, or transformers' "
              "TextStreamer releasing text a word at a time), so its 'after 1st token' rate is not "
              "meaningful; use the end-to-end rate")
    fig["gradio_floor_ttft_s"] = med(floor_ttft)
    extra = fig["http"]["ttft_s"] - d["ttft_s"]
    print(f"Gradio's own floor (a no-op streaming ChatInterface, same HTTP API): {fig['gradio_floor_ttft_s'] * 1000:.1f} ms "
          f"to the first update; the demo's TTFT over direct: {extra * 1000:+.1f} ms, so dt-eval's own handler adds "
          f"{(extra - fig['gradio_floor_ttft_s']) * 1000:+.1f} ms")
    for k in ("http", "gradio_client"):
        r = fig[f"ratio_{k}"]
        verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
        print(f"goal (demo adds < 5%), {k}: TTFT {verdict(r['ttft_s'] < 1.05)} "
              f"(+{(fig[k]['ttft_s'] - d['ttft_s']) * 1000:.0f} ms), end-to-end tokens/s "
              f"{verdict(r['tokens_per_s'] > 0.95)}")
    if args.json:
        fig["rounds"] = [{k: {"ttft_s": runs[k][i]["first"] - runs[k][i]["t0"], "e2e_s": runs[k][i]["last"] - runs[k][i]["t0"],
                              "demo_cpu_s": runs[k][i]["demo_cpu_s"], "server_cpu_s": runs[k][i]["server_cpu_s"]}
                          for k in PATHS} for i in range(args.runs)]
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
