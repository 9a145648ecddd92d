"""CLI commands of the reasoning scorers: `dt-eval rescore` and `dt-eval refs build` (`dt-eval run
--cot` goes through dt_eval.api). Registered in dt_eval/cli/__init__.py. Importing this module is cheap:
torch and sentence-transformers load only inside the commands that need them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dt_eval.reasoning.judge import DEFAULT_JUDGE_MODEL
from dt_eval.reasoning.registry import cot_help
from dt_eval.reasoning.rubrics import OFFICIAL_ATTEMPTS

_COT_HELP = cot_help()  # from the registry (built-ins and in-process registrations)


def _fail(msg: str, code: int = 2) -> None:
    from dt_eval.util.redact import redact_text

    typer.echo(f"error: {redact_text(msg)}", err=True)
    raise typer.Exit(code)


def _csv(values: list[str] | None) -> list[str]:
    return [x.strip() for v in values or [] for x in v.split(",") if x.strip()]


def _fmt(v: Any, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def cot_columns(agg: dict[str, Any]) -> dict[str, str]:
    """Summary-table cells for one task's cot aggregates (used by `dt-eval report` too)."""
    row: dict[str, str] = {}
    h = agg.get("hybrid")
    if h:
        row["hybrid"] = _fmt(h.get("mean"))
        row["emb"] = _fmt(h.get("emb_mean"))
        row["llm"] = _fmt(h.get("llm_mean"))
    if agg.get("stage2"):
        row["stage2 (llm)"] = _fmt(agg["stage2"].get("mean"))
    for name, col in (("embedding", "emb (all)"), ("evaluator", "llm (all)"), ("consistency", "consistency"),
                      ("format", "format")):
        if agg.get(name):
            row[col] = _fmt(agg[name].get("mean"))
    if agg.get("rubrics"):
        row["rubrics"] = _fmt(agg["rubrics"].get("score"), digits=2)
    shown = {"hybrid", "stage2", "embedding", "evaluator", "consistency", "format", "rubrics"}
    for name in agg.get("scorers") or []:  # plugin scorers: their mean, under their name
        if name not in shown and agg.get(name):
            row[name] = _fmt(agg[name].get("mean"))
    if agg.get("scorers"):
        row["cot unscored"] = str(agg.get("unscored", 0))
    return row


def print_cot_table(aggregates: dict[str, dict[str, Any]]) -> None:
    from tabulate import tabulate

    rows = [{"task": task, "samples": agg.get("samples")} | cot_columns(agg) for task, agg in aggregates.items()]
    typer.echo(tabulate(rows, headers="keys"))
    typer.echo("hybrid/stage2: gated by correctness (0 for wrong answers), mean over scored samples; emb/llm: "
               "components; rubrics: MMAR-Rubrics score x100; unscored samples are excluded and counted.")


def print_rubrics_official(aggregates: dict[str, dict[str, Any]]) -> None:
    """Per task with rubric scores: what the official MMAR-Rubrics script prints, then our notes."""
    from dt_eval.reasoning.rubrics import dt_eval_lines, official_lines

    for task, agg in aggregates.items():
        r = agg.get("rubrics")
        if not r or not (r.get("scored") or r.get("unscored")):
            continue
        typer.echo(f"\n{task}: MMAR-Rubrics, as the official scorer prints it")
        for line in official_lines(r) + dt_eval_lines(r):
            typer.echo(line)


def _extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        val = json.loads(text)
    except ValueError as e:
        _fail(f"--judge-extra-body must be a JSON object: {e}")
    if not isinstance(val, dict):
        _fail("--judge-extra-body must be a JSON object")
    return val


