"""Collect run directories (and published anchors) into leaderboard rows.

Two kinds of rows, never mixed:

* measured: one per run directory, every number recomputed here from the run's samples.jsonl
  (and cot.jsonl for reasoning-quality scores), exactly as `dt-eval report` does. The
  leaderboard JSON records each file's sha256 so `dt-eval leaderboard verify` can redo it.
* reported: published numbers from `published.yaml`, each with its citation, URL and check
  status, always marked as reported (†).

One main table per benchmark ranks both kinds together by accuracy. Measured rows carry the
accuracy's 95% CI (Wilson; dt_eval/scoring/stats.py) and a paired test against the best measured
row on the items both scored (McNemar exact; a paired bootstrap with repeats), stored with the
per-item verdicts it was computed from, so `verify` recomputes it. Reported rows have no per-item
outputs: they are ranked, never tested. Runs on a subset (--limit, fewer items than the
benchmark) or on a file that is not a known release are marked in that table and warned about.

Comparability: every cell belongs to a "group" (what the number was computed on: task version,
metadata sha256, item subset, extraction, judge ...). In each column the most common measured
group is the reference; every other group gets a footnote marker, explained in the legend.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from dt_eval import __version__
from dt_eval.errors import DtEvalError
from dt_eval.records import RunConfig, SampleRecord
from dt_eval.reporting.leaderboard.published import (
    PublishedFile,
    entry_to_json,
    normalise_model_name,
)
from dt_eval.util.hashing import sha256_file

SCHEMA = "dt-eval-leaderboard/1"

# Columns, their titles and order, and the per-category tables come from the task configs
# (`title`, `family`, breakdowns' `leaderboard` heading), as each run recorded them: tasks of one
# family share a column (MMAR 2025 and 2026 files: marked apart by sha256).
MARKERS = ["‡", "§", "¶", "‖", "※", "♯", "♭", "◊", "¤", "♮"]
REPORTED_MARK = "†"  # a reported row (never a comparability mark)
SIGNIFICANT_MARK = "*"  # differs from the best measured row at p < ALPHA
ALPHA = 0.05
GENERIC_DIR_NAMES = {"deterministic", "random", "model", "final", "latest", "hf", "actor", "huggingface"}
METRIC_NAMES = {"accuracy": "accuracy (%)", "rubrics": "MMAR-Rubrics score (0-100)",
                "hybrid": "mean hybrid reasoning reward (0-1)"}


class BuildError(DtEvalError, RuntimeError):
    pass


def file_sha256(path: Path) -> str | None:
    if not path.exists():
        return None
    return sha256_file(path)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def lm_eval_family(task: str) -> str:
    # lm-eval:gsm8k -> lm-eval/gsm8k: column keys use ":" for the metric (mmar:rubrics)
    return task.replace(":", "/", 1)


class Labels:
    """Family, title and order of leaderboard column keys (a family name or a task name), from the
    measured tasks' configs; a key no run measured (a published score) is looked up among the
    tasks on the task search path, and is otherwise its own family and title."""

    def __init__(self, measured: list[dict[str, Any]]):
        self.family: dict[str, str] = {}  # task -> family
        self.titles: dict[str, str] = {}  # task -> title
        self.families: dict[str, dict[str, Any]] = {}  # family -> {"title", "rank"}
        for m in measured:
            for name, t in m["tasks"].items():
                self._add(name, t["family"], t.get("title"), t.get("family_title"), t.get("family_rank"))

    def _add(self, task: str, family: str, title: str | None, family_title: str | None, rank: int | None) -> None:
        self.family.setdefault(task, family)
        self.titles.setdefault(task, title or task)
        self.families.setdefault(family, {"title": family_title or family, "rank": rank})

    def _lookup(self, key: str) -> None:
        if key in self.family or key in self.families or not re.fullmatch(r"[\w.-]+", key):
            return
        from dt_eval.tasks.config import TaskConfigError, UnknownTaskError, load_task

        try:
            cfg = load_task(key)
        except (UnknownTaskError, TaskConfigError):
            return
        self._add(cfg.name, cfg.family.name, cfg.title, cfg.family.title, cfg.family.rank)

    def family_of(self, key: str) -> str:
        self._lookup(key)
        return self.family.get(key, key)

    def rank(self, family: str) -> int | None:
        self._lookup(family)
        return (self.families.get(family) or {}).get("rank")

    def column_title(self, key: str) -> str:
        base, _, metric = key.partition(":")
        self._lookup(base)
        title = self.families[base]["title"] if base in self.families else self.titles.get(base, base)
        if metric == "rubrics":
            return f"{title}-Rubrics"
        if metric == "hybrid":
            return f"{title} hybrid"
        return title


# ---------------------------------------------------------------------------------------------
# One run directory -> its measured numbers (a pure function of the files in the run directory)


def display_name(model: str | None, recipe: dict[str, Any] | None = None) -> str:
    if recipe:
        for k in ("name", "model_name"):
            if isinstance(recipe.get(k), str) and recipe[k].strip():
                return recipe[k].strip()
    if not model:
        return "(unknown model)"
    p = Path(model.rstrip("/"))
    name = p.name or model
    if (name.lower() in GENERIC_DIR_NAMES or re.fullmatch(r"(global_)?(checkpoint|step)[-_]?\d+", name.lower())) \
            and p.parent.name:
        name = f"{p.parent.name}/{name}"
    return name


def read_recipe(model: str | None) -> dict[str, Any] | None:
    """Training metadata a dt-eval training recipe leaves beside a checkpoint (passed through)."""
    if not model:
        return None
    path = Path(model).expanduser() / "dt_recipe.json"
    try:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {"value": data}
    except (OSError, ValueError):
        return {"error": f"unreadable {path}"}
    return None


def _cot_aggregates(run_dir: Path, results_json: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """Reasoning-quality aggregates: recomputed from cot.jsonl when present, else results.json's."""
    if (run_dir / "cot.jsonl").exists():
        try:
            from dt_eval.reasoning.rescore import aggregate_records, read_cot_records
        except ImportError:  # the cot package is optional
            pass
        else:
            lines = read_cot_records(run_dir)
            aggs = aggregate_records(lines)
            judges: dict[str, set[str]] = defaultdict(set)
            for r in lines:
                if r.get("judge_model"):
                    judges[r["task"]].add(str(r["judge_model"]))
            for task, a in aggs.items():
                if judges.get(task):
                    a["judge"] = ", ".join(sorted(judges[task]))
            return aggs, "cot.jsonl"
    found = {t: v["cot"] for t, v in ((results_json or {}).get("tasks") or {}).items()
             if isinstance(v, dict) and isinstance(v.get("cot"), dict)}
    return found, ("results.json" if found else None)


