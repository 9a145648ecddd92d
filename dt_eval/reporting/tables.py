"""Tables for `dt-eval run` and `dt-eval report`: the official breakdown per task, then a
summary with dt-eval's additions (unparsed, ambiguous, truncated, errors, reasoning length, repeats)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from dt_eval.reporting.results import ReportError, load_run
from dt_eval.scoring.aggregate import fmt_mean_std

__all__ = ["ReportError", "compare_runs", "error_counts", "load_run_results", "print_results", "summary_rows"]


def load_run_results(run_dir: str | Path) -> dict[str, Any]:
    """A run's results recomputed from its samples, as results.json's dict (+ run_dir)."""
    return load_run(run_dir).to_json_dict()


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, t in results["tasks"].items():
        if t.get("kind") == "lm-eval":
            rows.append(_lm_eval_row(name, t))
            continue
        k = len(t["repeats"])
        row: dict[str, Any] = {"task": name, "samples": t["samples"]}
        if t.get("answers_available"):
            row["accuracy"] = fmt_mean_std(t["accuracy_mean"], t["accuracy_std"], k)
            row["95% CI"] = ci_text(t.get("accuracy_ci"))
            row["official raw"] = fmt_mean_std(t["accuracy_official_raw_mean"], t["accuracy_official_raw_std"], k)
        else:
            row["accuracy"] = "hidden (export)"
        last = t["repeats"][-1] if t["repeats"] else {}
        total_unparsed = sum(r.get("unparsed", 0) for r in t["repeats"])
        row |= {
            "errors": sum(r.get("errors", 0) for r in t["repeats"]),  # beside the accuracy they lower
            "unparsed": total_unparsed,
            "ambiguous": sum(r.get("ambiguous", 0) for r in t["repeats"]),
            "truncated": sum(r.get("truncated", 0) for r in t["repeats"]),
            "cut (length)": sum(r.get("cut_by_length", 0) for r in t["repeats"]),
            "data errors": sum(r.get("data_errors", 0) for r in t["repeats"]),
            "reasoning chars": round(last.get("mean_reasoning_chars", 0.0)),
        }
        if k > 1 and t.get("answers_available"):
            row[f"pass@{k}"] = f"{t[f'pass_at_{k}']:.2f}"
            row[f"maj@{k}"] = f"{t['majority_vote_accuracy']:.2f}"
        if t.get("cot"):  # reasoning scores (dt-eval rescore / run --cot)
            from dt_eval.reporting.cot_table import cot_columns

            row |= cot_columns(t["cot"])
        if not t.get("complete", True):
            row["task"] = f"{name} (incomplete)"
        rows.append(row)
    if not any(row.get("data errors") for row in rows):  # most runs have none: no column
        for row in rows:
            row.pop("data errors", None)
    return rows


def ci_text(ci: dict[str, Any] | None) -> str:
    """'[30.57, 86.32]' from a task's accuracy_ci (percent); '-' when there is none."""
    return f"[{ci['low']:.2f}, {ci['high']:.2f}]" if ci else "-"


def ci_footnote(results: dict[str, Any]) -> str | None:
    """What the `95% CI` column is: the method of each task's interval, named."""
    from dt_eval.scoring.stats import METHOD_NAMES

    methods = list(dict.fromkeys(t["accuracy_ci"]["method"] for t in results["tasks"].values()
                                 if t.get("accuracy_ci")))
    if not methods:
        return None
    text = "; ".join(f"{METHOD_NAMES.get(m, m)} ({m})" for m in methods)
    return (f"95% CI: {text}, over the scored items (dt-eval's, not the official script's); the standard "
            "error is in results.json (accuracy_ci.stderr).")


def subset_lines(results: dict[str, Any]) -> list[str]:
    """A visible mark for each task run on part of its benchmark (--limit, or a smaller file)."""
    from dt_eval.records import TaskResults

    out = []
    for name, t in results["tasks"].items():
        subset = TaskResults.model_validate(t).subset if t.get("kind") != "lm-eval" else None
        if subset:
            out.append(f"dt-eval: {name}: {subset}; not a number on the whole benchmark")
    return out


def category_ci_lines(results: dict[str, Any]) -> list[str]:
    """dt-eval's per-category table: each breakdown category's accuracy with its 95% CI."""
    rows = []
    for name, t in results["tasks"].items():
        for field, cats in (t.get("categories_ci") or {}).items():
            for key, ci in cats.items():
                rows.append({"task": name, "field": field, "category": key, "items": ci["n"],
                             "accuracy": _category_accuracy(t, field, key), "95% CI": ci_text(ci)})
    if not rows:
        return []
    return ["", "dt-eval: accuracy per category with its 95% CI (same method as above)",
            tabulate(rows, headers="keys", disable_numparse=True)]


def _category_accuracy(t: dict[str, Any], field: str, key: str) -> str:
    """The official breakdown's accuracy of one category (mean ± std over repeats)."""
    vals = [r["breakdowns"][field][key]["accuracy"] for r in t.get("repeats") or []
            if key in (r.get("breakdowns") or {}).get(field, {}) and r["breakdowns"][field][key].get("total")]
    if not vals:
        return "-"
    from dt_eval.scoring.aggregate import _mean_std

    mean, std = _mean_std(vals)
    return fmt_mean_std(mean, std, len(vals))


