"""`dt-eval analyze gating|tokens`: what training changed in a checkpoint. torch and transformers
load inside the commands only."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import Parser, describe, echo, fail, show_help, split_csv

DESCRIPTION = """\
What training changed in a checkpoint: MoE gating shift by layer (gating), reasoning-token
crystallization across checkpoints (tokens)."""

GATING_DESCRIPTION = """\
MoE gating shift by layer: tuned vs base routing of the same tokens, and router-weight change.

Per MoE layer and token segment (audio / prompt / reasoning / answer): Jensen-Shannon
divergence of the router distributions, top-k Jaccard, expert-load entropy and its change.
One model in memory at a time; the base's router distributions are cached on disk."""

GATING_EXAMPLES = """\
dt-eval analyze gating --base Qwen/Qwen3-Omni-30B-A3B-Thinking --tuned ckpt/step-400 --tasks mmar --limit 50 \\
    --responses runs/step-400 --output analysis/gating"""

TOKENS_DESCRIPTION = """\
Reasoning-token crystallization across checkpoints (runs of the same items, in training order).

Per checkpoint: reasoning length, token entropy (runs with logprobs), token and n-gram
distribution divergence to the final and previous checkpoint, and the crystallized n-grams
with the step each crystallized at (the emergence curve)."""

TOKENS_EXAMPLES = """\
dt-eval analyze tokens runs/step-100 runs/step-200 runs/step-400 --output analysis/tokens
dt-eval analyze tokens runs/a runs/b --steps 100,200 --tokenizer Qwen/Qwen3-Omni-30B-A3B-Thinking --no-plots"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, "dt-eval analyze gating --help\ndt-eval analyze tokens --help")
    sub = p.add_subparsers(dest="analyze_command", metavar="COMMAND", title="commands", parser_class=Parser)

    g = sub.add_parser("gating", help="MoE gating shift by layer: tuned vs base routing of the same tokens.")
    describe(g, GATING_DESCRIPTION, GATING_EXAMPLES)
    g.add_argument("--base", required=True, metavar="MODEL", help="The base checkpoint (MoE; hub id or local path).")
    g.add_argument("--tuned", required=True, action="append", metavar="MODEL",
                   help="Tuned checkpoint(s) of the same model; repeat or comma-separate.")
    g.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                   help="Output directory: gating.json, gating.md, plots.")
    g.add_argument("--tasks", "-t", metavar="NAMES",
                   help="Comma-separated tasks whose prompts (+ audio) are routed, e.g. mmar. Without: router-weight "
                        "change only.")
    g.add_argument("--responses", type=Path, metavar="RUN_DIR",
                   help="Run directory (`dt-eval run`) whose responses are teacher-forced after each prompt, so every "
                        "model routes the same reasoning and answer tokens; its prompt settings are used.")
    g.add_argument("--limit", type=int, metavar="N", help="Only the first N items of each task.")
    g.add_argument("--data-dir", action="append", metavar="DIR|TASK=DIR",
                   help="Benchmark directory for all tasks, or TASK=DIR (as dt-eval run).")
    g.add_argument("--repeat", type=int, default=0, metavar="R", help="Which repeat of --responses to teacher-force.")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available).")
    g.add_argument("--dtype", help="float32, bfloat16, float16, auto.")
    g.add_argument("--store-dtype", default="float16", choices=("float16", "float32"),
                   help="Precision of the cached base router distributions: float16 (tokens x layers x experts x 2 "
                        "bytes on disk) or float32.")
    g.add_argument("--preset", metavar="FAMILY",
                   help="Model family preset for the prompt when no --responses run is given.")
    g.add_argument("--thinking", default="on", choices=("on", "off"),
                   help="Prompt thinking switch when no --responses run is given: on or off.")
    g.add_argument("--keep-cache", action="store_true",
                   help="Keep the base's per-token router distributions (OUTPUT/cache) for other measures.")
    g.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="Render PNG plots (needs matplotlib).")
    g.set_defaults(run=gating)

    t = sub.add_parser("tokens", help="Reasoning-token crystallization across checkpoints.")
    describe(t, TOKENS_DESCRIPTION, TOKENS_EXAMPLES)
    t.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="Run directories of the same items, one per checkpoint, in training order.")
    t.add_argument("--output", "-o", type=Path, default=Path("analysis/tokens"), metavar="DIR",
                   help="Output directory: tokens.json, tokens.md, plots.")
    t.add_argument("--steps", metavar="N,N,...",
                   help="Training step of each run, comma-separated (default: the recipe checkpoint's dt_recipe.json, "
                        "or step-N in the model path).")
    t.add_argument("--tokenizer", metavar="MODEL",
                   help="Count reasoning tokens with this tokenizer (path or hub id); default: the recorded tokens "
                        "of runs with logprobs, else words.")
    t.add_argument("--ngram", default="2,3", metavar="N,N,...",
                   help="Word n-gram orders for the distribution and crystallization, e.g. 2,3.")
    t.add_argument("--threshold", type=float, default=0.1,
                   help="Crystallization: share of items whose reasoning contains the n-gram.")
    t.add_argument("--tolerance", type=float, default=0.1,
                   help="Crystallization: largest later change of that share (absolute).")
    t.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="Render PNG plots (needs matplotlib).")
    t.set_defaults(run=tokens)
    p.set_defaults(run=show_help(p))


def _ints(value: str | None, flag: str) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in split_csv(value)]
    except ValueError:
        fail(f"{flag} takes comma-separated integers, got {value!r}")


def gating(args: argparse.Namespace) -> None:
    from dt_eval.analyze.runs import AnalyzeError
    from dt_eval.config import parse_data_dirs
    from dt_eval.tasks.config import UnknownTaskError

    try:
        from transformers.utils import logging as hf_logging

        from dt_eval.analyze.moe import NotMoEError
        from dt_eval.analyze.moe_gating import gating as measure_gating
        from dt_eval.analyze.tables import gating_markdown

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per checkpoint: our own lines say more
        result = measure_gating(
            args.base, split_csv(args.tuned), split_csv(args.tasks) or None, output=args.output, limit=args.limit,
            data_dirs=parse_data_dirs(args.data_dir), responses=args.responses, repeat=args.repeat,
            device=args.device, dtype=args.dtype, store_dtype=args.store_dtype, preset=args.preset,
            thinking=args.thinking, keep_cache=args.keep_cache, plots=args.plots)
    except ImportError as e:
        fail(f"the gating analysis needs torch and transformers: pip install 'dt-eval[hf]' ({e})")
    except (AnalyzeError, NotMoEError, UnknownTaskError) as e:
        fail(str(e))
    except (ValueError, OSError) as e:  # missing data, a checkpoint transformers cannot find or read
        fail(f"{type(e).__name__}: {e}")
    print(gating_markdown(result))
    echo(f"wrote {args.output / 'gating.json'}", err=True)


def tokens(args: argparse.Namespace) -> None:
    from dt_eval.analyze.reasoning_tokens import tokens as measure_tokens
    from dt_eval.analyze.runs import AnalyzeError
    from dt_eval.analyze.tables import tokens_markdown

    orders = _ints(args.ngram, "--ngram") or []
    try:
        result = measure_tokens(args.runs, _ints(args.steps, "--steps"), output=args.output, tokenizer=args.tokenizer,
                                orders=orders, threshold=args.threshold, tolerance=args.tolerance, plots=args.plots)
    except AnalyzeError as e:
        fail(str(e))
    except (OSError, ValueError) as e:  # e.g. a --tokenizer that cannot be loaded
        fail(f"{type(e).__name__}: {e}")
    print(tokens_markdown(result))
    echo(f"wrote {args.output / 'tokens.json'}", err=True)