def _cot_numbers(agg: dict[str, Any] | None, results_cot: dict[str, Any] | None) -> dict[str, Any] | None:
    if not agg:
        return None
    judge = agg.get("judge") or (results_cot or {}).get("judge")
    judge_model = judge.get("model") if isinstance(judge, dict) else judge
    out: dict[str, Any] = {"judge": judge_model}
    h = agg.get("hybrid")
    if isinstance(h, dict) and h.get("mean") is not None:
        out["hybrid"] = {k: h.get(k) for k in ("mean", "scored", "unscored", "version", "emb_mean", "llm_mean", "w")}
    r = agg.get("rubrics")
    if isinstance(r, dict) and r.get("mean") is not None:
        out["rubrics"] = {k: r.get(k) for k in ("score", "mean", "scored", "unscored", "not_applicable", "version",
                                                "accuracy")}
        if out["rubrics"].get("score") is None:
            out["rubrics"]["score"] = r["mean"] * 100
    return out if len(out) > 1 else None


def subset_text(t: dict[str, Any]) -> str | None:
    """Why a task's number is not one on the whole benchmark, shown beside it: 'subset: 10 of 1000
    items (--limit 10)', 'not a known release file'; None for a full run on a known file."""
    items, bench, limit = t.get("items"), t.get("benchmark_items"), t.get("limit")
    parts = []
    if limit or (bench and items is not None and items < bench):
        what = f"subset: {items} of {bench} items" if bench else f"subset: {items} items"
        parts.append(what + (f" (--limit {limit})" if limit else ""))
    if t.get("data_sha256") and not t.get("data_version_label"):
        parts.append("not a known release file")
    return ", ".join(parts) or None


