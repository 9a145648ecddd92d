"""The Python API (`import dt_eval`): evaluate from plain Python and from inside a running event
loop (a notebook cell) against a real HTTP server on 127.0.0.1 (the fault-injecting fake), resume
through the API, load_run on a run directory written by release 0.1.0, score_file, rescore with
the format scorer, and bad arguments refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import dt_eval
from dt_eval.records import SampleRecord

from .cli import invoke
from .fault_server import FaultServer
from .paths import REPO

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
pytestmark = pytest.mark.timeout(300)


def tag_faults(bench: Path, faults: dict[int, str]) -> list[dict]:
    meta = bench / "mmau-test-mini.json"
    recs = json.loads(meta.read_text())
    for i, r in enumerate(recs):
        if i in faults:
            r["question"] += f" [[id=q{i} faults={faults[i]}]]"
    meta.write_text(json.dumps(recs))
    return recs


def run_kwargs(srv: FaultServer, bench: Path, out: Path, events: list[str] | None = None) -> dict:
    return dict(backend="openai", base_urls=srv.url, data_dirs={"mmau": bench}, output=out, progress=False,
                max_retries=0, concurrency=4, on_event=(events.append if events is not None else lambda m: None))


# ------------------------------------------------------------------------------------------ the package


def test_the_package_exposes_a_documented_api_and_imports_cheaply():
    assert set(dir(dt_eval)) == set(dt_eval.__all__)
    for name in ("evaluate", "evaluate_async", "load_run", "score_file", "rescore", "RunResults", "TaskResults",
                 "SampleRecord", "RunConfig", "DtEvalError", "UsageError"):
        assert name in dt_eval.__all__ and getattr(dt_eval, name).__doc__, name
    probe = ("import sys, dt_eval; "
             "print(sorted(m for m in ('pydantic', 'aiohttp', 'numpy', 'torch', 'dt_eval.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr  # the CLI imports it at start-up


# ------------------------------------------------------------------------------------------ evaluate


def test_evaluate_runs_what_dt_eval_run_runs_and_returns_typed_results(tmp_path, fake_bench):
    bench = fake_bench("mmau", 5)
    recs = tag_faults(bench, {3: "400"})  # a client error: that sample fails, the run goes on
    run, events = tmp_path / "run", []
    with FaultServer() as srv:
        res = dt_eval.evaluate("mmau", "fake-model", **run_kwargs(srv, bench, run, events))
    stored = json.loads((run / "results.json").read_text())["tasks"]["mmau"]
    t = res.tasks["mmau"]
    assert isinstance(res, dt_eval.RunResults) and isinstance(t, dt_eval.TaskResults)
    assert t.accuracy == stored["accuracy_mean"] and t.official_raw == stored["accuracy_official_raw_mean"]
    assert t.errors == 1 == stored["repeats"][0]["errors"] and t.repeats[0].total == 5
    assert t.breakdowns == stored["repeats"][0]["breakdowns"] and "task" in t.breakdowns
    assert t.unparsed == stored["repeats"][0]["unparsed"] and t.truncated == 0
    assert len(res.samples) == 5 and all(isinstance(s, SampleRecord) for s in res.samples)
    by_id = {s.id: s for s in res.samples}
    assert "400" in by_id[recs[3]["id"]].error and by_id[recs[0]["id"]].output.startswith("echo[1 audio]")
    assert t.repeats[0].correct == sum(bool(s.correct) for s in res.samples)
    assert res.config.model == "fake-model" and res.config.backend_name == "openai"
    assert res.config.command[:2] == ["dt_eval.evaluate", "tasks=mmau"]
    assert not any("Traceback" in e for e in events)
    # the same run directory `dt-eval run` makes: `dt-eval report` reads it and prints the same number
    rep = invoke(["report", str(run)])
    assert rep.exit_code == 0 and f"Total Accuracy: {t.accuracy:.2f}% over 5 samples" in rep.stdout


def test_evaluate_works_inside_a_running_event_loop(tmp_path, fake_bench):
    bench = fake_bench("mmau", 3)

    async def notebook_cell(srv):
        # what a Jupyter cell does: a blocking call while the kernel's event loop is running
        assert asyncio.get_running_loop().is_running()
        return dt_eval.evaluate("mmau", "fake-model", **run_kwargs(srv, bench, tmp_path / "a"))

    async def async_code(srv):
        return await dt_eval.evaluate_async("mmau", "fake-model", **run_kwargs(srv, bench, tmp_path / "b"))

    with FaultServer() as srv:
        in_loop = asyncio.run(notebook_cell(srv))
        awaited = asyncio.run(async_code(srv))
    for res in (in_loop, awaited):
        assert res.tasks["mmau"].repeats[0].total == 3 and len(res.samples) == 3
        assert all(s.error is None for s in res.samples)
    assert [s.output for s in in_loop.samples] == [s.output for s in awaited.samples]
    assert threading.active_count() < 50  # the worker thread is gone, not left behind


def test_resume_through_the_api_generates_nothing_twice(tmp_path, fake_bench):
    bench = fake_bench("mmau", 4)
    run, events = tmp_path / "run", []
    with FaultServer() as srv:
        first = dt_eval.evaluate("mmau", "fake-model", **run_kwargs(srv, bench, run))
        asked, before = srv.count, (run / "samples.jsonl").read_bytes()
        again = dt_eval.evaluate("mmau", "fake-model", **run_kwargs(srv, bench, run, events))
        assert srv.count == asked == 4  # nothing asked again
    assert (run / "samples.jsonl").read_bytes() == before
    assert any("all 4 samples already done" in e for e in events)
    assert again.tasks["mmau"].to_json_dict() == first.tasks["mmau"].to_json_dict()
    assert [s.key for s in again.samples] == [s.key for s in first.samples]


def test_bad_arguments_are_refused_before_anything_starts(tmp_path, fake_bench):
    bench = fake_bench("mmau", 2)
    out = tmp_path / "run"
    base = dict(base_urls="http://127.0.0.1:9/v1", data_dirs=bench, output=out)
    with pytest.raises(dt_eval.UsageError, match="'colour'") as e:
        dt_eval.evaluate("mmau", "m", colour="red", **base)
    assert "concurrency" in str(e.value) and "on_event" in str(e.value)  # it names the valid ones
    for bad, match in ((dict(backend="nope"), "unknown backend"), (dict(thinking="maybe"), "on or off"),
                       (dict(repeats=0), "repeats"), (dict(gen_kwargs="temperature"), "key=value"),
                       (dict(cot="hybrid"), "needs a judge"), (dict(limit=0), "limit")):
        with pytest.raises(dt_eval.UsageError, match=match):
            dt_eval.evaluate("mmau", "m", **{**base, **bad})
    with pytest.raises(dt_eval.DtEvalError, match="no-such-task"):
        dt_eval.evaluate("no-such-task", "m", **base)
    with pytest.raises(dt_eval.DtEvalError, match="needs --base-url"):  # the backend cannot start
        dt_eval.evaluate("mmau", "m", data_dirs=bench, output=out)
    assert not out.exists()


def test_credentials_in_base_urls_never_reach_the_run_directory(tmp_path, fake_bench):
    bench = fake_bench("mmau", 2)
    secret = "pw-SENTINEL-7f3a"
    with FaultServer() as srv:
        kw = run_kwargs(srv, bench, tmp_path / "run")
        kw["base_urls"] = srv.url.replace("http://", f"http://bob:{secret}@")
        res = dt_eval.evaluate("mmau", "fake-model", **kw)
        assert srv.chat_requests()[0].headers.get("Authorization", "").startswith("Basic ")
    assert res.tasks["mmau"].errors == 0
    for f in (tmp_path / "run").iterdir():
        assert secret not in f.read_text(encoding="utf-8", errors="replace"), f.name
    assert any("***@127.0.0.1" in part for part in res.config.command)


# ------------------------------------------------------------------------------------------ reading and scoring


def test_load_run_reproduces_the_numbers_release_0_1_0_wrote(tmp_path):
    run = shutil.copytree(FIXTURE, tmp_path / "run")
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    res = dt_eval.load_run(run)
    stored = json.loads((FIXTURE / "results.json").read_text())["tasks"]
    assert set(res.tasks) == set(stored) == {"mmau", "mmsu"}
    for name, old in stored.items():
        t = res.tasks[name]
        assert t.accuracy == old["accuracy_mean"] and t.accuracy_std == old["accuracy_std"]
        assert t.official_raw == old["accuracy_official_raw_mean"]
        assert t.pass_at_k == old["pass_at_2"] and t.majority_vote_accuracy == old["majority_vote_accuracy"]
        assert t.errors == sum(r["errors"] for r in old["repeats"])
        for new, rep in zip(t.repeats, old["repeats"], strict=True):
            assert new.official_lines == rep["official_lines"] and new.breakdowns == rep["breakdowns"]
            assert (new.accuracy, new.correct, new.total, new.errors) == (rep["accuracy"], rep["correct"],
                                                                          rep["total"], rep["errors"])
        assert t.cot["format"]["mean"] == old["cot"]["format"]["mean"]  # recomputed from cot.jsonl
    assert res.tasks["mmau"].errors == 2 and res.tasks["mmau"].accuracy == 75.0
    old_lines = (FIXTURE / "samples.jsonl").read_text().splitlines()
    assert len(res.samples) == len(old_lines) == 14 and all(s.schema_version == 1 for s in res.samples)
    missing = [s for s in res.samples if s.failed]
    assert len(missing) == 2 and all(s.error.startswith("audio: audio file not found") for s in missing)
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before  # read-only
    rep = invoke(["report", str(run)])
    assert rep.exit_code == 0, rep.output
    assert "Total Accuracy: 75.00% over 4 samples" in rep.stdout and "errors: 2 sample(s) failed" in rep.stdout


def test_load_run_of_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(dt_eval.DtEvalError, match="not a dt-eval run directory"):
        dt_eval.load_run(tmp_path)


def test_score_file_scores_like_the_official_script(tmp_path):
    from dt_eval.storage.export import export_run

    sub = tmp_path / "sub.json"
    export_run(FIXTURE, "mmau", sub)
    report = dt_eval.score_file("mmau", sub)
    rep0 = json.loads((FIXTURE / "results.json").read_text())["tasks"]["mmau"]["repeats"][0]
    assert report.accuracy == rep0["accuracy"] == 75.0 and report.official_lines() == rep0["official_lines"]
    extracted = dt_eval.score_file("mmau", sub, extract=True)
    assert extracted.official_raw is not None and extracted.accuracy == 75.0
    with pytest.raises(dt_eval.DtEvalError):
        dt_eval.score_file("mmau", tmp_path / "missing.json")


def test_rescore_with_the_format_scorer_needs_no_judge(tmp_path):
    run = shutil.copytree(FIXTURE, tmp_path / "run")
    (run / "cot.jsonl").unlink()
    events = []
    aggregates = dt_eval.rescore(run, cot="format", on_event=events.append)
    assert aggregates["mmau"]["format"]["mean"] == 0.75 and aggregates["mmsu"]["format"]["mean"] == 1.0
    assert any(e.startswith("cot format: 14 samples") for e in events)
    assert dt_eval.load_run(run).tasks["mmau"].cot["format"]["mean"] == 0.75

    async def cell():  # inside a running loop too
        return dt_eval.rescore(run, cot="format", on_event=events.append)

    assert asyncio.run(cell())["mmsu"]["format"]["scored"] == 6
    with pytest.raises(dt_eval.DtEvalError, match="needs a judge"):
        dt_eval.rescore(run, cot="rubrics")


# ------------------------------------------------------------------------------------------ a real model


@pytest.mark.slow
def test_evaluate_in_a_notebook_cell_against_the_tiny_model_server(det_model_dir, tmp_path):
    """The deterministic tiny Qwen2-Audio behind dt_eval.serving.hfserver (a real model server):
    evaluate() from inside a running event loop, as a Jupyter cell calls it."""
    from dt_eval.testing.synth_audio import make_fake_benchmark

    from .servers import hfserver

    bench = make_fake_benchmark(tmp_path / "mmau", "mmau", 8, seed=3)
    meta = {m["id"]: m for m in json.loads((bench / "mmau-test-mini.json").read_text())}
    run, events = tmp_path / "run", []

    async def cell(url):
        return dt_eval.evaluate("mmau", "tiny", base_urls=url, data_dirs={"mmau": bench}, output=run,
                                progress=False, concurrency=4, gen_kwargs={"max_tokens": 64}, on_event=events.append)

    with hfserver(det_model_dir, "tiny", tmp_path) as url:
        res = asyncio.run(cell(url))
    t = res.tasks["mmau"]
    assert t.errors == 0 and t.repeats[0].total == 8 and len(res.samples) == 8
    for s in res.samples:  # the model's own words, split and extracted by the harness
        assert s.reasoning_text in ("The pitch goes up.", "The pitch goes down.")
        assert s.correct == (s.extracted.answer_text == meta[s.id]["answer"])
    n_correct = sum(bool(s.correct) for s in res.samples)
    assert n_correct >= 6 and t.accuracy == n_correct / 8 * 100  # the tiny model hears the pitch (chance: 4)
    assert dt_eval.load_run(run).tasks["mmau"].accuracy == t.accuracy


_CELL = """
import asyncio, sys, threading
import dt_eval

