"""Reference reasoning chains r* from a teacher model, as a versioned JSONL file.

MMAR ships a human `thinking` per item; MMAU and MMSU do not. `build_references` asks a teacher
(any OpenAI-compatible endpoint, through the judge client: concurrency, retries, cache) for the
reasoning from the question, the options, the correct answer and an optional caption
(prompt: prompts/reference.yaml), and appends one line per item as it completes, so an
interrupted build resumes where it stopped.

File format (`dt-eval-refs`, version 1):
  line 1: {"format": "dt-eval-refs", "format_version": 1, "prompt_version": ..., "teacher_model": ...,
           "task": ..., "created": ...}
  then:   {"id": ..., "reference": ..., "teacher_model": ..., "prompt_version": ..., "caption_used": bool,
           "raw": ..., "created": ...}
A file is only extended by the same teacher model and prompt version (else an error: start a new
file). A task config points at such a file with `references: PATH` (relative paths resolve
against the task's data directory); `dt-eval rescore --references PATH` overrides it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError
from dt_eval.reasoning.judge import JudgeCall, JudgeClient, JudgeParseError
from dt_eval.reasoning.templates import load_prompt
from dt_eval.reasoning.types import render_options

FORMAT = "dt-eval-refs"
FORMAT_VERSION = 1
MIN_CHARS = 20
_THINK = re.compile(r"^.*</think>", re.S | re.I)


class RefsError(DtEvalError, ValueError):
    pass


@dataclass
class RefItem:
    id: str
    question: str
    choices: list[str]
    answer: str
    caption: str | None = None


@dataclass
class RefsReport:
    path: str
    written: int = 0
    skipped_existing: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # id -> error
    judge_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "written": self.written, "skipped_existing": self.skipped_existing,
                "failed": len(self.failed), "failed_ids": sorted(self.failed), "judge_calls": self.judge_calls}


def prompt_version() -> str:
    return load_prompt("reference").key


def build_messages(item: RefItem) -> list[dict[str, str]]:
    tpl = load_prompt("reference")
    user = tpl.user_text(question=item.question, options=render_options(item.choices), answer=item.answer,
                         caption=(item.caption or "").strip() or "(no caption available)")
    return tpl.messages(user)


def parse_reply(text: str) -> str:
    """The teacher's reasoning: text after any </think>, stripped; must be substantive."""
    s = _THINK.sub("", text).strip()
    if len(s) < MIN_CHARS:
        raise JudgeParseError(f"reference too short ({len(s)} chars)")
    return s


def read_references(path: str | Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """(header, {id: line}) of a reference file; a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return None, {}
    header = None
    lines: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn write at the end of an interrupted build
            if n == 0 and rec.get("format") == FORMAT:
                header = rec
                continue
            if "id" in rec and "reference" in rec:
                lines[str(rec["id"])] = rec
    if header is None and lines:
        raise RefsError(f"{path}: not a {FORMAT} file (no header line)")
    return header, lines


def load_references(path: str | Path) -> dict[str, str]:
    """{item id: reference chain} from a reference file."""
    header, lines = read_references(path)
    if header is None:
        raise RefsError(f"{path}: missing or empty reference file")
    return {k: v["reference"] for k, v in lines.items()}


def _append(path: Path, rec: dict[str, Any]) -> None:
    data = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


async def build_references(items: Sequence[RefItem], teacher: JudgeClient, out_path: str | Path,
                           task: str | None = None) -> RefsReport:
    """Ask the teacher for a reference chain per item; append each to `out_path` as it arrives."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    version = prompt_version()
    model = teacher.config.model
    header, existing = read_references(out_path)
    if header is not None and (header.get("prompt_version") != version or header.get("teacher_model") != model):
        raise RefsError(f"{out_path} was built by {header.get('teacher_model')!r} with prompt "
                        f"{header.get('prompt_version')!r}; this build uses {model!r} / {version!r}: "
                        "write to a new file")
    if header is None:
        if out_path.exists() and out_path.stat().st_size:
            raise RefsError(f"{out_path}: exists and is not a {FORMAT} file")
        _append(out_path, {"format": FORMAT, "format_version": FORMAT_VERSION, "prompt_version": version,
                           "teacher_model": model, "task": task, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    report = RefsReport(path=str(out_path))
    seen: set[str] = set()
    todo: list[RefItem] = []
    for it in items:
        if it.id in existing or it.id in seen:
            report.skipped_existing += it.id in existing
            continue
        seen.add(it.id)
        todo.append(it)

    async def one(it: RefItem):
        return it, await teacher.judge(JudgeCall(item_id=it.id, prompt_version=version, messages=build_messages(it),
                                                 parse=parse_reply))

    for fut in asyncio.as_completed([one(it) for it in todo]):
        it, res = await fut
        report.judge_calls += res.calls
        if not res.ok:
            report.failed[it.id] = res.error or "failed"
            continue
        _append(out_path, {"id": it.id, "reference": res.value, "teacher_model": model, "prompt_version": version,
                           "caption_used": bool((it.caption or "").strip()), "raw": res.raw[-1] if res.raw else None,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        report.written += 1
    return report
