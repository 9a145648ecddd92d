"""`dt-eval leaderboard verify DIR`: recompute every measured number of a built leaderboard.

For each measured row, from the run directory the leaderboard JSON names:

1. samples.jsonl (and cot.jsonl) must still have the sha256 recorded at build time;
2. every number (accuracy per repeat, mean ± std, official raw, categories, unparsed, errors,
   pass@k, reasoning-quality scores ...) is recomputed from samples.jsonl exactly as
   `dt-eval report` does, and compared with the JSON;
3. the per-sample `correct` flags must sum to the rescored count;
4. (unless --no-reextract) every answer is extracted again from the raw model output and
   rescored with the official scorer: the records' extraction must agree with the outputs;
5. the comparability marks, differences, ranked tables (ranks, CIs, the paired tests against the
   best measured row, from the per-item verdicts recomputed in step 2) and subset warnings are
   rebuilt, and the Markdown, LaTeX, CSV and HTML files must be byte-identical to a fresh render
   of the JSON.

The reported rows must equal the entries of the published file they were built from, re-read
(its sha256 must still be the one recorded at build time). The plots are rendered again from
the JSON and compared with the PNG files and the images embedded in the page (bytes, else
decoded pixels: a PNG encoder may pack the same pixels differently).

Any difference is a failure, listed one line per number, cell or plot.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dt_eval.reporting.leaderboard.build import (
    SCHEMA,
    BuildError,
    assemble,
    category_tables,
    file_sha256,
    measure_run,
    subset_warnings,
)
from dt_eval.reporting.leaderboard.latex import render_latex
from dt_eval.reporting.leaderboard.published import (
    PublishedError,
    entry_to_json,
    load_published,
)
from dt_eval.reporting.leaderboard.render import (
    CSV_FILE,
    HTML_FILE,
    JSON_FILE,
    MD_FILE,
    TEX_FILE,
    embedded_images,
    render_csv,
    render_html,
    render_markdown,
    strip_images,
)


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked_numbers: int = 0
    runs: int = 0
    plots_checked: int = 0

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
    from dt_eval.pipeline.records import sample_record
    from dt_eval.scoring.aggregate import compute_results
    from dt_eval.storage.rundir import RunDir
    from dt_eval.tasks.config import run_task_config
    from dt_eval.tasks.data import item_from_record
    from dt_eval.types import Generation

    read = RunDir(run).read()
    config = read.config
    redone = []
    disagree: dict[str, list[str]] = defaultdict(list)
    latest = [s for s in read.samples.values() if not s.is_lm_eval]  # lm-eval tasks: scored by lm-eval, not by us
    cfgs: dict[str, Any] = {}
    for s in latest:
        if s.task not in cfgs:
            cfgs[s.task] = run_task_config(s.task, config)  # as the run recorded it
        cfg = cfgs[s.task]
        item = item_from_record(cfg, s.meta or {}, s.index, None)
        gen = Generation(key=s.key, text=s.output or "", reasoning=s.reasoning, finish_reason=s.finish_reason,
                         error=s.error)
        new = sample_record(cfg, s.index, item, s.repeat, gen, s.warnings, None)
        new = new.model_copy(update={"meta": s.meta})
        for k in ("extracted", "prediction", "correct", "correct_raw"):
            if getattr(new, k) != getattr(s, k):
                disagree[s.task].append(f"{s.key} ({k})")
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


def _resolve_published(lb: dict[str, Any], lb_dir: Path, published: str | Path | None) -> tuple[Path | None, str]:
    """The published file to check the reported rows against, and where it was looked for."""
    if published is not None:
        cands = [Path(published)]
    else:
        cands = ([lb_dir / lb["published_file_rel"]] if lb.get("published_file_rel") else []) \
            + ([Path(lb["published_file"])] if lb.get("published_file") else [])
    found = next((c for c in cands if c.is_file()), None)
    return found, " or ".join(str(c) for c in cands) or "no published file recorded"


def check_reported(lb: dict[str, Any], lb_dir: Path, published: str | Path | None,
                   report: VerifyReport) -> list[dict[str, Any]]:
    """Compare the reported rows with the published file re-read; returns the rows as the file has
    them (the leaderboard's own rows when the file cannot be read, after saying so)."""
    stored = lb.get("reported") or []
    if not stored and not lb.get("published_file") and published is None:
        return stored
    pf, where = _resolve_published(lb, lb_dir, published)
    if pf is None:
        report.problems.append(f"cannot check the {len(stored)} reported row(s): the published file is not found "
                               f"({where}); pass it with --published")
        return stored
    try:
        pub, sha = load_published(pf)
    except PublishedError as e:
        report.problems.append(f"cannot check the reported rows: {e}")
        return stored
    if lb.get("published_sha256") and sha != lb["published_sha256"]:
        report.problems.append(f"{pf} changed since the leaderboard was built (sha256 {lb['published_sha256'][:12]}… "
                               f"-> {sha[:12]}…): rebuild, or pass the file it was built from with --published")
    fresh = [entry_to_json(e) for e in pub.entries]
    for i in range(max(len(stored), len(fresh))):
        if i >= len(stored):
            report.problems.append(f"reported {fresh[i]['model']} (R{i + 1}) is in {pf} but not in the leaderboard")
            continue
        label = f"reported {stored[i].get('model')} (R{i + 1})"
        if i >= len(fresh):
            report.problems.append(f"{label} is in the leaderboard but not in {pf}")
            continue
        a, b = _flatten(stored[i]), _flatten(fresh[i])
        for k in sorted(set(a) | set(b)):
            report.checked_numbers += 1
            if k not in a or k not in b or not _same(a[k], b[k]):
                name = k[len("scores."):].replace(".value", "").replace(".", " ") if k.startswith("scores.") else k
                report.problems.append(f"{label}: {name} = {_show(a.get(k, '(none)'))} in the leaderboard, "
                                       f"{_show(b.get(k, '(none)'))} in {pf}")
    return fresh


def _compare_cells(labels: list[str], stored: list[dict[str, Any]], fresh: list[dict[str, Any]],
                   report: VerifyReport) -> None:
    """Table cells in the JSON against a rebuild, one line per differing cell field."""
    for i in range(max(len(stored), len(fresh))):
        a = stored[i] if i < len(stored) else {}
        b = fresh[i] if i < len(fresh) else {}
        label = labels[i] if i < len(labels) else f"row {i + 1}"
        for col in list(dict.fromkeys([*a, *b])):
            if col not in a or col not in b:
                report.problems.append(f"{label}: cell {col} is {'missing from' if col in b else 'extra in'} "
                                       "leaderboard.json (a rebuild " + ("has" if col in b else "has no") + " it)")
                continue
            fa, fb = _flatten(a[col]), _flatten(b[col])
            for k in sorted(set(fa) | set(fb)):
                report.checked_numbers += 1
                if not _same(fa.get(k), fb.get(k)):
                    report.problems.append(f"{label}: {col} {k} = {_show(fa.get(k))} in leaderboard.json, "
                                           f"{_show(fb.get(k))} in a rebuild")


def same_png(a: bytes, b: bytes) -> bool:
    """Same image: equal bytes, else equal size and decoded RGBA pixels."""
    if a == b:
        return True
    from PIL import Image  # a matplotlib dependency

    try:
        ia, ib = (Image.open(io.BytesIO(x)) for x in (a, b))
        return ia.size == ib.size and ia.convert("RGBA").tobytes() == ib.convert("RGBA").tobytes()
    except Exception:  # not an image at all
        return False


def check_plots(lb: dict[str, Any], lb_dir: Path, report: VerifyReport) -> dict[str, bytes] | None:
    """Render the plots again from the JSON and compare each with its file; returns the fresh PNGs
    (None when they cannot be rendered here)."""
    listed: dict[str, str] = lb.get("plots") or {}
    if not listed:
        return {}
    try:
        from dt_eval.reporting.leaderboard.render import plot_renderer, render_plots

        here = plot_renderer()
    except ImportError:
        report.problems.append(f"cannot check the {len(listed)} plot(s): matplotlib is not installed "
                               "(pip install 'dt-eval[leaderboard]'), or skip them with --no-plots")
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = {k: p.read_bytes() for k, p in render_plots(lb, Path(tmp)).items()}
    except Exception as e:  # a JSON edited into something the plots cannot draw
        report.problems.append(f"cannot render the plots again from {JSON_FILE}: {type(e).__name__}: {e}")
        return None
    built = lb.get("plot_renderer")
    hint = ""
    if built and built != here:
        show = lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.items()))  # noqa: E731
        hint = (f" (built with {show(built)}, rendered here with {show(here)}: verify with those versions, or "
                "skip the plots with --no-plots)")
    for name in list(dict.fromkeys([*listed, *fresh])):
        if name not in fresh:
            report.problems.append(f"plot {name} is listed in {JSON_FILE}, but a fresh render draws no such plot")
            continue
        if name not in listed:
            report.problems.append(f"plot {name}: a fresh render draws it, but {JSON_FILE} does not list it")
            continue
        path = lb_dir / listed[name]
        if not path.is_file():
            report.problems.append(f"plot {name}: {listed[name]} is missing")
            continue
        report.plots_checked += 1
        if not same_png(path.read_bytes(), fresh[name]):
            report.problems.append(f"plot {name} ({listed[name]}) differs from a fresh render of {JSON_FILE}{hint}")
    return fresh