def rescore_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `dt-eval run`.")],
    cot: Annotated[str, typer.Option("--cot", help=_COT_HELP)] = "hybrid",
    judge_url: Annotated[Optional[list[str]], typer.Option("--judge-url", help="OpenAI-compatible judge endpoint(s) (…/v1); repeat or comma-separate.")] = None,
    judge_model: Annotated[str, typer.Option("--judge-model", help="Judge model name as the endpoint serves it.")] = DEFAULT_JUDGE_MODEL,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="sentence-transformers model (local path or hub name, e.g. BAAI/bge-m3); default: the verified offline all-MiniLM-L6-v2.")] = None,
    weight: Annotated[float, typer.Option("--weight", help="w in w*LLM + (1-w)*embedding.")] = 0.5,
    references: Annotated[Optional[Path], typer.Option("--references", help="Reference-chain file (dt-eval refs build); default: the task config's, else the item's own field (MMAR thinking).")] = None,
    tasks: Annotated[Optional[str], typer.Option("--tasks", "-t", help="Only these tasks of the run (comma-separated).")] = None,
    judge_concurrency: Annotated[int, typer.Option("--judge-concurrency", help="Judge requests in flight.")] = 16,
    judge_timeout: Annotated[float, typer.Option("--judge-timeout", help="Seconds per judge request.")] = 120.0,
    judge_max_retries: Annotated[int, typer.Option("--judge-max-retries", help="HTTP retries per judge request (timeouts, 5xx, 429).")] = 3,
    judge_parse_retries: Annotated[int, typer.Option("--judge-parse-retries", help="Extra requests when a reply cannot be parsed; then the item is unscored (rubrics: see --rubrics-attempts).")] = 2,
    rubrics_attempts: Annotated[int, typer.Option("--rubrics-attempts", min=1, help="Rubrics: requests per rater for a parseable reply (the official scorer's budget: 20).")] = OFFICIAL_ATTEMPTS,
    rubrics_full_thinking: Annotated[bool, typer.Option("--rubrics-full-thinking", help="Rubrics: judge thinking over 10,000 characters in full (as the official script does with such a file) instead of cut to 10,000 (as dt-eval's rubrics export writes it).")] = False,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", help="max_tokens of a judge reply.")] = 2048,
    judge_temperature: Annotated[float, typer.Option("--judge-temperature")] = 0.0,
    judge_seed: Annotated[int, typer.Option("--judge-seed")] = 42,
    judge_extra_body: Annotated[Optional[str], typer.Option("--judge-extra-body", help='JSON merged into each judge request, e.g. \'{"chat_template_kwargs": {"enable_thinking": false}}\'.')] = None,
    judge_cache: Annotated[Optional[Path], typer.Option("--judge-cache", help="SQLite judge cache (default RUN_DIR/judge_cache.sqlite).")] = None,
    no_judge_cache: Annotated[bool, typer.Option("--no-judge-cache", help="Do not read or write the judge cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the aggregates as JSON.")] = False,
) -> None:
    """Score the reasoning of a finished run (no re-inference): hybrid reward, MMAR-Rubrics, ...

    Writes RUN_DIR/cot.jsonl (one line per sample and scorer, raw judge replies included) and
    merges per-task aggregates into RUN_DIR/results.json. The judge API key comes from
    $DT_EVAL_JUDGE_API_KEY or $OPENAI_API_KEY (never from the command line or the records).
    """
    from dt_eval.api import rescore

    try:
        aggregates = rescore(
            run_dir, cot, judge_url=_csv(judge_url) or None, judge_model=judge_model, embedder=embedder,
            weight=weight, references=(
                str(references) if references else None), tasks=_csv([tasks]) if tasks else None,
            judge_concurrency=judge_concurrency, judge_timeout_s=judge_timeout, judge_max_retries=judge_max_retries,
            judge_parse_retries=judge_parse_retries, judge_max_tokens=judge_max_tokens,
            judge_temperature=judge_temperature, judge_seed=judge_seed, judge_extra_body=_extra_body(judge_extra_body),
            judge_cache=False if no_judge_cache else judge_cache, rubrics_attempts=rubrics_attempts,
            rubrics_cut_thinking=not rubrics_full_thinking)
    except (ValueError, OSError) as e:  # besides the DtEvalErrors (bad run, embedder, refs, templates)
        _fail(str(e))
        return
    if as_json:
        typer.echo(json.dumps(aggregates, indent=2, ensure_ascii=False))
    else:
        print_cot_table(aggregates)
        print_rubrics_official(aggregates)
        typer.echo(f"per-sample scores: {run_dir / 'cot.jsonl'}")


