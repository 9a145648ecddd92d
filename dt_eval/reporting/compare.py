"""Runs compared on the items they share: what `dt-eval report A B [C ...]` prints and
`dt_eval.compare_runs` returns.

Each run after the first is compared with the first (the baseline), task by task, on the items
both scored: the accuracy difference with its 95% CI (paired bootstrap over the shared items), a
paired test (McNemar's exact test with one sample per item, a paired bootstrap test with repeats;
see dt_eval/scoring/stats.py) and how many items flipped each way. Runs get short names (model +
the settings that tell them apart) and the settings that differ are listed. Runs made on
different metadata files (sha256) are refused unless `allow_different_data=True`: an item id on
two files need not be the same question.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from dt_eval.records import RunConfig, RunResults
from dt_eval.reporting.results import ReportError, load_run
from dt_eval.scoring.stats import (
    LEVEL,
    METHOD_NAMES,
    RESAMPLES,
    SEED,
    PairedComparison,
    compare_paired,
    format_p,
)

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TEST_NAMES = {"mcnemar-exact": "McNemar exact test", "paired-bootstrap": "paired bootstrap test over items"}
# settings that say when or how a run was launched, not what it measured
_NOT_SETTINGS = {"created", "updated", "command", "python", "concurrency"}
# settings shown first in a short name when they tell runs apart (key -> short form)
_SHORT = {"identity.prompt.thinking": "thinking {}", "identity.sampling.temperature": "T={}",
          "identity.sampling.top_p": "top_p={}", "identity.sampling.max_tokens": "max {} tok",
          "repeats": "k={}", "backend.name": "{}", "preset": "preset {}", "identity.seed": "seed {}"}


class DifferentDataError(ReportError):
    """Two runs of one task used different metadata files: their numbers are not comparable."""


@dataclass(frozen=True)
class RunInfo:
    label: str  # A, B, C ...
    name: str  # short name: model + the settings that tell the runs apart
    run_dir: str | None
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "run_dir": self.run_dir, "model": self.model}


@dataclass(frozen=True)
class TaskComparison:
    """Run `b` against the baseline `a` on one task (`paired.diff` = accuracy of b - of a)."""

    task: str
    a: str  # run labels
    b: str
    paired: PairedComparison
    same_data: bool | None  # None: a run did not record its metadata file's sha256

    def to_dict(self) -> dict[str, Any]:
        d = self.paired.to_dict(scale=100)
        return {"task": self.task, "a": self.a, "b": self.b, "same_data": self.same_data, **d,
                "p_text": format_p(self.paired.p_value), "test": TEST_NAMES[self.paired.method],
                "ci_method_name": METHOD_NAMES[self.paired.ci_method]}


@dataclass
class RunComparison:
    """`dt_eval.compare_runs`' answer. Accuracies and differences in percent in `to_json_dict()`;
    `tasks[i].paired` holds the fractions (scoring.stats.PairedComparison)."""

    runs: list[RunInfo]
    results: list[RunResults] = field(repr=False)
    settings_diff: dict[str, list[Any]]  # setting -> its value in each run (only those that differ)
    tasks: list[TaskComparison]
    not_compared: list[str]  # why a task of some run has no paired comparison
    data_warnings: list[str]  # different metadata files, compared anyway (allow_different_data)
    level: float = LEVEL
    seed: int = SEED
    resamples: int = RESAMPLES

    def to_json_dict(self, results: bool = False) -> dict[str, Any]:
        """The comparison as JSON-ready data (percent); `results=True` adds each run's whole
        results.json dict under "results" (what `dt-eval report --json A B` prints)."""
        out = {
            "baseline": self.runs[0].label,
            "runs": [r.to_dict() for r in self.runs],
            "accuracy": [_accuracies(res) for res in self.results],
            "settings_diff": self.settings_diff,
            "comparisons": [t.to_dict() for t in self.tasks],
            "not_compared": self.not_compared,
            "data_warnings": self.data_warnings,
            "methods": {"accuracy_ci": "Wilson score interval (wilson; wilson-effective-n with repeats)",
                        "difference_ci": METHOD_NAMES["paired-bootstrap"],
                        "test": "McNemar exact test (mcnemar-exact) with one sample per item, else a paired "
                                "bootstrap test (paired-bootstrap)",
                        "level": self.level, "seed": self.seed, "resamples": self.resamples},
        }
        if results:
            out["results"] = [res.to_json_dict() for res in self.results]
        return out

    def render(self) -> str:
        return render_comparison(self)


def _accuracies(res: RunResults) -> dict[str, Any]:
    out = {}
    for name, t in res.tasks.items():
        out[name] = {"accuracy": t.accuracy, "accuracy_std": t.accuracy_std,
                     "official_raw": t.official_raw, "items": t.items, "subset": t.subset,
                     "accuracy_ci": t.accuracy_ci.to_json_dict() if t.accuracy_ci else None,
                     "data_sha256": t.data_sha256}
    return out


# ------------------------------------------------------------------------------------ settings


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, Mapping) and obj:
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = obj


def run_settings(config: RunConfig | None) -> dict[str, Any]:
    """What a run measured with, flattened: model, sampling, prompt, seed, audio, backend (no
    URL, key or header entries), preset, dt-eval version, and per task its data file, task
    version, task config, limit and repeats. Never credentials."""
    cfg = config or RunConfig()
    out: dict[str, Any] = {}
    _flatten(cfg.identity, "identity", out)
    for k, v in cfg.backend.items():
        if not any(w in k.lower() for w in ("url", "key", "header", "auth", "token", "secret", "password")):
            _flatten(v, f"backend.{k}", out)
    for k in ("preset", "dt_eval_version", "git_hash"):
        out[k] = getattr(cfg, k)
    for name, info in cfg.tasks.items():
        out[f"tasks.{name}.data_sha256"] = info.sha256
        out[f"tasks.{name}.task_version"] = info.task_version
        out[f"tasks.{name}.limit"] = info.limit
        out[f"tasks.{name}.repeats"] = info.repeats
        if info.task_config is not None:  # the prompt, fields and scorer the run used
            blob = json.dumps(info.task_config, sort_keys=True, default=str).encode()
            out[f"tasks.{name}.task_config_sha256"] = hashlib.sha256(blob).hexdigest()
    return {k: v for k, v in out.items() if k.split(".")[0] not in _NOT_SETTINGS}


def settings_diff(configs: Sequence[RunConfig | None]) -> dict[str, list[Any]]:
    """Settings whose value is not the same in every run (a setting a run lacks is None there)."""
    flat = [run_settings(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str)
                                                                for f in flat}) > 1}


def _show(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "…"
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def short_names(configs: Sequence[RunConfig | None], run_dirs: Sequence[str | None],
                diff: Mapping[str, list[Any]]) -> list[str]:
    """Model + the settings that tell the runs apart ("Qwen2-Audio-7B-Instruct, thinking off");
    the run directory's name is added where that still leaves two runs alike."""
    from dt_eval.reporting.leaderboard.build import display_name

    models = [display_name((c or RunConfig()).model) for c in configs]
    parts: list[list[str]] = [[] for _ in configs]
    # a per-task repeat count counts once as k=
    keyed = {k if not k.endswith(".repeats") else "repeats": v for k, v in diff.items()}
    for key, fmt in _SHORT.items():
        if key in keyed:
            for i, v in enumerate(keyed[key]):
                parts[i].append(fmt.format(_show(v)))
    names = [m + (f" ({', '.join(p)})" if p else "") for m, p in zip(models, parts)]
    alike = {n for n in names if names.count(n) > 1}
    return [f"{n} [{Path(d).name}]" if n in alike and d else n for n, d in zip(names, run_dirs)]


