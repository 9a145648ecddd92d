"""`dt-eval report`: a run's tables recomputed from its samples.jsonl, or runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import describe

DESCRIPTION = """\
Print a run's tables again (recomputed from samples.jsonl), or compare runs.

Every number is recomputed from the per-sample records (and cot.jsonl for reasoning scores), so
a report never trusts a stale results.json."""

EXAMPLES = """\
dt-eval report runs/Qwen3-Omni-30B-A3B-Thinking
dt-eval report runs/base runs/tuned
dt-eval report runs/tuned --json > results.json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="One or more run directories; several are compared side by side.")
    p.add_argument("--json", dest="as_json", action="store_true", help="Print the recomputed results as JSON.")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    from dt_eval.api import load_run
    from dt_eval.reporting.tables import compare_runs, print_results

    loaded = [load_run(d).to_json_dict() for d in args.run_dirs]
    if args.as_json:
        import json

        print(json.dumps(loaded if len(loaded) > 1 else loaded[0], indent=2, ensure_ascii=False))
    elif len(loaded) == 1:
        print_results(loaded[0], run_dir=args.run_dirs[0])
    else:
        print(compare_runs(loaded, [str(d) for d in args.run_dirs]))
