"""`dt-eval refs build`: a reference-chain file for the hybrid reward, written by a teacher model."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import Parser, describe, fail, show_help, split_csv

DESCRIPTION = """\
Reference reasoning chains for the hybrid reward."""

BUILD_DESCRIPTION = """\
Write a versioned reference-chain file from a teacher model (question, options, answer, caption).

Resumable: rerun the same command to fill in items that are missing. Point a task config at
the file with `references: PATH`, or pass `dt-eval rescore --references PATH`. Exits 1 when
some items failed (they are listed; rerun to retry them)."""

BUILD_EXAMPLES = """\
dt-eval refs build --task mmau --teacher-url http://127.0.0.1:8001/v1 --teacher-model Qwen/Qwen3-32B \\
    --data-dir /data/MMAU --captions mmau-captions.jsonl"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, "dt-eval refs build --help")
    sub = p.add_subparsers(dest="refs_command", metavar="COMMAND", title="commands", parser_class=Parser)
    b = sub.add_parser("build", help="Write or extend a reference-chain file from a teacher model.")
    describe(b, BUILD_DESCRIPTION, BUILD_EXAMPLES)
    b.add_argument("--task", "-t", required=True, metavar="NAME|YAML",
                   help="Task name or task YAML path (answers must be available).")
    b.add_argument("--teacher-url", required=True, action="append", metavar="URL",
                   help="OpenAI-compatible endpoint of the teacher model (.../v1); repeat or comma-separate.")
    b.add_argument("--teacher-model", required=True, metavar="NAME", help="Teacher model name as served.")
    b.add_argument("--out", "-o", type=Path, metavar="FILE",
                   help="Reference file to write or extend (default refs/<task>.<teacher>.refs.jsonl).")
    b.add_argument("--data-dir", metavar="DIR", help="Benchmark directory (default: the task's env var, else the hub).")
    b.add_argument("--limit", type=int, metavar="N", help="Only the first N items.")
    b.add_argument("--caption-field", metavar="FIELD", help="Metadata field holding a caption of the clip.")
    b.add_argument("--captions", type=Path, metavar="FILE",
                   help='JSONL of {"id": ..., "caption": ...} (e.g. from an audio captioner).')
    b.add_argument("--concurrency", type=int, default=16, metavar="N", help="Teacher requests in flight.")
    b.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="Seconds per request.")
    b.add_argument("--max-retries", type=int, default=3, metavar="N", help="HTTP retries per request.")
    b.add_argument("--max-tokens", type=int, default=1024, metavar="N", help="max_tokens of a teacher reply.")
    b.add_argument("--temperature", type=float, default=0.0, metavar="T", help="Teacher sampling temperature.")
    b.add_argument("--seed", type=int, default=42, help="Teacher sampling seed.")
    b.add_argument("--extra-body", metavar="JSON", help="JSON merged into each request.")
    b.set_defaults(run=build)
    p.set_defaults(run=show_help(p))


def build(args: argparse.Namespace) -> int | None:
    import asyncio
    import json
    import sys

    from dt_eval.cli.rescore import json_object
    from dt_eval.reasoning.judge import JudgeClient, JudgeConfig
    from dt_eval.reasoning.refs import RefItem, build_references
    from dt_eval.tasks.config import load_task
    from dt_eval.tasks.data import DataError, load_task_data

    cfg = load_task(args.task)
    if not cfg.answers_available:
        fail(f"{cfg.name}: answers are hidden; a reference chain needs the correct answer")
    try:
        loaded = load_task_data(cfg, args.data_dir, limit=args.limit)
    except (DataError, OSError, ImportError) as e:
        fail(f"cannot load {cfg.name}: {e}")
    caption_map: dict[str, str] = {}
    if args.captions:
        for line in args.captions.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                caption_map[str(rec["id"])] = str(rec.get("caption") or "")
    items = []
    for it in loaded.items:
        if it.answer is None:
            continue
        cap = caption_map.get(it.id) or (str(it.raw.get(args.caption_field) or "") if args.caption_field else None)
        items.append(RefItem(id=it.id, question=it.question, choices=list(it.choices), answer=it.answer, caption=cap))
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.teacher_model)
    out = args.out or Path("refs") / f"{cfg.name}.{safe_model}.refs.jsonl"
    jcfg = JudgeConfig(base_url=split_csv(args.teacher_url), model=args.teacher_model, temperature=args.temperature,
                       seed=args.seed, max_tokens=args.max_tokens, concurrency=args.concurrency,
                       timeout_s=args.timeout, max_retries=args.max_retries,
                       extra_body=json_object(args.extra_body, "--extra-body"),
                       cache_path=Path(str(out) + ".cache.sqlite"))

    async def go():
        async with JudgeClient(jcfg) as teacher:
            return await build_references(items, teacher, out, task=cfg.name)

    report = asyncio.run(go())  # a RefsError (a DtEvalError) ends as "error: ..." in dt_eval.cli
    print(f"{out}: {report.written} written, {report.skipped_existing} already there, "
          f"{len(report.failed)} failed, {report.judge_calls} teacher request(s)")
    for rid, err in sorted(report.failed.items())[:10]:
        print(f"  failed {rid}: {err}", file=sys.stderr)
    return 1 if report.failed else None
