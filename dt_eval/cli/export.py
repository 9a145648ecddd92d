"""`dt-eval export`: an official submission file from a run's per-sample records."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import add_tasks_dir, describe, use_tasks_dirs

DESCRIPTION = """\
Write an official submission file from a run's per-sample records.

The file is what the benchmark's official script (or the MMAR-Rubrics scorer) reads, so the
official number can be reproduced with the official script, or with `dt-eval score`."""

EXAMPLES = """\
dt-eval export runs/Qwen3-Omni-30B-A3B-Thinking --task mmau --out mmau-predictions.json
dt-eval export runs/Qwen3-Omni-30B-A3B-Thinking --task mmar --out mmar.jsonl --answers raw
dt-eval export runs/Qwen3-Omni-30B-A3B-Thinking --task mmar --format rubrics --out mmar-rubrics.jsonl"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="A run directory made by `dt-eval run`.")
    p.add_argument("--task", "-t", required=True, help="Which task of the run to export.")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="FILE",
                   help="Output file in the official submission format: .json is one JSON array, .jsonl JSON lines; "
                        "names the official script cannot read are refused (MMAU: .json; MMSU: .jsonl; MMAR: either).")
    p.add_argument("--format", dest="fmt", default="official", choices=("official", "rubrics"),
                   help="official (the benchmark's scorer input) or rubrics (MMAR-Rubrics: id, thinking_prediction, "
                        "answer_prediction).")
    p.add_argument("--answers", default="extracted", choices=("extracted", "raw"),
                   help="extracted: the extracted final answer (scores dt-eval's headline number); raw: the model's "
                        "post-reasoning output (scores the official raw number).")
    p.add_argument("--repeat", type=int, default=0, metavar="R", help="Which repeat to export.")
    add_tasks_dir(p, "Only for runs made before dt-eval recorded task configs in config.json.")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    from dt_eval.storage.export import export_run

    use_tasks_dirs(args.tasks_dir)
    n = export_run(args.run_dir, args.task, args.out, fmt=args.fmt, answers=args.answers, repeat=args.repeat)
    print(f"wrote {n} records to {args.out}")