def _lm_eval_row(name: str, t: dict[str, Any]) -> dict[str, Any]:
    """An lm-eval task: its primary metric as lm-eval reported it (all metrics in --json)."""
    rep = t["repeats"][0] if t["repeats"] else {}
    primary = t.get("primary_metric")
    value = (t.get("metrics") or {}).get(primary, {}).get("value") if primary else None
    row: dict[str, Any] = {"task": name, "samples": t["samples"],
                           "accuracy": f"{value * 100:.2f} ({primary})" if value is not None else "not scored yet",
                           "95% CI": "-",  # lm-eval's own stderr is printed with its metrics
                           "official raw": "lm-eval", "errors": rep.get("errors", 0), "unparsed": "-",
                           "ambiguous": "-",
                           "truncated": rep.get("truncated", 0), "cut (length)": rep.get("cut_by_length", 0),
                           "reasoning chars": round(rep.get("mean_reasoning_chars", 0.0))}
    if not t.get("complete", True):
        row["task"] = f"{name} (incomplete)"
    return row


def lm_eval_lines(t: dict[str, Any]) -> list[str]:
    lines = []
    for key, m in (t.get("metrics") or {}).items():
        if m.get("value") is None:
            continue
        err = f" ± {m['stderr']:.4f}" if m.get("stderr") is not None else ""
        check = ""
        if m.get("agrees") is False:
            check = f"  (recomputed from samples: {m['recomputed']:.4f}: MISMATCH)"
        lines.append(f"{key}: {m['value']:.4f}{err}{check}")
    return lines


def error_counts(results: dict[str, Any], data_errors: bool = True) -> dict[str, int]:
    """Samples with an `error` record, per task that has any: failed generations (counted as wrong
    answers) and, unless `data_errors=False`, items whose metadata cannot be scored. A run with
    either is not a clean measurement (`dt-eval run` exits 1)."""
    out = {}
    for name, t in results["tasks"].items():
        n = sum(r.get("errors", 0) + (r.get("data_errors", 0) if data_errors else 0) for r in t.get("repeats") or [])
        if n:
            out[name] = n
    return out


def print_results(results: dict[str, Any], run_dir: str | Path | None = None) -> None:
    for name, t in results["tasks"].items():
        reps = t["repeats"]
        if t.get("kind") == "lm-eval":
            print(f"\n== {name} (lm-eval {t.get('lm_eval_task')}, as lm-eval reports it; reasoning stripped "
                  f"before its filters) ==")
            for line in lm_eval_lines(t) or ["not scored yet (rerun the same command to finish)"]:
                print(line)
            continue
        if not t.get("answers_available") or not reps:
            continue
        print(f"\n== {name} (official breakdown on extracted answers, repeat {reps[0]['repeat']}) ==")
        for line in reps[0]["official_lines"]:
            print(_printable(line))
        if reps[0].get("errors"):  # right after the official block, labelled as ours
            print(f"dt-eval: {reps[0]['errors']} of these {reps[0].get('total', t['samples'])} samples FAILED "
                  "(no answer; counted as wrong in the accuracy above)")
        bad = reps[0].get("data_error_items") or []
        if bad:
            shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
            print(_printable(f"[dt-eval] {len(bad)} item(s) left out of the accuracy: their metadata cannot be "
                             f"scored by the official script: {shown}"))
    rows = summary_rows(results)
    print()
    print(_printable(tabulate(rows, headers="keys", disable_numparse=True)))
    print("\naccuracy: official match on the extracted final answer; official raw: the official script's "
          "match on the whole post-reasoning output (no extraction); unparsed: no answer could be read; "
          "ambiguous: a bare letter that is also another option's text (chord 'C' vs label C); both scored wrong.")
    note = ci_footnote(results)
    if note:
        print(note)
    for line in subset_lines(results):
        print(_printable(line))
    for line in category_ci_lines(results):
        print(_printable(line))
    errors = error_counts(results, data_errors=False)
    if errors:
        per_task = ", ".join(f"{k} {v}" for k, v in errors.items())
        print(f"\nerrors: {sum(errors.values())} sample(s) failed ({per_task}) and count as wrong answers; "
              "rerun the same `dt-eval run` command with --retry-errors to redo them (see `error` in samples.jsonl "
              "for why).")
    if any("data errors" in row for row in rows):
        print("data errors: items whose metadata the official script cannot score (no answer, a null option); "
              "counted here, not in the accuracy.")
    if run_dir is not None:
        print(f"run directory: {run_dir}")


def _printable(text: str) -> str:
    """A lone surrogate (from metadata or a model output) cannot be printed as UTF-8: show it escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def compare_runs(all_results: list[Any], names: list[str] | None = None, *,
                 allow_different_data: bool = False) -> str:
    """What `dt-eval report A B ...` prints: the runs (run directories, RunResults, or results
    dicts that name their run_dir) compared with the first on the items they share; see
    dt_eval/reporting/compare.py. Different metadata files are refused (DifferentDataError)
    unless `allow_different_data`."""
    from dt_eval.reporting.compare import compare_runs as compare

    runs = [r["run_dir"] if isinstance(r, dict) and r.get("run_dir") else r for r in all_results]
    if any(isinstance(r, dict) for r in runs):
        raise ReportError("compare_runs: a results dict without run_dir cannot be compared item by item")
    return compare(runs, allow_different_data=allow_different_data).render()