def _ci_numbers(ci: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ci:
        return None
    return {k: ci.get(k) for k in ("low", "high", "method", "level", "stderr", "n", "n_eff")}


def task_numbers(task: str, res: dict[str, Any], cfg_info: dict[str, Any], samples: list[SampleRecord],
                 cot: dict[str, Any] | None, cfg: Any = None,
                 outcomes: dict[str, dict[int, bool]] | None = None) -> dict[str, Any]:
    """One task's cell numbers; `cfg`: its TaskConfig as the run recorded it (default: by name);
    `outcomes`: the official per-item verdicts ({item: {repeat: correct}}) the CI and paired tests
    are computed from."""
    if res.get("kind") == "lm-eval":
        return _lm_eval_numbers(task, res, cfg_info, samples)
    if cfg is None:
        from dt_eval.tasks.config import load_task

        cfg = load_task(task)
    reps = res.get("repeats") or []
    accs = [r["accuracy"] for r in reps if "accuracy" in r]
    raws = [r["accuracy_official_raw"] for r in reps if "accuracy_official_raw" in r]
    flags: dict[int, int] = defaultdict(int)
    for s in samples:
        flags[s.repeat] += bool(s.correct)
    out: dict[str, Any] = {
        "task": task,
        "family": cfg.family.name,
        "title": cfg.title,
        "family_title": cfg.family.title,
        "family_rank": cfg.family.rank,
        "category_headings": dict(cfg.leaderboard_categories),
        "task_version": res.get("task_version"),
        "scorer": res.get("scorer"),
        "answers_available": bool(res.get("answers_available")),
        "data_sha256": res.get("data_sha256"),
        "data_version_label": res.get("data_version_label"),
        "limit": cfg_info.get("limit"),
        "items": res.get("items"),
        "benchmark_items": cfg.data.expected_items,
        "complete": res.get("complete"),
        "samples": res.get("samples"),
        "repeats": len(reps),
        "accuracy": None,
        "official_raw": None,
        "per_repeat": [
            {"repeat": r["repeat"], "accuracy": r.get("accuracy"), "correct": r.get("correct"),
             "total": r.get("total"), "official_raw": r.get("accuracy_official_raw"),
             "correct_flags": flags.get(r["repeat"], 0),
             "unparsed": r.get("unparsed", 0), "errors": r.get("errors", 0), "truncated": r.get("truncated", 0),
             "cut_by_length": r.get("cut_by_length", 0)}
            for r in reps
        ],
        "unparsed": sum(r.get("unparsed", 0) for r in reps),
        "errors": sum(r.get("errors", 0) for r in reps),
        "categories": {},
        "cot": cot,
        "accuracy_ci": _ci_numbers(res.get("accuracy_ci")),
        "outcomes": {item: {str(r): bool(v) for r, v in sorted(reps.items())}
                     for item, reps in (outcomes or {}).items()},
    }
    out["subset"] = subset_text(out)
    if accs:
        m, sd = _mean_std(accs)
        out["accuracy"] = {"mean": m, "std": sd}
        m, sd = _mean_std(raws)
        out["official_raw"] = {"mean": m, "std": sd}
    k = len(reps)
    if k > 1 and f"pass_at_{k}" in res:
        out["pass_at_k"] = res[f"pass_at_{k}"]
        out["majority_vote"] = res.get("majority_vote_accuracy")
    for field, _ in cfg.leaderboard_categories:
        table: dict[str, Any] = {}
        keys: list[str] = []
        for r in reps:
            for key in (r.get("breakdowns") or {}).get(field, {}):
                if key not in keys:
                    keys.append(key)
        for key in keys:
            vals = [(r["breakdowns"][field][key]) for r in reps if key in (r.get("breakdowns") or {}).get(field, {})]
            filled = [v["accuracy"] for v in vals if v.get("total")]
            m, sd = _mean_std(filled)
            table[key] = {"mean": m, "std": sd, "total": vals[0].get("total", 0) if vals else 0}
            ci = ((res.get("categories_ci") or {}).get(field) or {}).get(key)
            table[key] |= {"ci_low": ci["low"], "ci_high": ci["high"]} if ci else {"ci_low": None, "ci_high": None}
        if table:
            out["categories"][field] = table
    return out


def _lm_eval_numbers(task: str, res: dict[str, Any], cfg_info: dict[str, Any],
                     samples: list[SampleRecord]) -> dict[str, Any]:
    """An lm-eval task's cell: its primary metric x 100, as lm-eval reported it."""
    rep = (res.get("repeats") or [{}])[0]
    value = rep.get("accuracy")
    flags = sum(1 for s in samples if s.repeat == 0 and s.correct)
    return {
        "task": task, "family": lm_eval_family(task), "task_version": res.get("task_version"),
        "scorer": res.get("scorer"), "metric": res.get("primary_metric"),
        "answers_available": value is not None, "data_sha256": None, "data_version_label": None,
        "limit": cfg_info.get("limit"), "items": res.get("items"), "benchmark_items": None,
        "complete": res.get("complete"), "samples": res.get("samples"), "repeats": 1,
        "accuracy": {"mean": value, "std": 0.0} if value is not None else None, "official_raw": None,
        "per_repeat": [{"repeat": 0, "accuracy": value, "correct": rep.get("correct"), "total": rep.get("total"),
                        "official_raw": None, "correct_flags": flags, "unparsed": 0,
                        "errors": rep.get("errors", 0), "truncated": rep.get("truncated", 0),
                        "cut_by_length": rep.get("cut_by_length", 0)}],
        "unparsed": 0, "errors": rep.get("errors", 0), "categories": {}, "cot": None,
        "accuracy_ci": None, "outcomes": {},  # lm-eval's own metric: no interval or test of ours
        "subset": f"subset: first {cfg_info['limit']} docs (--limit)" if cfg_info.get("limit") else None,
    }


def backend_name(described: Any) -> str | None:
    """The backend's name from config.json's `backend` entry (its describe()); see
    RunConfig.backend_name. Only the name is read: the rest of that entry (server URLs, key
    source ...) never reaches the leaderboard."""
    if not isinstance(described, dict):
        return None
    return RunConfig(backend=described).backend_name


def measure_run(run_dir: str | Path) -> dict[str, Any]:
    """Every number the leaderboard shows for one run, recomputed from samples.jsonl."""
    from dt_eval.scoring.aggregate import compute_run_results
    from dt_eval.storage.rundir import CONFIG, RunDir, RunDirError
    from dt_eval.tasks.config import TaskConfigError, UnknownTaskError, run_task_config

    run = Path(run_dir)
    samples_file = run / "samples.jsonl"
    if not samples_file.is_file():
        raise BuildError(f"{run}: no samples.jsonl (not a dt-eval run directory)")
    if not (run / CONFIG).is_file():
        raise BuildError(f"{run}: cannot read {CONFIG}: it is missing")
    try:
        read = RunDir(run).read()  # read-only: never repairs a run it only reads
    except RunDirError as e:
        raise BuildError(str(e)) from None
    config = read.config or RunConfig()
    if not read.samples:
        raise BuildError(f"{run}: samples.jsonl has no records")
    try:
        typed = compute_run_results(config, read.samples.values())
        results = typed.to_json_dict()
        cfgs = {name: run_task_config(name, config) for name, res in results["tasks"].items()
                if res.get("kind") != "lm-eval"}
    except (UnknownTaskError, TaskConfigError, ValueError) as e:  # ValueError: e.g. an unregistered scorer
        raise BuildError(f"{run}: {e}") from None
    results_json = None
    if (run / "results.json").exists():
        try:
            results_json = json.loads((run / "results.json").read_text(encoding="utf-8"))
        except ValueError:
            results_json = None
    cot, cot_source = _cot_aggregates(run, results_json)
    by_task: dict[str, list[SampleRecord]] = defaultdict(list)
    for s in read.samples.values():
        by_task[s.task].append(s)
    identity = config.identity
    sampling = identity.get("sampling") or {}
    prompt = identity.get("prompt") or {}
    def order(name: str) -> tuple:  # ranked families first, a family's own task before its others
        c = cfgs.get(name)
        fam = c.family.name if c else lm_eval_family(name)
        rank = c.family.rank if c else None
        return (rank is None, rank or 0, name != fam, name)

    tasks = {}
    for name in sorted(results["tasks"], key=order):
        rcot = ((results_json or {}).get("tasks") or {}).get(name, {}).get("cot")
        info = config.tasks.get(name)
        tasks[name] = task_numbers(name, results["tasks"][name], info.to_json_dict() if info else {},
                                   by_task[name], _cot_numbers(cot.get(name), rcot), cfg=cfgs.get(name),
                                   outcomes=typed.tasks[name].item_outcomes)
    return {
        "model": identity.get("model"),
        "samples_sha256": file_sha256(samples_file),
        "samples_records": read.records,
        "samples_dropped_lines": len(read.bad_lines),
        "cot_sha256": file_sha256(run / "cot.jsonl"),
        "cot_source": cot_source,
        "settings": {
            "thinking": prompt.get("thinking"),
            "temperature": sampling.get("temperature"),
            "top_p": sampling.get("top_p"),
            "max_tokens": sampling.get("max_tokens"),
            "seed": identity.get("seed"),
            "backend": config.backend_name,
            "preset": config.preset,
            "dt_eval_version": config.dt_eval_version,
            "git_hash": config.git_hash,
        },
        "tasks": tasks,
    }


# ---------------------------------------------------------------------------------------------
# Rows -> columns, cells, comparability groups, differences (pure: verify reuses it)


def _gid(components: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _measured_group(t: dict[str, Any], column: str, settings: dict[str, Any], metric: str,
                    cot: dict[str, Any] | None = None) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "kind": "measured", "column": column, "task": t["task"], "task_version": t["task_version"],
        "data_sha256": t["data_sha256"], "limit": t["limit"],
        "extraction": f"dt-eval {settings.get('dt_eval_version') or '?'} extracted answers",
    }
    if t.get("family", "").startswith("lm-eval/"):
        comp["extraction"] = f"{t.get('scorer')} {t.get('metric')} (reasoning stripped first)"
    if metric in ("hybrid", "rubrics") and cot:
        comp["scorer"] = f"{metric} {cot[metric].get('version')}"
        comp["judge"] = cot.get("judge")
    return comp


def _describe(comp: dict[str, Any], t: dict[str, Any] | None = None) -> str:
    if comp["kind"] == "reported":
        s = f"reported by the source; data version: {comp['data_version']}"
        if comp.get("data_sha256"):
            s += f" (sha256 {comp['data_sha256'][:12]}…)"
        return s + "; prompt, answer extraction and decoding as in the source"
    sha = comp.get("data_sha256")
    label = (t or {}).get("data_version_label")
    data = f"{label} (sha256 {sha[:12]}…)" if label and sha else (f"sha256 {sha[:12]}… (not a known release file)"
                                                                   if sha else "unknown metadata file")
    items = (t or {}).get("items")
    bench = (t or {}).get("benchmark_items")
    subset = f"{items} of {bench} items" if items is not None and bench and items != bench else f"{items} items"
    if comp.get("limit"):
        subset += f", first {comp['limit']} (--limit)"
    s = f"measured: task {comp['task']} (version {comp['task_version']}), data {data}, {subset}, {comp['extraction']}"
    if comp.get("scorer"):
        s += f"; {comp['scorer']}, judge {comp.get('judge') or 'unknown'}"
    return s


def _match_names(m: dict[str, Any]) -> set[str]:
    names = {normalise_model_name(m.get("name") or ""), normalise_model_name(m.get("model") or "")}
    for k in ("alias", "aliases", "base_model_alias"):
        v = (m.get("training") or {}).get(k)
        for x in ([v] if isinstance(v, str) else v or []):
            names.add(normalise_model_name(str(x)))
    for x in m.get("aliases") or []:
        names.add(normalise_model_name(x))
    return {n for n in names if n}


def assemble(measured: list[dict[str, Any]], reported: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns, cells with comparability markers, legend, and measured-minus-reported diffs."""
    groups: dict[str, dict[str, Any]] = {}
    cells_m: list[dict[str, dict[str, Any]]] = []
    col_seen: list[str] = []

    def add_group(comp: dict[str, Any], t: dict[str, Any] | None) -> str:
        gid = _gid(comp)
        groups.setdefault(gid, {"column": comp["column"], "kind": comp["kind"], "components": comp,
                                "description": _describe(comp, t)})
        return gid

    for m in measured:
        cells: dict[str, dict[str, Any]] = {}
        used: set[str] = set()
        for name, t in m["tasks"].items():
            fam = t["family"]
            col = fam if fam not in used else name
            used.add(col)
            if t.get("accuracy") is not None:
                ci = t.get("accuracy_ci") or {}
                cells[col] = {"value": t["accuracy"]["mean"], "std": t["accuracy"]["std"], "k": t["repeats"],
                              "n": t["items"], "task": name,
                              "ci_low": ci.get("low"), "ci_high": ci.get("high"), "ci_method": ci.get("method"),
                              "subset": t.get("subset"),
                              "group": add_group(_measured_group(t, col, m["settings"], "accuracy"), t)}
            cot = t.get("cot") or {}
            if cot.get("rubrics"):
                key = f"{col}:rubrics"
                cells[key] = {"value": cot["rubrics"]["score"], "std": None, "k": t["repeats"],
                              "n": cot["rubrics"]["scored"], "task": name,
                              "group": add_group(_measured_group(t, key, m["settings"], "rubrics", cot), t)}
            if cot.get("hybrid"):
                key = f"{col}:hybrid"
                cells[key] = {"value": cot["hybrid"]["mean"], "std": None, "k": t["repeats"],
                              "n": cot["hybrid"]["scored"], "task": name,
                              "group": add_group(_measured_group(t, key, m["settings"], "hybrid", cot), t)}
            for c in cells:
                if c not in col_seen:
                    col_seen.append(c)
        cells_m.append(cells)

    cells_r: list[dict[str, dict[str, Any]]] = []
    for r in reported:
        cells = {}
        for key, s in r["scores"].items():
            comp = {"kind": "reported", "column": key, "data_version": s.get("data_version") or "unknown",
                    "data_sha256": s.get("data_sha256")}
            cells[key] = {"value": s["value"], "std": None, "k": None, "n": None, "group": add_group(comp, None)}
            if key not in col_seen:
                col_seen.append(key)
        cells_r.append(cells)

    labels = Labels(measured)
    fams_seen = list(dict.fromkeys(labels.family_of(k.partition(":")[0]) for k in col_seen))

    def col_order(key: str) -> tuple:
        base, _, metric = key.partition(":")
        fam = labels.family_of(base)
        rank = labels.rank(fam)
        return (rank is None, rank if rank is not None else fams_seen.index(fam), base != fam, base,
                {"": 0, "rubrics": 1, "hybrid": 2}.get(metric, 3))

    columns = []
    for key in sorted(col_seen, key=col_order):
        metric = key.partition(":")[2] or "accuracy"
        columns.append({"key": key, "title": labels.column_title(key), "metric": metric,
                        "unit": METRIC_NAMES[metric]})

    # reference group per column and markers for the rest
    marker_of: dict[str, str] = {}
    reference: dict[str, str | None] = {}
    for col in columns:
        key = col["key"]
        mg = Counter(c[key]["group"] for c in cells_m if key in c)
        rg = Counter(c[key]["group"] for c in cells_r if key in c)
        order = [c[key]["group"] for c in cells_m + cells_r if key in c]
        pool = mg or rg
        best = max(pool.values()) if pool else 0
        ref = next((g for g in order if pool.get(g) == best), None)
        reference[key] = ref
        col["reference_group"] = ref
        for g in dict.fromkeys(order):
            if g != ref and g not in marker_of:
                i = len(marker_of)
                marker_of[g] = MARKERS[i] if i < len(MARKERS) else f"[{i + 1}]"
    for cells in cells_m + cells_r:
        for c in cells.values():
            c["marker"] = marker_of.get(c["group"], "")
    for gid, g in groups.items():
        g["marker"] = marker_of.get(gid, "")
        g["reference"] = reference.get(g["column"]) == gid

    # measured minus reported where both exist for one model
    diffs = []
    for mi, m in enumerate(measured):
        names = _match_names(m)
        for ri, r in enumerate(reported):
            rnames = {normalise_model_name(x) for x in [r["model"], *r.get("aliases", [])]}
            if not names & rnames:
                continue
            for col in columns:
                key = col["key"]
                a, b = cells_m[mi].get(key), cells_r[ri].get(key)
                if a is None or b is None:
                    continue
                diffs.append({"measured": mi, "reported": ri, "column": key, "measured_value": a["value"],
                              "reported_value": b["value"], "delta": a["value"] - b["value"],
                              "measured_marker": a["marker"], "reported_marker": b["marker"],
                              "same_group": a["group"] == b["group"]})
    return {"columns": columns, "measured_cells": cells_m, "reported_cells": cells_r, "groups": groups,
            "diffs": diffs, "main_tables": main_tables(measured, columns, cells_m, cells_r, labels)}


def _outcomes(t: dict[str, Any]) -> dict[str, dict[int, bool]]:
    return {item: {int(r): bool(v) for r, v in reps.items()} for item, reps in (t.get("outcomes") or {}).items()}


def vs_best(measured: list[dict[str, Any]], best: tuple[int, dict[str, Any]], row: tuple[int, dict[str, Any]]
            ) -> dict[str, Any]:
    """A measured cell against the best measured cell of its column: the paired comparison on the
    items both runs scored (row minus best), or why there is none."""
    from dt_eval.scoring.stats import compare_paired

    (bi, bcell), (ri, rcell) = best, row
    tb, tr = measured[bi]["tasks"][bcell["task"]], measured[ri]["tasks"][rcell["task"]]
    if not (tb.get("data_sha256") and tb.get("data_sha256") == tr.get("data_sha256")):
        return {"status": "not tested", "why": "another data file than the best measured row"}
    ob, orow = _outcomes(tb), _outcomes(tr)
    if not ob or not orow:
        return {"status": "not tested", "why": "no per-item verdicts (lm-eval metric)"}
    cmp = compare_paired(ob, orow)
    if not cmp.n_shared:
        return {"status": "not tested", "why": "no item scored in both runs"}
    return {"status": "tested", "diff": cmp.diff * 100, "ci_low": cmp.ci_low * 100, "ci_high": cmp.ci_high * 100,
            "p": cmp.p_value, "method": cmp.method, "ci_method": cmp.ci_method, "n_shared": cmp.n_shared,
            "flips_up": cmp.a_wrong_b_right, "flips_down": cmp.a_right_b_wrong, "significant": cmp.p_value < ALPHA}


def main_tables(measured: list[dict[str, Any]], columns: list[dict[str, Any]],
                cells_m: list[dict[str, dict[str, Any]]], cells_r: list[dict[str, dict[str, Any]]],
                labels: Labels) -> list[dict[str, Any]]:
    """One table per benchmark (a column's base key with its reasoning-score columns): measured and
    reported rows ranked together by the first column (accuracy), ties sharing a rank, rows without
    that number last; each measured row tested against the best measured row."""
    tables = []
    for base in dict.fromkeys(c["key"].partition(":")[0] for c in columns):
        keys = [c["key"] for c in columns if c["key"].partition(":")[0] == base]
        primary = keys[0]
        rows = []
        for kind, cells_list in (("measured", cells_m), ("reported", cells_r)):
            for i, cells in enumerate(cells_list):
                if any(k in cells for k in keys):
                    c = cells.get(primary)
                    rows.append({"kind": kind, "row": i, "value": c["value"] if c else None})
        rows.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0.0), r["kind"] != "measured", r["row"]))
        last: tuple[float, int] | None = None
        for pos, r in enumerate(rows, start=1):
            if r["value"] is None:
                r["rank"] = None
            elif last is not None and r["value"] == last[0]:
                r["rank"] = last[1]
            else:
                r["rank"], last = pos, (r["value"], pos)
        best = next((r for r in rows if r["kind"] == "measured" and r["value"] is not None), None)
        for r in rows:
            if r["kind"] == "reported":
                r["vs_best"] = {"status": "not tested", "why": "reported: no per-item outputs"}
            elif r is best:
                r["vs_best"] = {"status": "best"}
            elif r["value"] is None or best is None or primary != base:
                r["vs_best"] = {"status": "not tested", "why": "no accuracy"}
            else:
                r["vs_best"] = vs_best(measured, (best["row"], cells_m[best["row"]][primary]),
                                       (r["row"], cells_m[r["row"]][primary]))
        tables.append({"key": base, "title": labels.column_title(base), "columns": keys, "primary": primary,
                       "best_measured": best["row"] if best else None, "rows": rows})
    return tables


def subset_warnings(measured: list[dict[str, Any]]) -> list[str]:
    """'NAME (RUN) mmau: subset: 10 of 1000 items (--limit 10)': what `build` warns about."""
    return [f"{m['name']} ({m['run']}) {name}: {t['subset']}" for m in measured for name, t in m["tasks"].items()
            if t.get("subset")]


def category_tables(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-category accuracy tables: one per (task family, breakdown field) present in the runs."""
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    labels = Labels(measured)
    for mi, m in enumerate(measured):
        for name, t in m["tasks"].items():
            fam = t["family"]
            for field, heading in (t.get("category_headings") or {}).items():
                cats = (t.get("categories") or {}).get(field)
                if not cats:
                    continue
                tab = tables.setdefault((fam, field), {"family": fam, "field": field,
                                                       "title": f"{labels.column_title(fam)}: {heading}",
                                                       "keys": [], "rows": []})
                for k in cats:
                    if k not in tab["keys"]:
                        tab["keys"].append(k)
                tab["rows"].append({"measured": mi, "task": name, "values": cats})
    return list(tables.values())


# ---------------------------------------------------------------------------------------------
# Whole leaderboard


def build_leaderboard(run_dirs: list[str | Path], out_dir: str | Path, published: PublishedFile | None = None,
                      published_path: str | Path | None = None, published_sha256: str | None = None,
                      names: dict[str, str] | None = None, title: str | None = None) -> dict[str, Any]:
    out = Path(out_dir).resolve()
    names = names or {}
    measured = []
    seen: set[Path] = set()
    for i, d in enumerate(run_dirs):
        run = Path(d).resolve()
        if run in seen:
            raise BuildError(f"{d} is given twice")
        seen.add(run)
        numbers = measure_run(run)
        recipe = read_recipe(numbers["model"])
        name = names.get(str(d)) or names.get(run.name) or names.get(str(run)) or display_name(numbers["model"], recipe)
        measured.append({
            "id": f"m{i + 1}",
            "name": name,
            "run": run.name,
            "run_dir": str(run),
            "run_dir_rel": _relpath(run, out),
            "training": recipe,
            **numbers,
        })
    reported = [entry_to_json(e) for e in (published.entries if published else [])]
    lb = {
        "schema": SCHEMA,
        "title": title or "Audio reasoning leaderboard",
        "dt_eval_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # where verify re-reads the published numbers: beside the output first (a moved site), then here
        "published_file": str(Path(published_path).resolve()) if published_path else None,
        "published_file_rel": _relpath(Path(published_path).resolve(), out) if published_path else None,
        "published_sha256": published_sha256,
        "measured": measured,
        "reported": reported,
    }
    lb.update(assemble(measured, reported))
    lb["category_tables"] = category_tables(measured)
    lb["warnings"] = subset_warnings(measured)
    return lb


def _relpath(path: Path, start: Path) -> str | None:
    import os

    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive (Windows)
        return None
