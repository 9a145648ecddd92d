"""Client overhead of OpenAIBackend (raw aiohttp) next to openai.AsyncOpenAI.

A fixed-delay fake server (tests/fault_server.py, in its own process so its CPU is not counted)
answers every chat request after `--delay` seconds. Each (client, concurrency) run happens in a
fresh worker process, so CPU time and peak RSS are that client's alone. Every request carries a
real audio clip (default 2 s, 16 kHz tone) that the client encodes to base64 WAV, so encoding
cost is counted.

Reported per run:
  of ideal     ideal time / achieved time, ideal = requests x delay / concurrency
  CPU/req      client process CPU time (user+sys, all threads) / requests
  peak RSS     the worker process's peak resident memory (includes imports)
  server CPU   the fake server's CPU per request (to see whether the server, not the client,
               is the limit on a small machine)

Concurrency 1 uses fewer requests (default 100: at 50 ms each, 1,000 would take 50 s).
A warm-up of `concurrency` requests (not timed) opens the connections first.

    python benchmarks/run_overhead.py [--delay 0.05] [--requests 1000] [--requests-c1 100]
                                      [--concurrency 1 16 64] [--audio-seconds 2]
                                      [--clients dt-eval aiohttp-floor openai]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIENTS = ("dt-eval", "dt-eval-thread", "openai", "aiohttp-floor")


def make_requests(n: int, audio_seconds: float, prefix: str = "r"):
    import numpy as np

    from dt_eval.backends.base import AudioInput, GenerationRequest, SamplingConfig

    sr = 16000
    t = np.arange(int(audio_seconds * sr)) / sr
    clip = AudioInput((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return [
        GenerationRequest(
            key=f"{prefix}{i}",
            messages=[
                {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": f"What is this sound? ({i})"}]}
            ],
            audio=[clip],
            sampling=SamplingConfig(max_tokens=256, temperature=0.0),
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------
# Workers (one process per run)


async def run_dt_eval(url: str, reqs, warm, concurrency: int, in_thread: bool) -> tuple[float, int]:
    from dt_eval.backends.openai_compat import OpenAIBackend

    b = OpenAIBackend("fake-model", [url], concurrency=concurrency, api_key="EMPTY")
    b._encode_in_thread = in_thread
    try:
        async for _ in b.generate(warm):
            pass
        t0 = time.perf_counter()
        errors = 0
        async for g in b.generate(reqs):
            errors += not g.ok
        return time.perf_counter() - t0, errors
    finally:
        await b.aclose()


async def _timed(one, reqs, warm) -> tuple[float, int]:
    """Warm the connections (untimed), then time all requests; returns (seconds, errors)."""
    await asyncio.gather(*(one(r) for r in warm))
    t0 = time.perf_counter()
    oks = await asyncio.gather(*(one(r) for r in reqs))
    return time.perf_counter() - t0, sum(not ok for ok in oks)


async def run_openai(url: str, reqs, warm, concurrency: int) -> tuple[float, int]:
    import httpx
    import openai

    from dt_eval.pipeline.audio import wav_base64

    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="EMPTY",
        max_retries=0,
        timeout=600,
        http_client=httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        ),
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(req) -> bool:
        async with sem:
            # Same encoder as dt-eval, so the difference is the HTTP client.
            b64 = wav_base64(req.audio[0]).decode("ascii")
            content = [
                {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
                {"type": "text", "text": req.messages[0]["content"][1]["text"]},
            ]
            try:
                r = await client.chat.completions.create(
                    model="fake-model",
                    messages=[{"role": "user", "content": content}],
                    max_tokens=req.sampling.max_tokens,
                    temperature=req.sampling.temperature,
                    top_p=req.sampling.top_p,
                )
                _ = r.choices[0].message.content
                return True
            except Exception:
                return False

    try:
        return await _timed(one, reqs, warm)
    finally:
        await client.close()


async def run_aiohttp_floor(url: str, reqs, warm, concurrency: int) -> tuple[float, int]:
    """The floor for a Python client: one aiohttp session, the same audio encoding, a plain
    json.dumps body and json.loads of the reply; no retries, no accounting, no error handling."""
    import json as _json

    import aiohttp

    from dt_eval.pipeline.audio import wav_base64

    sem = asyncio.Semaphore(concurrency)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async def one(req) -> bool:
        async with sem:
            b64 = wav_base64(req.audio[0]).decode("ascii")
            body = {"model": "fake-model", "max_tokens": req.sampling.max_tokens, "temperature": 0.0,
                    "messages": [{"role": "user", "content": [
                        {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
                        {"type": "text", "text": req.messages[0]["content"][1]["text"]}]}]}
            async with session.post(url + "/chat/completions", data=_json.dumps(body),
                                    headers={"Content-Type": "application/json"}) as r:
                out = _json.loads(await r.read())
                return r.status == 200 and bool(out["choices"][0]["message"])

    try:
        return await _timed(one, reqs, warm)
    finally:
        await session.close()


def worker(args: argparse.Namespace) -> None:
    reqs = make_requests(args.n, args.audio_seconds)
    warm = make_requests(args.c, args.audio_seconds, prefix="warm")
    if args.client in ("dt-eval", "dt-eval-thread"):
        coro = run_dt_eval(args.url, reqs, warm, args.c, in_thread=args.client == "dt-eval-thread")
    elif args.client == "aiohttp-floor":
        coro = run_aiohttp_floor(args.url, reqs, warm, args.c)
    else:
        coro = run_openai(args.url, reqs, warm, args.c)

    cpu0 = time.process_time()
    holder = {}

    async def timed():
        holder["wall"], holder["errors"] = await coro

    # CPU is measured around the whole run, warm-up excluded by subtracting it below.
    asyncio.run(timed())
    cpu_total = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "wall": holder["wall"],
                "errors": holder["errors"],
                "cpu_total": cpu_total,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


# ------------------------------------------------------------------------------------------
# Driver


def start_server(delay: float):
    from dt_eval.serving.procs import ServerProcess

    proc = ServerProcess([sys.executable, str(ROOT / "tests" / "fault_server.py"), "--delay", str(delay)],
                         name="the fault server", ready_prefix="PORT ")
    try:
        port = int(proc.wait_ready(60))
    except BaseException:
        proc.stop()
        raise
    return proc, f"http://127.0.0.1:{port}/v1"


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of another process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_worker(client: str, url: str, n: int, c: int, audio_seconds: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", client, "--url", url, "--n", str(n), "--c", str(c),
           "--audio-seconds", str(audio_seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {client} c={c} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def encoding_microbench(audio_seconds: float) -> list[str]:
    import numpy as np

    import base64
    import io

    import soundfile as sf

    from dt_eval.pipeline.audio import wav_base64
    from dt_eval.backends.base import AudioInput

    def to_base64_wav(a: AudioInput) -> bytes:  # the straightforward way, through libsndfile
        buf = io.BytesIO()
        sf.write(buf, a.array, a.sampling_rate, format="WAV", subtype="PCM_16")
        return base64.b64encode(buf.getvalue())

    lines = []
    for secs in sorted({audio_seconds, 30.0}):
        t = np.arange(int(secs * 16000)) / 16000
        a = AudioInput((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
        res = {}
        for name, fn in (("soundfile", to_base64_wav), ("numpy (audio.wav_base64)", wav_base64)):
            n = 200 if secs <= 5 else 20
            fn(a)
            c0 = time.process_time()
            for _ in range(n):
                fn(a)
            res[name] = (time.process_time() - c0) / n * 1e3
        lines.append(f"  {secs:4.0f} s clip: " + ", ".join(f"{k} {v:.3f} ms" for k, v in res.items()))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=float, default=0.05, help="server delay per request, seconds (default 0.05)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per run (default 1000)")
    ap.add_argument("--requests-c1", type=int, default=100, help="requests for concurrency 1 (default 100)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--audio-seconds", type=float, default=2.0)
    ap.add_argument("--clients", nargs="+", default=["dt-eval", "aiohttp-floor", "openai"], choices=CLIENTS)
    ap.add_argument("--json", help="also write the results here")
    # worker mode (internal)
    ap.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--c", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.client = args.worker
        worker(args)
        return

    if "openai" in args.clients:
        try:
            import openai  # noqa: F401
        except ImportError:
            print("openai is not installed (pip install openai): skipping that client", file=sys.stderr)
            args.clients = [c for c in args.clients if c != "openai"]
    load0 = os.getloadavg()
    proc, url = start_server(args.delay)
    rows = []
    try:
        for c in args.concurrency:
            n = args.requests_c1 if c == 1 else args.requests
            for client in args.clients:
                # Warm-up-only run to subtract the warm-up's CPU from the total.
                base = run_worker(client, url, 1, c, args.audio_seconds)
                srv0 = proc_cpu_s(proc.pid)
                r = run_worker(client, url, n, c, args.audio_seconds)
                srv_cpu = proc_cpu_s(proc.pid) - srv0
                ideal = n * args.delay / c
                cpu_per_req = max(0.0, r["cpu_total"] - base["cpu_total"]) / (n - 1)
                rows.append(
                    {
                        "client": client, "concurrency": c, "requests": n, "errors": r["errors"],
                        "wall_s": r["wall"], "ideal_s": ideal, "of_ideal": ideal / r["wall"],
                        "req_per_s": n / r["wall"], "cpu_ms_per_req": cpu_per_req * 1e3,
                        "peak_rss_mib": r["peak_rss_mib"], "server_cpu_ms_per_req": srv_cpu / (n + c) * 1e3,
                    }
                )
                print(f"  done: {client} c={c}", file=sys.stderr, flush=True)
    finally:
        proc.stop()

    print(f"\nServer delay {args.delay * 1e3:g} ms; audio {args.audio_seconds:g} s @ 16 kHz per request; "
          f"{os.cpu_count()} CPUs; concurrency 1 uses {args.requests_c1} requests, others {args.requests}.")
    print(f"Load average (1 min) before: {load0[0]:.2f}, after: {os.getloadavg()[0]:.2f}")
    hdr = f"{'client':<15} {'conc':>4} {'reqs':>5} {'err':>3} {'wall s':>7} {'ideal s':>7} {'of ideal':>8} {'req/s':>7} {'CPU ms/req':>10} {'peak RSS MiB':>12} {'server CPU ms/req':>17}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['client']:<15} {r['concurrency']:>4} {r['requests']:>5} {r['errors']:>3} {r['wall_s']:>7.2f} "
              f"{r['ideal_s']:>7.2f} {r['of_ideal']:>8.3f} {r['req_per_s']:>7.0f} {r['cpu_ms_per_req']:>10.3f} "
              f"{r['peak_rss_mib']:>12.0f} {r['server_cpu_ms_per_req']:>17.3f}")
    print("\nWAV+base64 encoding, CPU per clip:")
    print("\n".join(encoding_microbench(args.audio_seconds)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