def refs_build_cmd(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name or task YAML path (answers must be available).")],
    teacher_url: Annotated[list[str], typer.Option("--teacher-url", help="OpenAI-compatible endpoint of the teacher model (…/v1).")],
    teacher_model: Annotated[str, typer.Option("--teacher-model", help="Teacher model name as served.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Reference file to write or extend (default refs/<task>.<teacher>.refs.jsonl).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Benchmark directory (default: the task's env var, else the hub).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N items.")] = None,
    caption_field: Annotated[Optional[str], typer.Option("--caption-field", help="Metadata field holding a caption of the clip.")] = None,
    captions: Annotated[Optional[Path], typer.Option("--captions", help='JSONL of {"id": ..., "caption": ...} (e.g. from an audio captioner).')] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Teacher requests in flight.")] = 16,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 300.0,
    max_retries: Annotated[int, typer.Option("--max-retries")] = 3,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 1024,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    extra_body: Annotated[Optional[str], typer.Option("--extra-body", help="JSON merged into each request.")] = None,
) -> None:
    """Write a versioned reference-chain file from a teacher model (question, options, answer, caption).

    Resumable: rerun the same command to fill in items that are missing. Point a task config
    at the file with `references: PATH`, or pass `dt-eval rescore --references PATH`.
    """
    import asyncio

    from dt_eval.reasoning.judge import JudgeClient, JudgeConfig
    from dt_eval.reasoning.refs import RefItem, RefsError, build_references
    from dt_eval.tasks.config import UnknownTaskError, load_task
    from dt_eval.tasks.data import DataError, load_task_data

    try:
        cfg = load_task(task)
    except UnknownTaskError as e:
        _fail(str(e))
        return
    if not cfg.answers_available:
        _fail(f"{cfg.name}: answers are hidden; a reference chain needs the correct answer")
    try:
        loaded = load_task_data(cfg, data_dir, limit=limit)
    except (DataError, OSError, ImportError) as e:
        _fail(f"cannot load {cfg.name}: {e}")
        return
    caption_map: dict[str, str] = {}
    if captions:
        for line in captions.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                caption_map[str(rec["id"])] = str(rec.get("caption") or "")
    items = []
    for it in loaded.items:
        if it.answer is None:
            continue
        cap = caption_map.get(it.id) or (str(it.raw.get(caption_field) or "") if caption_field else None)
        items.append(RefItem(id=it.id, question=it.question, choices=list(it.choices), answer=it.answer, caption=cap))
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in teacher_model)
    out = out or Path("refs") / f"{cfg.name}.{safe_model}.refs.jsonl"
    jcfg = JudgeConfig(base_url=_csv(teacher_url), model=teacher_model, temperature=temperature, seed=seed,
                       max_tokens=max_tokens, concurrency=concurrency, timeout_s=timeout, max_retries=max_retries,
                       extra_body=_extra_body(extra_body), cache_path=Path(str(out) + ".cache.sqlite"))

    async def go():
        async with JudgeClient(jcfg) as teacher:
            return await build_references(items, teacher, out, task=cfg.name)

    try:
        report = asyncio.run(go())
    except RefsError as e:
        _fail(str(e))
        return
    typer.echo(f"{out}: {report.written} written, {report.skipped_existing} already there, "
               f"{len(report.failed)} failed, {report.judge_calls} teacher request(s)")
    for rid, err in sorted(report.failed.items())[:10]:
        typer.echo(f"  failed {rid}: {err}", err=True)
    if report.failed:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `dt-eval rescore` / `dt-eval refs build`")
