"""What a `dt-eval run` tells its user and its caller: failed samples are counted beside the
accuracy and set the exit code; audio warnings reach the records and stderr; credentials in a
`--base-url` / `--judge-url` are used (HTTP basic auth) and then never seen again.

Real runs against the fault-injecting OpenAI server (tests/fault_server.py) on real WAV files:
in-process through the CLI app (fast), and one subprocess run whose whole footprint -- run
directory, stdout, stderr, a leaderboard built from it -- is searched for the secret (slow).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dt_eval.cli import EXIT_SAMPLE_ERRORS
from dt_eval.testing.synth_audio import make_fake_benchmark

from .cli import invoke
from .fault_server import FaultServer
from .paths import REPO

pytestmark = pytest.mark.timeout(300)


def run_args(url: str, bench: Path, run: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", "mmau", "--model", "fake-model", "--backend", "openai", "--base-url", url,
            "--data-dir", f"mmau={bench}", "--output", str(run), "--no-progress", "--max-retries", "0", *extra]


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines() if x.strip()]


def audio_files(bench: Path) -> list[Path]:
    meta = json.loads((bench / "mmau-test-mini.json").read_text())
    return [bench / r["audio_id"] for r in meta]


# --------------------------------------------------------------------------------------------
# Failed samples: counted beside the accuracy, exit code 1; a clean run exits 0


def test_failed_samples_are_shown_and_set_the_exit_code(tmp_path):
    bench = make_fake_benchmark(tmp_path / "b", "mmau", 3, seed=5)
    run = tmp_path / "run"
    with FaultServer(default="500") as down:  # every request fails
        res = invoke(run_args(down.url, bench, run))
    assert res.exit_code == EXIT_SAMPLE_ERRORS == 1, res.output
    out = res.stdout
    assert "Total Accuracy: 0.00% over 3 samples" in out  # the official line, unchanged
    after_total = out.split("Total Accuracy", 1)[1]
    assert "dt-eval: 3 of these 3 samples FAILED" in after_total.split("==", 1)[0]  # right under it
    assert "errors: 3 sample(s) failed (mmau 3)" in out and "--retry-errors" in out
    header = next(line for line in out.splitlines() if line.startswith("task "))
    # the table's errors column is beside the accuracy (and its interval)
    assert header.split()[2:8] == ["accuracy", "95%", "CI", "official", "raw", "errors"]
    # `dt-eval report` says the same; the run is not clean until the failures are redone
    rep = invoke(["report", str(run)])
    assert rep.exit_code == 0 and "errors: 3 sample(s) failed" in rep.stdout
    with FaultServer() as up:
        again = invoke(run_args(up.url, bench, run))  # resume without --retry-errors
        assert again.exit_code == 1 and "all 3 samples already done" in again.stderr
        fixed = invoke(run_args(up.url, bench, run, "--retry-errors"))
        assert fixed.exit_code == 0, fixed.output
        assert "FAILED" not in fixed.stdout and "errors:" not in fixed.stdout
        clean = invoke(run_args(up.url, bench, tmp_path / "clean"))
    assert clean.exit_code == 0, clean.output
    assert all(r["error"] is None for r in records(tmp_path / "clean"))


def test_usage_errors_exit_2(tmp_path):
    res = invoke(["run", "--tasks", "no-such-task", "--model", "m", "--base-url", "http://x/v1"])
    assert res.exit_code == 2 and "no-such-task" in res.stderr


# --------------------------------------------------------------------------------------------
# Audio warnings: in the sample record, and once per kind on stderr


def test_truncated_and_long_clips_are_warned_in_records_and_once_on_stderr(tmp_path):
    bench = make_fake_benchmark(tmp_path / "b", "mmau", 4, seed=6)
    files = audio_files(bench)
    for f in files[:2]:  # two WAVs whose data chunk lost its second half
        raw = f.read_bytes()
        f.write_bytes(raw[: 44 + (len(raw) - 44) // 2])
    seconds = 310.0  # longer than any family's window; "fake-model" has no family, so no window
    sf.write(files[2], np.zeros(int(seconds * 8000), dtype=np.float32), 8000, subtype="PCM_16")
    run = tmp_path / "run"
    with FaultServer() as srv:
        res = invoke(run_args(srv.url, bench, run, "--concurrency", "1"))
        sent = max(len(json.dumps(r.body)) for r in srv.chat_requests())
    assert res.exit_code == 0, res.output  # warnings are not errors
    by_audio = {Path(r["audio"]).name: r for r in records(run)}
    for f in files[:2]:
        (w,) = by_audio[f.name]["warnings"]
        assert w.startswith("truncated WAV") and "bytes of audio" in w
    (w,) = by_audio[files[2].name]["warnings"]
    assert "clip is 310.0 s" in w and "no audio window" in w and "13.2 MB" in w
    assert sent > 13_000_000  # it was indeed sent whole
    assert by_audio[files[3].name]["warnings"] == []
    assert res.stderr.count("truncated WAV") == 1  # two such clips, one line
    assert res.stderr.count("clip is 310.0 s") == 1


# --------------------------------------------------------------------------------------------
# Credentials: basic auth works, and the secret is nowhere afterwards


@pytest.mark.slow
def test_basic_auth_urls_work_and_the_secret_leaves_no_trace(tmp_path):
    secret, jsecret = "pw-SENTINEL-model-9c2b", "pw-SENTINEL-judge-51fa"
    traces = [secret, jsecret, "SENTINEL"] + [base64.b64encode(f"{u}:{p}".encode()).decode()
                                             for u, p in (("bob", secret), ("jo", jsecret))]
    bench = make_fake_benchmark(tmp_path / "b", "mmau", 4, seed=7)
    meta = bench / "mmau-test-mini.json"
    recs = json.loads(meta.read_text())
    recs[0]["question"] += " [[id=q0 faults=401_echo_key]]"  # the server echoes the Authorization header
    recs[1]["question"] += " [[id=q1 faults=500]]"
    meta.write_text(json.dumps(recs))
    run = tmp_path / "run"
    with FaultServer() as model, FaultServer() as judge:
        url = model.url.replace("http://", f"http://bob:{secret}@")
        jurl = judge.url.replace("http://", f"http://jo:{jsecret}@")
        proc = subprocess.run([sys.executable, "-m", "dt_eval.cli", *run_args(url, bench, run),
                               "--cot", "consistency", "--judge-url", jurl],
                              capture_output=True, text=True, cwd=REPO, timeout=240)
        model_auth = {r.headers.get("Authorization") for r in model.requests}
        judge_auth = {r.headers.get("Authorization") for r in judge.requests}
    assert model_auth == {"Basic " + traces[3]} and judge_auth == {"Basic " + traces[4]}  # basic auth was sent
    assert proc.returncode == 1, proc.stderr  # two samples failed on purpose
    got = {r["id"]: r for r in records(run)}
    assert "401" in got[recs[0]["id"]]["error"] and "500" in got[recs[1]["id"]]["error"]
    assert sum(r["error"] is None for r in got.values()) == 2  # the others were answered
    config = json.loads((run / "config.json").read_text())
    assert url.replace(f"bob:{secret}@", "***@") in config["command"]
    assert config["backend"]["base_urls"] == [model.url.replace("http://", "http://***@")]
    board = tmp_path / "board"
    lb = subprocess.run([sys.executable, "-m", "dt_eval.cli", "leaderboard", "build", str(run), "--out", str(board),
                         "--no-plots"], capture_output=True, text=True, cwd=REPO, timeout=240)
    assert lb.returncode == 0, lb.stderr
    files = [p for d in (run, board) for p in d.rglob("*") if p.is_file()]
    assert any(p.name == "cot.jsonl" for p in files) and any(p.suffix == ".json" for p in board.rglob("*"))
    for text, where in [(p.read_bytes().decode("utf-8", "replace"), str(p)) for p in files] + [
            (proc.stdout, "stdout"), (proc.stderr, "stderr"), (lb.stdout + lb.stderr, "leaderboard output")]:
        for t in traces:
            assert t not in text, f"{t} in {where}"
