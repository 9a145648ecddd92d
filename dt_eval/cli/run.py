"""`dt-eval run`: a model over tasks, resumable, scored as it goes (a thin layer over
dt_eval.api.plan_run / run_plan)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import add_tasks_dir, describe, use_tasks_dirs

DESCRIPTION = """\
Run a model over tasks with thinking-aware prompting; resumable; scores as it goes.

Tasks are ours (mmau, mmar, mmsu, ...; see `dt-eval tasks`) or lm-eval's generation tasks as
lm-eval:NAME (e.g. lm-eval:gsm8k, lm-eval:mmlu_pro) for text-reasoning retention checks: same
model and settings, the reasoning kept in samples.jsonl and stripped before lm-eval's filters.

Everything is checked before the model is loaded (tasks, data, the run directory), and a run
whose samples are all done does not load it at all. Rerun the same command to resume.

exit codes:
  0    every sample got an answer
  1    finished, but some samples failed (error records, counted as wrong; --retry-errors redoes them)
  2    bad options, data or run directory (nothing more was run)
  130  interrupted (finished samples are saved; rerun the same command to resume)"""

EXAMPLES = """\
dt-eval run --tasks mmau,mmar --model Qwen/Qwen3-Omni-30B-A3B-Thinking --base-url http://127.0.0.1:8000/v1 \\
    --data-dir mmau=/data/MMAU --data-dir mmar=/data/MMAR