# ----------------------------------------------------------------------------------- compare


def _as_results(run: RunResults | str | Path) -> RunResults:
    if isinstance(run, RunResults):
        if run.samples and any(t.item_outcomes is None and t.answers_available and t.kind != "lm-eval"
                               for t in run.tasks.values()):
            from dt_eval.scoring.aggregate import compute_run_results

            fresh = compute_run_results(run.config, run.samples)  # the per-item verdicts, from the samples
            fresh.run_dir = run.run_dir
            return fresh
        return run
    return load_run(run)


def compare_runs(runs: Sequence[RunResults | str | Path], *, allow_different_data: bool = False,
                 level: float = LEVEL, seed: int = SEED, resamples: int = RESAMPLES) -> RunComparison:
    """Compare runs (run directories or loaded RunResults, at least two) with the first, task by
    task, on the items both scored. Raises DifferentDataError when a task's metadata file differs
    between the baseline and a run, unless `allow_different_data`."""
    if len(runs) < 2:
        raise ReportError("compare_runs needs at least two runs")
    results = [_as_results(r) for r in runs]
    configs = [r.config for r in results]
    dirs = [r.run_dir for r in results]
    diff = settings_diff(configs)
    names = short_names(configs, dirs, diff)
    infos = [RunInfo(LABELS[i] if i < len(LABELS) else f"R{i + 1}", names[i], dirs[i], results[i].model)
             for i in range(len(results))]
    base = results[0]
    comparisons: list[TaskComparison] = []
    not_compared: list[str] = []
    warnings: list[str] = []
    refused: list[str] = []
    for i, other in enumerate(results[1:], start=1):
        a, b = infos[0].label, infos[i].label
        for task in list(dict.fromkeys([*base.tasks, *other.tasks])):
            ta, tb = base.tasks.get(task), other.tasks.get(task)
            if ta is None or tb is None:
                not_compared.append(f"{task}: only in {a if tb is None else b}")
                continue
            if ta.kind == "lm-eval" or tb.kind == "lm-eval":
                not_compared.append(f"{task} ({b} vs {a}): an lm-eval task, compared by lm-eval's metric only "
                                    "(no per-item verdicts of dt-eval's scorer)")
                continue
            if ta.item_outcomes is None or tb.item_outcomes is None:
                not_compared.append(f"{task} ({b} vs {a}): answers hidden or not scored, nothing to compare")
                continue
            same = None if not (ta.data_sha256 and tb.data_sha256) else ta.data_sha256 == tb.data_sha256
            if same is False:
                msg = (f"{task}: {b} ran on another metadata file (sha256 {tb.data_sha256[:12]}…) than "
                       f"{a} (sha256 {ta.data_sha256[:12]}…)")
                if not allow_different_data:
                    refused.append(msg)
                    continue
                warnings.append(msg + "; compared anyway on the item ids both files hold")
            paired = compare_paired(ta.item_outcomes, tb.item_outcomes, level=level, seed=seed, resamples=resamples)
            if not paired.n_shared:
                not_compared.append(f"{task} ({b} vs {a}): no item scored in both runs")
                continue
            comparisons.append(TaskComparison(task, a, b, paired, same))
    if refused:
        raise DifferentDataError("the runs used different data, so their numbers are not comparable:\n  "
                                 + "\n  ".join(refused)
                                 + "\ncompare anyway (on the item ids both files share) with --allow-different-data "
                                   "(dt_eval.compare_runs(..., allow_different_data=True))")
    return RunComparison(infos, results, diff, comparisons, not_compared, warnings, level, seed, resamples)


