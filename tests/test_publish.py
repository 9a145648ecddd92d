"""Numbers a researcher can publish: the 95% CI and standard error of every accuracy (results.json,
the API, `dt-eval run`/`report` output, per category), and paired comparisons of runs on the items
they share (`dt_eval.compare_runs`, `dt-eval report A B`). Run directories are written by the real
record builder from scripted generations; expected values are computed independently with the
statistics module's primitives (Wilson by formula, McNemar from the flip counts)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

import dt_eval
from dt_eval.backends.base import Generation

from dt_eval.pipeline.records import make_sample_record
from dt_eval.reporting.compare import DifferentDataError
from dt_eval.scoring.stats import mcnemar_exact, mean_stderr, wilson_interval
from dt_eval.storage.rundir import RunDir
from dt_eval.tasks.config import load_task
from dt_eval.tasks.data import load_task_data
from dt_eval.tasks.prompts import PromptSettings

from .cli import invoke
from .synthetic_meta import mmar_records, mmau_records
from .test_leaderboard import write_bench

N = 40  # items of the MMAU file


def choice_run(run: Path, benches: dict[str, Path], right: Callable[[int, int], bool], *, model: str = "org/Model-7B",
               thinking: str = "on", repeats: int = 1, limit: int | None = None, temperature: float = 0.0) -> Path:
    """A run whose answer to item i, repeat r, is right exactly when right(i, r)."""
    with RunDir(run) as rd:
        loaded = {t: load_task_data(load_task(t), b, limit=limit) for t, b in benches.items()}  # as the runner does
        rd.write_config({
            "dt_eval_version": "0.1.0",
            "identity": {"model": model, "seed": 0, "prompt": {"thinking": thinking},
                         "sampling": {"temperature": temperature, "max_tokens": 512}},
            "backend": {"name": "openai", "base_urls": ["http://127.0.0.1:9/v1"]},
            "tasks": {t: lt.to_json() | {"limit": limit, "repeats": repeats} for t, lt in loaded.items()},
        })
        for t, lt in loaded.items():
            cfg = load_task(t)
            for r in range(repeats):
                for idx, item in enumerate(lt.items):
                    good = item.choices.index(item.answer)
                    k = good if right(idx, r) else next(j for j, c in enumerate(item.choices) if c != item.answer)
                    text = f"<think>\nListening.\n</think>\n\n({'ABCDEFGHIJ'[k]}) {item.choices[k]}"
                    gen = Generation(key=f"{t}/{item.id}/{r}", text=text, finish_reason="stop")
                    rd.append([make_sample_record(cfg, idx, item, r, gen, [], PromptSettings())])
    return run


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("pub")
    return {"root": root, "mmau": write_bench(root, "mmau", mmau_records(N, 7)),
            "mmau-other": write_bench(root, "mmau", mmau_records(N, 8)),
            "mmar": write_bench(root, "mmar", mmar_records(30, 9))}


@pytest.fixture(scope="module")
def runs(bench):
    root = bench["root"]
    # A: right on items 0-19; B: right on 0-29 except 0-1 (10 flips up, 2 down); C: thinking off
    a = choice_run(root / "a", {"mmau": bench["mmau"], "mmar": bench["mmar"]}, lambda i, r: i < 20)
    b = choice_run(root / "b", {"mmau": bench["mmau"], "mmar": bench["mmar"]}, lambda i, r: 2 <= i < 30,
                   thinking="off")
    other = choice_run(root / "other", {"mmau": bench["mmau-other"]}, lambda i, r: i < 25)
    k3 = choice_run(root / "k3", {"mmau": bench["mmau"]}, lambda i, r: i < 10 or (i < 20 and r == 0), repeats=3,
                    temperature=0.7)
    return {"a": a, "b": b, "other": other, "k3": k3}


# --------------------------------------------------------------------------------------------
# intervals in results.json and the API


def test_accuracy_ci_and_stderr_in_results_and_api(runs):
    res = dt_eval.load_run(runs["a"])
    t = res.tasks["mmau"]
    assert t.accuracy == pytest.approx(50.0)
    low, high = wilson_interval(20, N)  # by formula, independent of the aggregate
    assert (t.accuracy_ci.low, t.accuracy_ci.high) == pytest.approx((low * 100, high * 100))
    assert t.accuracy_ci.method == "wilson" and t.accuracy_ci.n == N and t.accuracy_ci.level == 0.95
    assert t.stderr == pytest.approx(mean_stderr([1.0] * 20 + [0.0] * 20) * 100)
    stored = res.to_json_dict()["tasks"]["mmau"]
    assert stored["accuracy_ci"]["stderr"] == pytest.approx(t.stderr)
    assert "item_outcomes" not in stored  # per-item verdicts stay in memory
    # per category: one interval per breakdown category, on that category's items
    for field, table in stored["repeats"][0]["breakdowns"].items():
        for key, tally in table.items():
            if not tally["total"]:
                continue
            ci = stored["categories_ci"][field][key]
            low, high = wilson_interval(tally["correct"], tally["total"])
            assert ci["n"] == tally["total"] and (ci["low"], ci["high"]) == pytest.approx((low * 100, high * 100))
    # a round trip through the typed record keeps them
    assert dt_eval.TaskResults.model_validate(stored).accuracy_ci == t.accuracy_ci


def test_repeats_use_the_effective_sample_size(runs):
    t = dt_eval.load_run(runs["k3"]).tasks["mmau"]
    assert t.accuracy_ci.method == "wilson-effective-n" and t.accuracy_ci.n == N
    # items 10-19 are right in 1 of 3 repeats: the item means vary, n_eff is between n - 1 and n*K
    assert N - 1 <= t.accuracy_ci.n_eff <= 3 * N and t.accuracy_ci.repeat_std is not None
    assert t.accuracy_ci.low < t.accuracy < t.accuracy_ci.high


def test_interval_counts_the_official_verdicts_not_the_records_flags(runs, tmp_path):
    """The CI is computed on exactly the verdicts the official accuracy counts: a `correct` flag
    edited in samples.jsonl changes neither (the answers are rescored)."""
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(runs["a"], run)
    lines = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    flipped = 0
    for rec in lines:
        if rec["task"] == "mmau" and rec["correct"] is False and flipped < 5:
            rec["correct"], flipped = True, flipped + 1
    (run / "samples.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    t = dt_eval.load_run(run).tasks["mmau"]
    assert t.repeats[0].correct == 20
    low, high = wilson_interval(20, N)
    assert (t.accuracy_ci.low, t.accuracy_ci.high) == pytest.approx((low * 100, high * 100))


def test_report_prints_the_ci_beside_the_official_block(runs):
    res = dt_eval.load_run(runs["a"])
    out = invoke(["report", str(runs["a"])])
    assert out.exit_code == 0, out.output
    text = out.stdout
    # the official lines, byte for byte and in order, with no interval among them
    official = res.tasks["mmau"].repeats[0].official_lines
    start = text.index(official[0])
    assert text[start:].startswith("\n".join(official) + "\n")
    block = text[start:start + len("\n".join(official))]
    assert "CI" not in block and "[" not in block
    header = next(line for line in text.splitlines() if line.startswith("task "))
    assert "95% CI" in header
    ci = res.tasks["mmau"].accuracy_ci
    assert f"[{ci.low:.2f}, {ci.high:.2f}]" in text
    assert "95% CI: Wilson score interval (wilson)" in text  # the footnote names the method
    # dt-eval's per-category table, with each category's interval
    per_cat = text.split("dt-eval: accuracy per category with its 95% CI")[1]
    sound = res.to_json_dict()["tasks"]["mmau"]["categories_ci"]["task"]["sound"]
    assert f"[{sound['low']:.2f}, {sound['high']:.2f}]" in per_cat


def test_a_subset_run_is_marked_in_the_report(bench, tmp_path):
    run = choice_run(tmp_path / "limited", {"mmau": bench["mmau"]}, lambda i, r: True, limit=8)
    t = dt_eval.load_run(run).tasks["mmau"]
    assert t.accuracy == 100.0 and t.subset == "subset: 8 of 1000 items (--limit 8)"
    assert (t.accuracy_ci.low, t.accuracy_ci.high) == pytest.approx((8 / (8 + 1.959963984540054**2) * 100, 100.0))
    out = invoke(["report", str(run)]).stdout
    assert "dt-eval: mmau: subset: 8 of 1000 items (--limit 8); not a number on the whole benchmark" in out
    assert "[67.56, 100.00]" in out  # 8 of 8: not a bare 100.00
    cmp = dt_eval.compare_runs([run, run])
    assert "note: A mmau: subset: 8 of 1000 items (--limit 8)" in cmp.render()
    assert cmp.to_json_dict()["accuracy"][1]["mmau"]["subset"] == t.subset


# --------------------------------------------------------------------------------------------
# paired comparisons


def test_compare_runs_paired_on_shared_items(runs):
    cmp = dt_eval.compare_runs([runs["a"], runs["b"]])
    by_task = {c.task: c for c in cmp.tasks}
    p = by_task["mmau"].paired
    # items 0-1: right in A only; 20-29: right in B only
    assert (p.a_right_b_wrong, p.a_wrong_b_right, p.n_shared) == (2, 10, N)
    assert p.diff == pytest.approx((28 - 20) / N) and p.method == "mcnemar-exact"
    assert p.p_value == pytest.approx(mcnemar_exact(2, 10))
    assert p.ci_low < p.diff < p.ci_high
    # short names and the settings that differ
    assert cmp.settings_diff["identity.prompt.thinking"] == ["on", "off"]
    assert [r.name for r in cmp.runs] == ["Model-7B (thinking on)", "Model-7B (thinking off)"]
    assert all("url" not in k for k in cmp.settings_diff)
    text = cmp.render()
    assert "thinking on" in text and "p = 0.039" in text and "(mcnemar-exact)" in text
    row = next(line for line in text.splitlines() if line.startswith("mmau ") and "B − A" in line)
    assert "+20.00" in row and row.split()[-2:] == ["10", "2"]
    # the JSON form
    d = json.loads(json.dumps(cmp.to_json_dict()))
    (mmau,) = [c for c in d["comparisons"] if c["task"] == "mmau"]
    assert mmau["diff"] == pytest.approx(20.0) and mmau["p_text"] == "p = 0.039" and mmau["test"] == "McNemar exact test"
    assert d["runs"][1]["name"] == "Model-7B (thinking off)" and d["baseline"] == "A" and "results" not in d
    full = cmp.to_json_dict(results=True)["results"]
    assert [r["tasks"]["mmau"]["accuracy_mean"] for r in full] == pytest.approx([50.0, 70.0])


def test_compare_runs_with_repeats_uses_the_paired_bootstrap(runs):
    cmp = dt_eval.compare_runs([runs["a"], runs["k3"]])
    (c,) = cmp.tasks
    assert c.paired.method == "paired-bootstrap" and c.paired.repeats_b == 3
    assert "k=" in cmp.runs[1].name or "T=0.7" in cmp.runs[1].name


def test_different_data_is_refused_unless_allowed(runs):
    with pytest.raises(DifferentDataError, match="mmau: B ran on another metadata file") as e:
        dt_eval.compare_runs([runs["a"], runs["other"]])
    assert "--allow-different-data" in str(e.value)
    cmp = dt_eval.compare_runs([runs["a"], runs["other"]], allow_different_data=True)
    assert cmp.data_warnings and "compared anyway" in cmp.render()
    assert any("mmar: only in A" in n for n in cmp.not_compared)


def test_report_several_runs_compares_them(runs):
    out = invoke(["report", str(runs["a"]), str(runs["b"])])
    assert out.exit_code == 0, out.output
    assert "Paired comparison on the shared items" in out.stdout and "Settings that differ" in out.stdout
    bad = invoke(["report", str(runs["a"]), str(runs["other"])])
    assert bad.exit_code == 2 and "another metadata file" in bad.output
    forced = invoke(["report", str(runs["a"]), str(runs["other"]), "--allow-different-data"])
    assert forced.exit_code == 0 and "compared anyway" in forced.stdout, forced.output


def test_report_json_of_several_runs_is_the_comparison(runs):
    out = invoke(["report", str(runs["a"]), str(runs["b"]), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data == json.loads(json.dumps(dt_eval.compare_runs([runs["a"], runs["b"]]).to_json_dict(results=True)))


def test_viewer_flip_summary_matches_the_report(runs):
    """The trace viewer's flipped-items summary and `dt-eval report` agree on every number."""
    from dt_eval.reporting.viewer import load_runs_for_view
    from dt_eval.reporting.viewer.rows import comparisons

    loaded = load_runs_for_view([runs["a"], runs["b"]])
    from dt_eval.reporting.viewer.rows import task_summary

    for run, path in zip(loaded, (runs["a"], runs["b"])):  # the per-task intervals agree too
        for task, s in task_summary(run.samples).items():
            ci = dt_eval.load_run(path).tasks[task].accuracy_ci
            assert (s["accuracy"]["ci_low"], s["accuracy"]["ci_high"]) == pytest.approx((ci.low, ci.high))
    view = comparisons(loaded)["0,1"]
    for c in dt_eval.compare_runs([runs["a"], runs["b"]]).tasks:
        v = view[c.task]
        ours = c.to_dict()
        for key in ("n_shared", "a_wrong_b_right", "a_right_b_wrong", "method", "p_text"):
            assert v[key] == ours[key], key
        for key in ("diff", "ci_low", "ci_high", "p_value"):
            assert math.isclose(v[key], ours[key], abs_tol=1e-9), key
