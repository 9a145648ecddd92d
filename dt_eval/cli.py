"""The `dt-eval` command line. Heavy modules (torch, vllm, transformers) are imported only
inside the commands that need them, so `dt-eval --help` and `dt-eval score` start fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__

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


def fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


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


@app.command("tasks")
def tasks_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the tasks: item count, data source, metric and scorer."""
    from .taskconfig import load_task, task_names

    rows = []
    for name in task_names():
        cfg = load_task(name)
        src = []
        if cfg.data.local:
            src.append(f"local {cfg.data.local.metadata}")
        if cfg.data.hub:
            src.append(f"hub {cfg.data.hub.dataset}")
        rows.append(
            {
                "task": name,
                "items": cfg.data.expected_items,
                "source": " | ".join(src),
                "metric": cfg.metric if cfg.answers_available else "export only (answers hidden)",
                "scorer": cfg.scorer,
                "version": cfg.version,
                "description": cfg.description,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from tabulate import tabulate

    typer.echo(tabulate([{k: r[k] for k in ("task", "items", "source", "metric", "version")} for r in rows],
                        headers="keys"))


@app.command("score")
def score_cmd(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name (see `dt-eval tasks`) or a task YAML path.")],
    predictions: Annotated[
        Path,
        typer.Option(
            "--predictions", "-p",
            help="Submission file in the benchmark's official format (MMAU: JSON array with "
            "`model_output`; MMAR: JSON/JSONL with `answer_prediction`; MMSU: JSONL with `response`).",
        ),
    ],
    extract: Annotated[
        bool,
        typer.Option(
            "--extract",
            help="Extract the final answer from full model outputs (<think>/<reasoning>/<answer>, "
            "letters) before the official match. Without it the whole string is matched, as the "
            "official script does; with it the official raw number is printed beside.",
        ),
    ] = False,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the report as JSON (accuracy, items, breakdowns).")
    ] = None,
) -> None:
    """Score a prediction file exactly like the benchmark's official script."""
    from .scoring.submission import SubmissionError, file_sha256, read_prediction_file, score_records
    from .taskconfig import UnknownTaskError, load_task

    try:
        cfg = load_task(task)
        records = read_prediction_file(predictions)
        report = score_records(cfg, records, extract_answers=extract)
    except (UnknownTaskError, SubmissionError) as e:
        fail(str(e))
        return
    for line in report.official_lines():
        typer.echo(line)
    for line in report.dt_eval_lines():
        typer.echo(line, err=True)
    if output:
        data = report.to_json()
        data["predictions_file"] = str(predictions)
        data["predictions_sha256"] = file_sha256(predictions)
        data["dt_eval_version"] = __version__
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `dt-eval score ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