# ------------------------------------------------------------------------------------ render


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 100:+.2f}" if signed else f"{x * 100:.2f}"


def render_comparison(cmp: RunComparison) -> str:
    """The text `dt-eval report A B ...` prints."""
    from dt_eval.scoring.aggregate import fmt_mean_std

    lines = ["Runs (each compared with A, on the items both scored):"]
    lines += tabulate([[r.label, r.name, r.run_dir or "-"] for r in cmp.runs], tablefmt="plain").splitlines()
    lines.append("")
    if cmp.settings_diff:
        lines.append("Settings that differ:")
        lines += tabulate([[k, *(_show(v) for v in vals)] for k, vals in cmp.settings_diff.items()],
                          headers=["setting", *(r.label for r in cmp.runs)], disable_numparse=True).splitlines()
    else:
        lines.append("Settings that differ: none (same model, sampling, prompt, data and dt-eval version)")
    lines.append("")
    rows = []
    for task in list(dict.fromkeys(t for res in cmp.results for t in res.tasks)):
        for info, res in zip(cmp.runs, cmp.results):
            t = res.tasks.get(task)
            if t is None:
                continue
            if t.kind == "lm-eval":
                acc, ci = "lm-eval", "-"
            elif t.accuracy is None:
                acc, ci = "hidden", "-"
            else:
                acc = fmt_mean_std(t.accuracy, t.accuracy_std or 0.0, len(t.repeats))
                ci = t.accuracy_ci.text() if t.accuracy_ci else "-"
            raw = f"{t.official_raw:.2f}" if t.official_raw is not None else "-"
            rows.append([task, info.label, acc, ci, raw, t.items, t.unparsed if t.kind != "lm-eval" else "-"])
    lines += tabulate(rows, headers=["task", "run", "accuracy", "95% CI", "official raw", "items", "unparsed"],
                      disable_numparse=True).splitlines()
    lines.append("")
    if cmp.tasks:
        prow = []
        for c in cmp.tasks:
            p = c.paired
            prow.append([c.task, f"{c.b} − {c.a}", p.n_shared, _pct(p.acc_a), _pct(p.acc_b), _pct(p.diff, True),
                         f"[{_pct(p.ci_low, True)}, {_pct(p.ci_high, True)}]",
                         f"{format_p(p.p_value)} ({p.method})", p.a_wrong_b_right, p.a_right_b_wrong])
        lines.append("Paired comparison on the shared items:")
        lines += tabulate(prow, headers=["task", "runs", "shared items", "acc A", "acc B", "diff", "95% CI",
                                         "paired test", "flips +", "flips −"], disable_numparse=True).splitlines()
        methods = sorted({c.paired.method for c in cmp.tasks})
        lines.append("")
        lines.append(
            f"diff: accuracy of the later run minus A's on the items both scored (percentage points); 95% CI: "
            f"{METHOD_NAMES['paired-bootstrap']} ({cmp.resamples} resamples, seed {cmp.seed}); paired test: "
            + "; ".join(f"{TEST_NAMES[m]} ({m})" for m in methods)
            + ". flips +: items wrong in A and right in the later run; flips −: the reverse (with repeats: the "
              "item's mean over repeats went up / down). Each run's 95% CI: Wilson score interval "
              "(at the effective sample size with repeats). No correction for multiple comparisons.")
    for info, res in zip(cmp.runs, cmp.results):
        for task, t in res.tasks.items():
            if t.kind != "lm-eval" and t.subset:
                lines.append(f"note: {info.label} {task}: {t.subset}")
    for w in cmp.data_warnings:
        lines.append(f"warning: {w}")
    for n in cmp.not_compared:
        lines.append(f"not compared: {n}")
    return "\n".join(lines).rstrip("\n")