def verify(lb_dir: str | Path, reextract: bool = True, published: str | Path | None = None,
           plots: bool = True) -> VerifyReport:
    """`published`: the published file to check the reported rows against (default: the one the
    build recorded); `plots=False` leaves the plots unchecked (said in the notes)."""
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

    reported = check_reported(lb, d, published, report)

    # derived parts: cells, columns, marks, diffs, category tables
    derived = assemble(fresh_measured, reported)
    derived["category_tables"] = category_tables(fresh_measured)
    derived["warnings"] = subset_warnings(fresh_measured)
    _compare_cells([f"{m['name']} ({m['run']})" for m in lb["measured"]], lb.get("measured_cells") or [],
                   derived["measured_cells"], report)
    _compare_cells([f"reported {r.get('model')} (R{i + 1})" for i, r in enumerate(lb["reported"])],
                   lb.get("reported_cells") or [], derived["reported_cells"], report)
    for key in ("columns", "groups", "diffs", "category_tables", "main_tables", "warnings"):
        a, b = _flatten(lb.get(key)), _flatten(derived[key])
        diff = [k for k in sorted(set(a) | set(b)) if not _same(a.get(k), b.get(k))]
        report.checked_numbers += len(set(a) | set(b))
        if diff:
            report.problems.append(f"leaderboard.json {key} differ from a rebuild: "
                                   + "; ".join(f"{k}: {_show(a.get(k))} vs {_show(b.get(k))}" for k in diff[:6])
                                   + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""))

    # plots, then the rendered files, against a fresh render of the JSON
    fresh_pngs = check_plots(lb, d, report) if plots else None
    if not plots and lb.get("plots"):
        report.notes.append(f"plots not checked (--no-plots): {len(lb['plots'])} plot(s) in {d / 'plots'} and "
                            f"the page")
    renders = {MD_FILE: render_markdown(lb), TEX_FILE: render_latex(lb), CSV_FILE: render_csv(lb)}
    renders[HTML_FILE] = render_html(lb, {name: "data:image/png;base64," for name in (lb.get("plots") or {})})
    for name, expected in renders.items():
        p = d / name
        if not p.exists():
            report.problems.append(f"{p} is missing")
            continue
        have = p.read_text(encoding="utf-8")
        if name == HTML_FILE:
            if fresh_pngs is not None:
                shown = embedded_images(have)
                for plot, png in fresh_pngs.items():
                    if plot in (lb.get("plots") or {}) and not all(same_png(x, png) for x in shown.get(plot, [])):
                        report.problems.append(f"{p}: embedded plot {plot} differs from a fresh render")
            have = strip_images(have)
        if have != expected:
            report.problems.append(f"{p} differs from a fresh render of {JSON_FILE} (edited by hand?): "
                                   + _first_diff(have, expected))
    return report


def _first_diff(a: str, b: str) -> str:
    la, lb_ = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb_)):
        if x != y:
            return f"line {i + 1}: {x[:120]!r} vs expected {y[:120]!r}"
    return f"{len(la)} lines vs {len(lb_)} expected"