dt-eval run --tasks mmau --model ./my-checkpoint --backend hf --device cuda --batch-size 16
dt-eval run --tasks mmar --model Qwen/Qwen3-Omni-30B-A3B-Thinking --base-url http://127.0.0.1:8000/v1 \\
    --repeats 4 --gen-kwargs temperature=0.6,top_p=0.95 --cot hybrid --judge-url http://127.0.0.1:8001/v1"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("--tasks", "-t", required=True, metavar="NAMES",
                   help="Comma-separated tasks, e.g. mmau,mmar,mmsu (or a task YAML path, or lm-eval:NAME).")
    p.add_argument("--model", "-m", required=True,
                   help="Hub id or local path (for openai: the served model name).")
    p.add_argument("--backend", "-b", default="openai", metavar="NAME",
                   help="hf (transformers), openai (any OpenAI-compatible server, e.g. vllm serve), vllm "
                        "(in-process engine), or an installed plugin's name (`dt-eval backends` lists them).")
    p.add_argument("--base-url", action="append", metavar="URL",
                   help="OpenAI-compatible endpoint(s); repeat or comma-separate to share the load across "
                        "servers. http://USER:PASSWORD@host/v1 is sent as HTTP basic auth (key: $DT_EVAL_API_KEY "
                        "or $OPENAI_API_KEY); credentials are never stored or printed.")
    p.add_argument("--output", "-o", type=Path, metavar="DIR",
                   help="Run directory (default runs/<model>). Rerun the same command to resume.")
    p.add_argument("--limit", type=int, metavar="N", help="Only the first N items of each task.")
    p.add_argument("--repeats", "-k", type=int, default=1, metavar="K",
                   help="Samples per item (with sampling): mean ± std, pass@K, majority vote.")
    p.add_argument("--concurrency", "-c", type=int, default=32, metavar="N", help="Requests in flight (openai backend).")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="Batch size (hf, vllm backends).")
    p.add_argument("--gen-kwargs", metavar="K=V,...",
                   help="Sampling overrides: temperature=0.6,top_p=0.95,max_tokens=8192 (or JSON). Unknown keys pass "
                        "through to the server.")
    p.add_argument("--thinking", default="on", choices=("on", "off"),
                   help="on: let the model reason first (native switch or prompt instruction); off: answer directly.")
    p.add_argument("--preset", metavar="FAMILY",
                   help="Model family preset (serve/presets; `dt-eval serve --list-presets`); detected from the "
                        "model name when omitted.")
    p.add_argument("--system-prompt", metavar="TEXT", help="Override the system prompt.")
    p.add_argument("--data-dir", action="append", metavar="DIR|TASK=DIR",
                   help="Benchmark directory (metadata + audio) for all tasks, or TASK=DIR (repeatable); default: "
                        "the task's environment variable, else the HF hub.")
    p.add_argument("--seed", type=int, default=0, help="Base seed; repeat r uses seed + r.")
    p.add_argument("--retry-errors", action="store_true",
                   help="Redo samples that failed (missing audio, server errors) on resume.")
    p.add_argument("--audio-window", type=float, metavar="SECONDS",
                   help="Trim clips to this many seconds (default: the model family's window; 0 = never trim).")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="Per-request timeout in seconds (openai).")
    p.add_argument("--max-retries", type=int, default=4, metavar="N",
                   help="Retries per request on timeouts / 5xx / malformed replies (openai).")
    p.add_argument("--device", help="hf backend: cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", help="hf/vllm: float32, bfloat16, float16, auto.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")
    p.add_argument("--logprobs", type=int, metavar="K",
                   help="Record each generated token's log-probability and entropy (top-K alternatives from a server; "
                        "exact with --backend hf) in samples.jsonl, for `dt-eval analyze tokens`; about 24 bytes per "
                        "token. Part of the run's settings: a resumed run must use the same K.")
    from dt_eval.reasoning.registry import cot_help  # the built-in scorers' names and summaries (cheap)

    p.add_argument("--cot", metavar="SCORERS",
                   help="After inference, score the reasoning (as `dt-eval rescore`). " + cot_help())
    p.add_argument("--judge-url", action="append", metavar="URL",
                   help="OpenAI-compatible judge endpoint for --cot (key: $DT_EVAL_JUDGE_API_KEY or $OPENAI_API_KEY; "
                        "USER:PASSWORD@ in the URL: HTTP basic auth).")
    p.add_argument("--judge-model", default="gpt-4o-2024-11-20", help="Judge model name for --cot.")
    p.add_argument("--embedder", metavar="MODEL",
                   help="sentence-transformers model for --cot (default: offline all-MiniLM-L6-v2).")
    p.add_argument("--lm-eval-include-path", metavar="DIR",
                   help="Folder(s) of extra lm-eval task configs for lm-eval:NAME tasks (as lm_eval --include_path).")
    add_tasks_dir(p)
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    import sys

    from dt_eval.api import plan_run, run_blocking, run_plan
    from dt_eval.config import parse_data_dirs
    from dt_eval.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SAMPLE_ERRORS, DtEvalError

    use_tasks_dirs(args.tasks_dir)
    plan = plan_run(  # checks every option before anything starts (a DtEvalError: exit 2)
        args.tasks, args.model, backend=args.backend, base_urls=args.base_url,
        data_dirs=parse_data_dirs(args.data_dir), limit=args.limit, repeats=args.repeats, output=args.output,
        command=args.argv, concurrency=args.concurrency, batch_size=args.batch_size, gen_kwargs=args.gen_kwargs,
        thinking=args.thinking, preset=args.preset, system_prompt=args.system_prompt, seed=args.seed,
        retry_errors=args.retry_errors, audio_window=args.audio_window, timeout=args.timeout,
        max_retries=args.max_retries, device=args.device, dtype=args.dtype, progress=not args.no_progress,
        cot=args.cot, judge_url=args.judge_url, judge_model=args.judge_model, embedder=args.embedder,
        lm_eval_include_path=args.lm_eval_include_path, logprobs=args.logprobs)
    try:
        results = run_blocking(lambda: run_plan(plan))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished samples are saved in {plan.opts.output}. Rerun the same command to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except DtEvalError as e:
        from dt_eval.integrations.lmeval.textrun import LMEvalTaskError

        if isinstance(e, LMEvalTaskError):
            from dt_eval.cli.common import fail

            fail(f"{e}\nfinished generations are saved in {plan.opts.output}; rerun the same command to resume.")
        raise
    from dt_eval.reporting.tables import error_counts, print_results

    data = results.to_json_dict()
    print_results(data, run_dir=plan.opts.output)
    # the run is saved but not clean: scripts must not take it as done
    return EXIT_SAMPLE_ERRORS if error_counts(data) else EXIT_OK
