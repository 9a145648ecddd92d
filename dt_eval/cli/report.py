"""`dt-eval report`: a run's tables recomputed from its samples.jsonl, or runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import describe

DESCRIPTION = """\
Print a run's tables again (recomputed from samples.jsonl), or compare runs.

Every number is recomputed from the per-sample records (and cot.jsonl for reasoning scores), so
a report never trusts a stale results.json. Each accuracy has its 95% CI (Wilson over items; with
repeats, over items with the repeats averaged).

Several runs: each is compared with the first on the items both scored: the difference with its
95% CI (paired bootstrap), p from McNemar's exact test (one sample per item) or a paired
bootstrap (repeats), and how many items flipped each way. Runs on different metadata files
are refused unless --allow-different-data."""

EXAMPLES = """\
dt-eval report runs/Qwen3-Omni-30B-A3B-Thinking
dt-eval report runs/base runs/tuned
dt-eval report runs/base runs/tuned --json > comparison.json
dt-eval report runs/tuned --json > results.json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="One or more run directories; several are compared side by side.")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="Print the recomputed results (one run) or the comparison with each run's results (several) "
                        "as JSON.")
    p.add_argument("--allow-different-data", action="store_true",
                   help="Compare runs made on different metadata files (their numbers are not comparable item by "
                        "item; the comparison says so).")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    import json

    from dt_eval.api import load_run

    if len(args.run_dirs) > 1:
        from dt_eval.reporting.compare import compare_runs

        cmp = compare_runs(args.run_dirs, allow_different_data=args.allow_different_data)
        print(json.dumps(cmp.to_json_dict(results=True), indent=2, ensure_ascii=False) if args.as_json
              else cmp.render())
        return
    from dt_eval.reporting.tables import print_results

    results = load_run(args.run_dirs[0]).to_json_dict()
    if args.as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print_results(results, run_dir=args.run_dirs[0])
