"""`dt-eval score`: a prediction file scored exactly as the benchmark's official script scores it
(dt_eval.api.score_file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import add_tasks_dir, describe, echo, use_tasks_dirs

DESCRIPTION = """\
Score a prediction file exactly like the benchmark's official script.

stdout holds what the official script prints for the file (same tables, order and rounding);
dt-eval's own notes go to stderr, labelled. With --extract, stdout holds two labelled blocks:
first the official script's rule on the whole string, then dt-eval's extraction block."""

EXAMPLES = """\
dt-eval score --task mmau -p predictions.json
dt-eval score --task mmar -p predictions.jsonl --extract -o mmar-score.json
dt-eval score --task ./tasks/my-benchmark.yaml -p predictions.json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("--task", "-t", required=True, metavar="NAME|YAML",
                   help="Task name (see `dt-eval tasks`) or a task YAML path.")
    p.add_argument("--predictions", "-p", required=True, type=Path, metavar="FILE",
                   help="Submission file in the benchmark's official format, read as its official script reads it "
                        "(MMAU: one JSON array with `model_output`; MMAR: .json array or .jsonl lines with "
                        "`answer_prediction`; MMSU: JSON lines with `response`).")
    p.add_argument("--extract", action="store_true",
                   help="Also extract the final answer from full model outputs (<think>/<reasoning>/<answer>, letters) "
                        "before the official match. Prints two labelled blocks: first the official script's rule "
                        "(whole string, no extraction), then dt-eval's extraction block.")
    p.add_argument("--strict", action="store_true",
                   help="Refuse records the official script silently drops but still prints a number for (MMSU null "
                        "or non-string responses) instead of scoring them its way.")
    p.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="Write the report as JSON (accuracy, items, breakdowns).")
    add_tasks_dir(p)
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    from dt_eval.api import score_file

    use_tasks_dirs(args.tasks_dir)
    report = score_file(args.task, args.predictions, extract=args.extract, strict=args.strict)
    for line in report.stdout_lines():
        print(line)
    for line in report.dt_eval_lines():
        echo(line, err=True)
    if args.output:
        import json

        from dt_eval import __version__
        from dt_eval.util.hashing import sha256_file

        data = report.to_json()
        data["predictions_file"] = str(args.predictions)
        data["predictions_sha256"] = sha256_file(args.predictions)
        data["dt_eval_version"] = __version__
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
