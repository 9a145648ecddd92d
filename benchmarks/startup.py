"""Start-up cost of the `dt-eval` command, against baselines measured in the same run.

`score`: whole-process wall time of `dt-eval score --task mmau -p FILE` on a 1,000-record MMAU
prediction file, next to
  * the official MMAU `evaluation.py` on the same file (`--official PATH`; never shipped with
    dt-eval: fetch it from the MMAU repository), and
  * a bare script (written by this benchmark into a temp dir) that reads the file and applies the
    same token match: the floor of any Python scorer.

`run`: time to first request, from just before the process is spawned to the moment the first
HTTP request reaches a local server (a threaded HTTP server inside this benchmark that answers
like an OpenAI chat endpoint), for `dt-eval run --tasks mmau --limit 1 --backend openai` on a
fresh run directory, next to a bare script that reads the same clip, base64-encodes it and POSTs
one chat request (stdlib only), and the whole-process time of a script that only imports the
libraries dt-eval's client is built on (asyncio, aiohttp, numpy, soundfile): the floor for any
client made of them.

The machine may be shared, so the commands being compared are interleaved and the minimum of
`--runs` wall times is reported (the least disturbed run). Each command runs once untimed first,
with bytecode writing on (PYTHONDONTWRITEBYTECODE unset): timed runs load compiled modules, as
an installed package does.

    python benchmarks/startup.py [--runs 15] [--official /path/to/mmau/evaluation.py]
                                 [--data /path/to/mmau-test-mini.json] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A bare scorer: the MMAU match rule (every answer token in the prediction, no token of another
# option that the answer does not share), accuracy over the records that have a prediction.
BARE_SCORE = r'''
import json, re, sys
WORD = re.compile(r"\b\w+\b")
def words(text):
    return set(WORD.findall(text.lower()))
with open(sys.argv[1]) as f:
    records = json.load(f)
right = total = 0
for rec in records:
    if "model_output" not in rec:
        continue
    said, gold = words(rec["model_output"]), words(rec["answer"])
    others = set()
    for choice in rec["choices"]:
        c = words(choice)
        if c != gold:
            others |= c - gold
    right += bool(said) and gold <= said and not (said & others)
    total += 1
print(f"Total Accuracy: {right / total * 100:.2f}% over {total} samples")
'''

# A bare client: read one clip, base64 it, POST one chat request, read the reply.
BARE_RUN = r'''
import base64, http.client, json, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    clip = base64.b64encode(f.read()).decode("ascii")
body = json.dumps({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": [
    {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
    {"type": "text", "text": sys.argv[3]}]}]})
conn = http.client.HTTPConnection(url.hostname, url.port)
conn.request("POST", url.path + "/chat/completions", body, {"Content-Type": "application/json"})
print(json.loads(conn.getresponse().read())["choices"][0]["message"]["content"])
'''

# The floor of any client built on the same libraries: importing them and nothing else.
LIBRARY_IMPORTS = "import asyncio, aiohttp, numpy, soundfile\n"

_REPLY = json.dumps({
    "id": "startup", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "(A)"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}).encode()


class _FirstRequest:
    """Arrival time of the first request since `reset()`."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.arrived = threading.Event()

    def reset(self) -> None:
        self.at = None
        self.arrived.clear()

    def mark(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
            self.arrived.set()


def _server(first: _FirstRequest) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def parse_request(self) -> bool:  # right after the request line: stamp it
            first.mark()
            return super().parse_request()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(_REPLY)))
            self.end_headers()
            self.wfile.write(_REPLY)

        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# ------------------------------------------------------------------------------------------ data


def synthetic_mmau(n: int, seed: int = 0) -> list[dict]:
    """MMAU-shaped metadata records (made up here)."""
    rng = random.Random(seed)
    pools = [["dog barking", "cat meowing", "bird singing", "car horn"], ["Man", "Woman", "Child", "Robot"],
             ["piano", "violin", "guitar", "drums", "flute"], ["rising", "falling", "steady"]]
    out = []
    for i in range(n):
        choices = list(rng.choice(pools))
        out.append({"id": f"syn-{i:04d}", "audio_id": f"./test-mini-audios/syn-{i:04d}.wav",
                    "question": f"Synthetic question {i}: which option describes the clip?", "choices": choices,
                    "answer": rng.choice(choices), "dataset": "synthetic", "task": ["sound", "music", "speech"][i % 3],
                    "split": "test-mini", "category": "Reasoning", "sub-category": rng.choice(["A", "B", "C"]),
                    "difficulty": ["easy", "medium", "hard"][i % 3]})
    return out


def predictions(records: list[dict], seed: int = 0) -> list[dict]:
    """The records with a `model_output`: mostly an option's text, some wrapped in reasoning."""
    rng = random.Random(seed)
    out = []
    for rec in records:
        choice = rng.choice(rec["choices"])
        said = choice if rng.random() < 0.7 else f"<think>listening ...</think> The answer is {choice}."
        out.append({**rec, "model_output": said})
    return out


def write_clip(path: Path, seconds: float = 2.0, rate: int = 16000) -> None:
    import math
    import struct
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                      for i in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


