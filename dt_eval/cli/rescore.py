"""`dt-eval rescore`: reasoning scores of a finished run (dt_eval.api.rescore), no re-inference."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import describe, fail, positive_int, split_csv

DESCRIPTION = """\
Score the reasoning of a finished run (no re-inference): hybrid reward, MMAR-Rubrics, ...

Writes RUN_DIR/cot.jsonl (one line per sample and scorer, raw judge replies included) and
merges per-task aggregates into RUN_DIR/results.json. The judge API key comes from
$DT_EVAL_JUDGE_API_KEY or $OPENAI_API_KEY (never from the command line or the records)."""

EXAMPLES = """\
dt-eval rescore runs/Qwen3-Omni-30B-A3B-Thinking --cot format
dt-eval rescore runs/Qwen3-Omni-30B-A3B-Thinking --cot hybrid,rubrics --judge-url http://127.0.0.1:8001/v1 \\
    --judge-model Qwen/Qwen3-32B"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dt_eval.reasoning.judge import DEFAULT_JUDGE_MODEL
    from dt_eval.reasoning.registry import cot_help  # the built-in scorers' names and summaries (cheap)
    from dt_eval.reasoning.rubrics import OFFICIAL_ATTEMPTS

    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="A run directory made by `dt-eval run`.")
    p.add_argument("--cot", default="hybrid", metavar="SCORERS", help=cot_help())
    p.add_argument("--judge-url", action="append", metavar="URL",
                   help="OpenAI-compatible judge endpoint(s) (.../v1); repeat or comma-separate.")
    p.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL, help="Judge model name as the endpoint serves it.")
    p.add_argument("--embedder", metavar="MODEL",
                   help="sentence-transformers model (local path or hub name, e.g. BAAI/bge-m3); default: the verified "
                        "offline all-MiniLM-L6-v2.")
    p.add_argument("--weight", type=float, default=0.5, help="w in w*LLM + (1-w)*embedding.")
    p.add_argument("--references", type=Path, metavar="FILE",
                   help="Reference-chain file (dt-eval refs build); default: the task config's, else the item's own "
                        "field (MMAR thinking).")
    p.add_argument("--tasks", "-t", metavar="NAMES", help="Only these tasks of the run (comma-separated).")
    p.add_argument("--judge-concurrency", type=int, default=16, metavar="N", help="Judge requests in flight.")
    p.add_argument("--judge-timeout", type=float, default=120.0, metavar="SECONDS", help="Seconds per judge request.")
    p.add_argument("--judge-max-retries", type=int, default=3, metavar="N",
                   help="HTTP retries per judge request (timeouts, 5xx, 429).")
    p.add_argument("--judge-parse-retries", type=int, default=2, metavar="N",
                   help="Extra requests when a reply cannot be parsed; then the item is unscored (rubrics: see "
                        "--rubrics-attempts).")
    p.add_argument("--rubrics-attempts", type=positive_int, default=OFFICIAL_ATTEMPTS, metavar="N",
                   help="Rubrics: requests per rater for a parseable reply (the official scorer's budget: 20).")
    p.add_argument("--rubrics-full-thinking", action="store_true",
                   help="Rubrics: judge thinking over 10,000 characters in full (as the official script does with such "
                        "a file) instead of cut to 10,000 (as dt-eval's rubrics export writes it).")
    p.add_argument("--judge-max-tokens", type=int, default=2048, metavar="N", help="max_tokens of a judge reply.")
    p.add_argument("--judge-temperature", type=float, default=0.0, metavar="T", help="Judge sampling temperature.")
    p.add_argument("--judge-seed", type=int, default=42, metavar="N", help="Judge sampling seed.")
    p.add_argument("--judge-extra-body", metavar="JSON",
                   help='JSON merged into each judge request, e.g. \'{"chat_template_kwargs": {"enable_thinking": '
                        "false}}'.")
    p.add_argument("--judge-cache", type=Path, metavar="FILE",
                   help="SQLite judge cache (default RUN_DIR/judge_cache.sqlite).")
    p.add_argument("--no-judge-cache", action="store_true", help="Do not read or write the judge cache.")
    p.add_argument("--json", dest="as_json", action="store_true", help="Print the aggregates as JSON.")
    p.set_defaults(run=main)


def json_object(text: str | None, flag: str) -> dict:
    """A JSON-object option's value ({} when not given)."""
    if not text:
        return {}
    import json

    try:
        value = json.loads(text)
    except ValueError as e:
        fail(f"{flag} must be a JSON object: {e}")
    if not isinstance(value, dict):
        fail(f"{flag} must be a JSON object")
    return value


def main(args: argparse.Namespace) -> None:
    from dt_eval.api import rescore
    from dt_eval.reporting.cot_table import cot_table_lines, rubrics_official_lines

    try:
        aggregates = rescore(
            args.run_dir, args.cot, judge_url=split_csv(args.judge_url) or None, judge_model=args.judge_model,
            embedder=args.embedder, weight=args.weight,
            references=str(args.references) if args.references else None,
            tasks=split_csv(args.tasks) or None, judge_concurrency=args.judge_concurrency,
            judge_timeout_s=args.judge_timeout, judge_max_retries=args.judge_max_retries,
            judge_parse_retries=args.judge_parse_retries, judge_max_tokens=args.judge_max_tokens,
            judge_temperature=args.judge_temperature, judge_seed=args.judge_seed,
            judge_extra_body=json_object(args.judge_extra_body, "--judge-extra-body"),
            judge_cache=False if args.no_judge_cache else args.judge_cache, rubrics_attempts=args.rubrics_attempts,
            rubrics_cut_thinking=not args.rubrics_full_thinking)
    except (ValueError, OSError) as e:  # besides the DtEvalErrors (bad run, embedder, refs, templates)
        fail(str(e))
    if args.as_json:
        import json

        print(json.dumps(aggregates, indent=2, ensure_ascii=False))
        return
    for line in cot_table_lines(aggregates) + rubrics_official_lines(aggregates):
        print(line)
    print(f"per-sample scores: {args.run_dir / 'cot.jsonl'}")