async def cell():
    dt_eval.evaluate("mmau", "fake-model", base_urls=sys.argv[1], data_dirs={"mmau": sys.argv[2]}, output=sys.argv[3],
                     progress=False, concurrency=2, max_retries=0, on_event=lambda m: None)

loop = asyncio.new_event_loop()  # a kernel's loop: Ctrl-C raises KeyboardInterrupt where the cell waits
try:
    loop.run_until_complete(cell())
except KeyboardInterrupt:
    print("INTERRUPTED", [t.name for t in threading.enumerate()], flush=True)
"""


def test_ctrl_c_in_a_notebook_cell_stops_the_run_and_resume_finishes_it(tmp_path, fake_bench):
    import os
    import signal
    import time

    bench = fake_bench("mmau", 30)
    run = tmp_path / "run"
    lines = lambda: (run / "samples.jsonl").read_text().splitlines() if (run / "samples.jsonl").exists() else []
    with FaultServer(default="delay:0.3") as srv:
        proc = subprocess.Popen([sys.executable, "-c", _CELL, srv.url, str(bench), str(run)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(lines()) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert "INTERRUPTED" in out and "dt-eval-run" not in out, (out, err)  # the run's thread is gone
        before = lines()
        assert 4 <= len(before) < 30 and all(json.loads(x)["key"] for x in before)  # intact records
        served = srv.count
        res = dt_eval.evaluate("mmau", "fake-model", **run_kwargs(srv, bench, run))
        assert srv.count - served <= 30 - len(before) + 2  # only what was missing (and the 2 in flight)
    keys = [json.loads(x)["key"] for x in lines()]
    assert len(set(keys)) == 30 and len(res.samples) == 30
    assert os.path.exists(run / "results.json")