# ------------------------------------------------------------------------------------------ timing


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("NO_COLOR", "1")
    return env


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    return took


def to_first_request(cmd: list[str], env: dict[str, str], first: _FirstRequest) -> float:
    first.reset()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if not first.arrived.wait(60):
        proc.kill()
        raise SystemExit(f"no request from {' '.join(cmd)}:\n{proc.communicate()[1].decode()[-2000:]}")
    took = first.at - t0
    _, err = proc.communicate(timeout=120)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return took


def dt_eval_command(python: str) -> list[str]:
    """The `dt-eval` console script beside `python` (what users run), else `python -m dt_eval.cli`."""
    script = Path(python).parent / "dt-eval"
    return [python, str(script)] if script.is_file() else [python, "-m", "dt_eval.cli"]


def interleaved_min(commands: dict[str, object], runs: int) -> dict[str, float]:
    for measure in commands.values():  # warm-up: bytecode written, files in the page cache
        measure()
    best: dict[str, float] = {}
    for _ in range(runs):
        for name, measure in commands.items():
            t = measure()
            best[name] = min(best.get(name, t), t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="Runs of each command (the minimum is reported).")
    ap.add_argument("--official", type=Path, help="The official MMAU evaluation.py, to time it on the same file.")
    ap.add_argument("--data", type=Path, help="MMAU metadata (mmau-test-mini.json); default: 1,000 synthetic records.")
    ap.add_argument("--python", default=sys.executable, help="Python that runs dt-eval and the baselines.")
    ap.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = ap.parse_args(argv)

    env = _env()
    py = args.python
    dt_eval = dt_eval_command(py)
    with tempfile.TemporaryDirectory(prefix="dt-eval-startup-") as tmp_name:
        tmp = Path(tmp_name)
        records = json.loads(args.data.read_text(encoding="utf-8")) if args.data else synthetic_mmau(1000)
        pred = tmp / "predictions.json"
        pred.write_text(json.dumps(predictions(records)), encoding="utf-8")
        (tmp / "bare_score.py").write_text(BARE_SCORE, encoding="utf-8")
        (tmp / "bare_run.py").write_text(BARE_RUN, encoding="utf-8")
        (tmp / "library_imports.py").write_text(LIBRARY_IMPORTS, encoding="utf-8")
        bench = tmp / "mmau"
        bench.mkdir()
        (bench / "mmau-test-mini.json").write_text(json.dumps(records), encoding="utf-8")
        clip = bench / records[0]["audio_id"]
        write_clip(clip)

        score_cmds = {
            "dt-eval score": lambda: wall([*dt_eval, "score", "--task", "mmau", "-p", str(pred)], env),
            "bare script": lambda: wall([py, str(tmp / "bare_score.py"), str(pred)], env),
        }
        if args.official:
            score_cmds["official evaluation.py"] = lambda: wall([py, str(args.official), "--input", str(pred)], env)
        score = interleaved_min(score_cmds, args.runs)

        first = _FirstRequest()
        srv = _server(first)
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        run_no = [0]

        def dt_eval_run() -> float:
            run_no[0] += 1  # a fresh run directory each time: nothing to resume
            return to_first_request([*dt_eval, "run", "--tasks", "mmau", "--model", "Qwen/Qwen3-Omni-30B-A3B-Thinking",
                                     "--backend", "openai", "--base-url", url, "--data-dir", str(bench),
                                     "--limit", "1", "--output", str(tmp / f"run{run_no[0]}")],
                                    env, first)

        run = interleaved_min({
            "dt-eval run": dt_eval_run,
            "bare script": lambda: to_first_request([py, str(tmp / "bare_run.py"), url, str(clip), records[0]["question"]],
                                                    env, first),
            # whole process, not to a request: what importing dt-eval's client libraries alone costs
            "library imports only": lambda: wall([py, str(tmp / "library_imports.py")], env),
        }, args.runs)
        srv.shutdown()

    figures = {"command": dt_eval, "runs": args.runs, "records": len(records), "score_wall_s": score, "run_first_request_s": run}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"dt-eval start-up, min of {args.runs} interleaved runs, {len(records)} MMAU records "
          f"({'from ' + str(args.data) if args.data else 'synthetic'}); dt-eval = {' '.join(dt_eval)}")
    print("\nscore: whole process, wall")
    for name, t in score.items():
        print(f"  {name:<24} {t * 1000:7.1f} ms")
    for name in score:
        if name != "dt-eval score":
            print(f"  dt-eval score / {name}: {score['dt-eval score'] / score[name]:.2f}")
    print("\nrun: spawn -> first HTTP request at the server")
    for name, t in run.items():
        note = "  (whole process: asyncio, aiohttp, numpy, soundfile imported, nothing sent)" \
            if name == "library imports only" else ""
        print(f"  {name:<24} {t * 1000:7.1f} ms{note}")
    print(f"  dt-eval run / bare script: {run['dt-eval run'] / run['bare script']:.2f}")
    print(f"  dt-eval run / library imports only: {run['dt-eval run'] / run['library imports only']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
