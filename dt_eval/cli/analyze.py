"""`dt-eval analyze gating|tokens` (a typer sub-app registered by dt_eval.cli).

Imports stay inside the commands: `dt-eval --help` loads neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="analyze",
    help="What training changed in a checkpoint: MoE gating shift by layer (gating), reasoning-token "
         "crystallization across checkpoints (tokens).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _csv(values: list[str] | None) -> list[str]:
    return [x.strip() for v in values or [] for x in v.split(",") if x.strip()]


def _ints(value: str | None, what: str) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(x) for x in _csv([value])]
    except ValueError:
        _fail(f"{what} takes comma-separated integers, got {value!r}")
        return None


@app.command("gating")
def gating_cmd(
    base: Annotated[str, typer.Option("--base", help="The base checkpoint (MoE; hub id or local path).")],
    tuned: Annotated[list[str], typer.Option("--tuned", help="Tuned checkpoint(s) of the same model; repeat or comma-separate.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory: gating.json, gating.md, plots.")],
    tasks: Annotated[Optional[str], typer.Option("--tasks", "-t", help="Comma-separated tasks whose prompts (+ audio) are routed, e.g. mmar. Without: router-weight change only.")] = None,
    responses: Annotated[Optional[Path], typer.Option("--responses", help="Run directory (`dt-eval run`) whose responses are teacher-forced after each prompt, so every model routes the same reasoning and answer tokens; its prompt settings are used.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N items of each task.")] = None,
    data_dir: Annotated[Optional[list[str]], typer.Option("--data-dir", help="Benchmark directory for all tasks, or TASK=DIR (as dt-eval run).")] = None,
    repeat: Annotated[int, typer.Option("--repeat", help="Which repeat of --responses to teacher-force.")] = 0,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, bfloat16, float16, auto.")] = None,
    store_dtype: Annotated[str, typer.Option("--store-dtype", help="Precision of the cached base router distributions: float16 (tokens x layers x experts x 2 bytes on disk) or float32.")] = "float16",
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model family preset for the prompt when no --responses run is given.")] = None,
    thinking: Annotated[str, typer.Option("--thinking", help="Prompt thinking switch when no --responses run is given: on or off.")] = "on",
    keep_cache: Annotated[bool, typer.Option("--keep-cache", help="Keep the base's per-token router distributions (OUTPUT/cache) for other measures.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Render PNG plots (needs matplotlib).")] = True,
) -> None:
    """MoE gating shift by layer: tuned vs base routing of the same tokens, and router-weight change.

    Per MoE layer and token segment (audio / prompt / reasoning / answer): Jensen-Shannon
    divergence of the router distributions, top-k Jaccard, expert-load entropy and its change.
    One model in memory at a time; the base's router distributions are cached on disk."""
    from dt_eval.analyze.runs import AnalyzeError
    from dt_eval.config import parse_data_dirs
    from dt_eval.tasks.config import UnknownTaskError

    tuned_list = _csv(tuned)
    if thinking not in ("on", "off"):
        _fail("--thinking must be on or off")
    try:
        from transformers.utils import logging as hf_logging

        from dt_eval.analyze.moe import NotMoEError
        from dt_eval.analyze.moe_gating import gating
        from dt_eval.analyze.tables import gating_markdown

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per checkpoint: our own lines say more

        result = gating(base, tuned_list, _csv([tasks]) if tasks else None, output=output, limit=limit,
                        data_dirs=parse_data_dirs(data_dir), responses=responses, repeat=repeat, device=device,
                        dtype=dtype, store_dtype=store_dtype, preset=preset, thinking=thinking,
                        keep_cache=keep_cache, plots=plots)
    except ImportError as e:
        _fail(f"the gating analysis needs torch and transformers: pip install 'dt-eval[hf]' ({e})")
        return
    except (AnalyzeError, NotMoEError, UnknownTaskError) as e:
        _fail(str(e))
        return
    except (ValueError, OSError) as e:  # missing data, a checkpoint transformers cannot find or read
        _fail(f"{type(e).__name__}: {e}")
        return
    typer.echo(gating_markdown(result))
    typer.echo(f"wrote {output / 'gating.json'}", err=True)


@app.command("tokens")
def tokens_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of the same items, one per checkpoint, in training order.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory: tokens.json, tokens.md, plots.")] = Path("analysis/tokens"),
    steps: Annotated[Optional[str], typer.Option("--steps", help="Training step of each run, comma-separated (default: the recipe checkpoint's dt_recipe.json, or step-N in the model path).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Count reasoning tokens with this tokenizer (path or hub id) when the runs have no logprobs; default: words.")] = None,
    ngram: Annotated[str, typer.Option("--ngram", help="Word n-gram orders for the distribution and crystallization, e.g. 2,3.")] = "2,3",
    threshold: Annotated[float, typer.Option("--threshold", help="Crystallization: share of items whose reasoning contains the n-gram.")] = 0.1,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Crystallization: largest later change of that share (absolute).")] = 0.1,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Render PNG plots (needs matplotlib).")] = True,
) -> None:
    """Reasoning-token crystallization across checkpoints (runs of the same items, in training order).

    Per checkpoint: reasoning length, token entropy (runs with logprobs), token and n-gram
    distribution divergence to the final and previous checkpoint, and the crystallized n-grams
    with the step each crystallized at (the emergence curve)."""
    from dt_eval.analyze.reasoning_tokens import tokens
    from dt_eval.analyze.runs import AnalyzeError
    from dt_eval.analyze.tables import tokens_markdown

    orders = _ints(ngram, "--ngram") or []
    try:
        result = tokens(runs, _ints(steps, "--steps"), output=output, tokenizer=tokenizer, orders=orders,
                        threshold=threshold, tolerance=tolerance, plots=plots)
    except AnalyzeError as e:
        _fail(str(e))
        return
    except (OSError, ValueError) as e:  # e.g. a --tokenizer that cannot be loaded
        _fail(f"{type(e).__name__}: {e}")
        return
    typer.echo(tokens_markdown(result))
    typer.echo(f"wrote {output / 'tokens.json'}", err=True)
