"""`dt-eval leaderboard verify DIR`: recompute every measured number of a built leaderboard.

For each measured row, from the run directory the leaderboard JSON names:

1. samples.jsonl (and cot.jsonl) must still have the sha256 recorded at build time;
2. every number (accuracy per repeat, mean ± std, official raw, categories, unparsed, errors,
   pass@k, reasoning-quality scores ...) is recomputed from samples.jsonl exactly as
   `dt-eval report` does, and compared with the JSON;
3. the per-sample `correct` flags must sum to the rescored count;
4. (unless --no-reextract) every answer is extracted again from the raw model output and
   rescored with the official scorer: the records' extraction must agree with the outputs;
5. the comparability marks and differences are rebuilt, and the Markdown, CSV and HTML files
   must be byte-identical to a fresh render of the JSON (the HTML without its embedded plots).

Any difference is a failure, listed one line per number.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .build import SCHEMA, BuildError, assemble, category_tables, file_sha256, measure_run
from .render import CSV_FILE, HTML_FILE, JSON_FILE, MD_FILE, render_csv, render_html, render_markdown, strip_images


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked_numbers: int = 0
    runs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)
    return a == b


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if v == v else "nan"
    if isinstance(v, str) and len(v) == 64:
        return v[:12] + "…"
    return json.dumps(v) if not isinstance(v, str) else v


def _nice_path(path: str) -> str:
    """tasks.mmau.accuracy.mean -> mmau accuracy (mean)"""
    p = path[len("tasks."):] if path.startswith("tasks.") else path
    return p.replace(".", " ", 1) if "." in p else p


def compare_numbers(label: str, stored: dict[str, Any], fresh: dict[str, Any], report: VerifyReport,
                    what: str = "recomputed") -> int:
    a, b = _flatten(stored), _flatten(fresh)
    bad = 0
    for k in sorted(set(a) | set(b)):
        report.checked_numbers += 1
        if k not in a:
            report.problems.append(f"{label}: {_nice_path(k)} is missing from the leaderboard ({what}: {_show(b[k])})")
            bad += 1
        elif k not in b:
            report.problems.append(f"{label}: {_nice_path(k)} = {_show(a[k])} in the leaderboard, but {what} from "
                                   "the run it does not exist")
            bad += 1
        elif not _same(a[k], b[k]):
            report.problems.append(f"{label}: {_nice_path(k)} = {_show(a[k])} in the leaderboard, "
                                   f"{_show(b[k])} {what} from samples.jsonl")
            bad += 1
    return bad


def _resolve_run(m: dict[str, Any], lb_dir: Path) -> Path | None:
    for cand in ([lb_dir / m["run_dir_rel"]] if m.get("run_dir_rel") else []) + [Path(m["run_dir"])]:
        if (cand / "samples.jsonl").is_file():
            return cand.resolve()
    return None


def reextract_check(run: Path, label: str, report: VerifyReport) -> None:
    """Extract every answer again from the raw output and rescore it; compare with the records."""
    from ..backends.base import Generation
    from ..data import item_from_record
    from ..rundir import latest_by_key, read_samples
    from ..runner import compute_results, make_sample_record
    from ..taskconfig import load_task

    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    records, _ = read_samples(run)
    latest = list(latest_by_key(records).values())
    redone = []
    disagree: dict[str, list[str]] = defaultdict(list)
    latest = [s for s in latest if s.get("kind") != "lm-eval"]  # scored by lm-eval, not by us
    for s in latest:
        cfg = load_task(s["task"])
        item = item_from_record(cfg, s.get("meta") or {}, s.get("index", 0), None)
        gen = Generation(key=s["key"], text=s.get("output") or "", reasoning=s.get("reasoning"),
                         finish_reason=s.get("finish_reason"), error=s.get("error"))
        new = make_sample_record(cfg, s.get("index", 0), item, s["repeat"], gen, s.get("warnings") or [], None)
        new["meta"] = s.get("meta")
        for k in ("extracted", "prediction", "correct", "correct_raw"):
            if new.get(k) != s.get(k):
                disagree[s["task"]].append(f"{s['key']} ({k})")
                break
        redone.append(new)
    if not disagree:
        return
    stored = compute_results(config, latest)["tasks"]
    fresh = compute_results(config, redone)["tasks"]
    for task, keys in disagree.items():
        for rs, rf in zip(stored[task]["repeats"], fresh[task]["repeats"]):
            for k in ("accuracy", "accuracy_official_raw"):
                if k in rs and not _same(rs[k], rf.get(k)):
                    report.problems.append(
                        f"{label}: {task} {k.replace('accuracy_official_raw', 'official raw accuracy')} "
                        f"(repeat {rs['repeat']}) = {_show(rs[k])} from the recorded answers, {_show(rf.get(k))} "
                        "when the answers are extracted again from the raw outputs")
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        report.problems.append(f"{label}: {len(keys)} sample record(s) of {task} disagree with their own output: "
                               f"{shown}")


def verify(lb_dir: str | Path, reextract: bool = True) -> VerifyReport:
    d = Path(lb_dir)
    report = VerifyReport()
    jpath = d / JSON_FILE
    try:
        lb = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        report.problems.append(f"cannot read {jpath}: {e}")
        return report
    if lb.get("schema") != SCHEMA:
        report.problems.append(f"{jpath}: schema {lb.get('schema')!r} is not {SCHEMA!r}")
        return report

    fresh_measured = []
    for m in lb["measured"]:
        label = f"{m['name']} ({m['run']})"
        report.runs += 1
        run = _resolve_run(m, d)
        if run is None:
            report.problems.append(f"{label}: run directory not found ({m.get('run_dir_rel')} from {d}, or "
                                   f"{m['run_dir']})")
            fresh_measured.append(m)
            continue
        sha = file_sha256(run / "samples.jsonl")
        if sha != m["samples_sha256"]:
            report.problems.append(f"{label}: {run / 'samples.jsonl'} changed since the leaderboard was built "
                                   f"(sha256 {m['samples_sha256'][:12]}… -> {sha[:12]}…)")
        cot_sha = file_sha256(run / "cot.jsonl")
        if cot_sha != m.get("cot_sha256"):
            report.problems.append(f"{label}: cot.jsonl changed since the leaderboard was built "
                                   f"({_show(m.get('cot_sha256'))} -> {_show(cot_sha)})")
        if m.get("cot_source") == "results.json":
            report.notes.append(f"{label}: reasoning-quality scores come from results.json (no cot.jsonl to "
                                "recompute them from); checked against results.json only")
        try:
            fresh = measure_run(run)
        except BuildError as e:
            report.problems.append(f"{label}: {e}")
            fresh_measured.append(m)
            continue
        skip = ("samples_sha256", "cot_sha256")  # reported above, with the file's path
        compare_numbers(label, {k: m.get(k) for k in fresh if k not in skip},
                        {k: v for k, v in fresh.items() if k not in skip}, report)
        for name, t in fresh["tasks"].items():
            for r in t["per_repeat"]:
                if t["answers_available"] and r["correct"] is not None and r["correct_flags"] != r["correct"]:
                    report.problems.append(
                        f"{label}: {name} repeat {r['repeat']}: the per-sample `correct` flags sum to "
                        f"{r['correct_flags']}, rescoring the recorded answers gives {r['correct']}")
        if reextract:
            try:
                reextract_check(run, label, report)
            except Exception as e:  # a run from another dt-eval version may not re-extract at all
                report.problems.append(f"{label}: cannot re-extract answers from the outputs: {type(e).__name__}: {e}")
        fresh_measured.append({**m, **fresh})

    # derived parts: columns, marks, diffs, category tables
    derived = assemble(fresh_measured, lb["reported"])
    derived["category_tables"] = category_tables(fresh_measured)
    for key in ("columns", "measured_cells", "groups", "diffs", "category_tables"):
        a, b = _flatten(lb.get(key)), _flatten(derived[key])
        diff = [k for k in sorted(set(a) | set(b)) if not _same(a.get(k), b.get(k))]
        report.checked_numbers += len(set(a) | set(b))
        if diff:
            report.problems.append(f"leaderboard.json {key} differ from a rebuild: "
                                   + "; ".join(f"{k}: {_show(a.get(k))} vs {_show(b.get(k))}" for k in diff[:6])
                                   + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""))

    # rendered files against a fresh render of the JSON
    renders = {MD_FILE: render_markdown(lb), CSV_FILE: render_csv(lb)}
    plots = {name: "data:image/png;base64," for name in (lb.get("plots") or {})}
    renders[HTML_FILE] = render_html(lb, plots)
    for name, expected in renders.items():
        p = d / name
        if not p.exists():
            report.problems.append(f"{p} is missing")
            continue
        have = p.read_text(encoding="utf-8")
        if name == HTML_FILE:
            have = strip_images(have)
        if have != expected:
            report.problems.append(f"{p} differs from a fresh render of {JSON_FILE} (edited by hand?): "
                                   + _first_diff(have, expected))
    if lb.get("published_file") and lb.get("published_sha256"):
        pf = Path(lb["published_file"])
        if pf.exists() and file_sha256(pf) != lb["published_sha256"]:
            report.notes.append(f"{pf} changed since the build (reported rows are as they were at build time)")
    return report


def _first_diff(a: str, b: str) -> str:
    la, lb_ = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb_)):
        if x != y:
            return f"line {i + 1}: {x[:120]!r} vs expected {y[:120]!r}"
    return f"{len(la)} lines vs {len(lb_)} expected"
