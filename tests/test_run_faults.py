"""The run's failure paths against a fault-injecting OpenAI-compatible server: retries, recorded
errors, --retry-errors, and resume after SIGKILL with nothing lost and nothing generated twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dt_eval.testing.synth_audio import make_fake_benchmark

from .fault_server import FaultServer

pytestmark = pytest.mark.slow


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "dt_eval.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def lines(run):
    f = run / "samples.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.exists() else []


def tag_questions(bench, faults):
    """Give item i the fault sequence faults[i] (the fault server reads `[[id=.. faults=..]]`)."""
    meta = bench / "mmau-test-mini.json"
    recs = json.loads(meta.read_text())
    for i, r in enumerate(recs):
        if faults.get(i):
            r["question"] += f" [[id=q{i} faults={faults[i]}]]"
    meta.write_text(json.dumps(recs))
    return recs


def test_retries_errors_and_retry_errors(tmp_path):
    bench = make_fake_benchmark(tmp_path / "b", "mmau", 10, seed=2)
    recs = tag_questions(bench, {1: "500,500", 2: "malformed", 3: "drop", 4: "500,500,500,500",
                                 5: "429", 6: "400"})
    run = tmp_path / "run"
    with FaultServer() as srv:
        args = ["run", "--tasks", "mmau", "--model", "fake-model", "--backend", "openai", "--base-url", srv.url,
                "--data-dir", f"mmau={bench}", "--output", str(run), "--max-retries", "2", "--no-progress",
                "--concurrency", "4"]
        p = cli(*args)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 1, err  # finished, with failed samples
        got = {r["id"]: r for r in lines(run)}
        assert len(got) == 10
        ok = [i for i in range(10) if i not in (4, 6)]
        assert all(got[recs[i]["id"]]["error"] is None for i in ok)
        assert got[recs[1]["id"]]["backend_info"]["attempts"] == 3
        assert "500" in got[recs[4]["id"]]["error"]            # retries exhausted: recorded, not dropped
        assert "400" in got[recs[6]["id"]]["error"]            # client error: not retried
        assert srv.attempts_for("q6") == 1
        res = json.loads((run / "results.json").read_text())["tasks"]["mmau"]
        assert res["repeats"][0]["errors"] == 2 and res["repeats"][0]["total"] == 10
        assert "errors" in out and "mmau" in out
        # --retry-errors redoes exactly the two failures (the fault lists are used up now)
        p = cli(*args, "--retry-errors")
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err  # clean now
        after = lines(run)
        assert len(after) == 12 and {r["id"] for r in after[10:]} == {recs[4]["id"], recs[6]["id"]}
        res = json.loads((run / "results.json").read_text())["tasks"]["mmau"]
        assert res["repeats"][0]["errors"] == 0 and res["samples"] == 10


def test_sigkill_mid_run_then_resume(tmp_path):
    bench = make_fake_benchmark(tmp_path / "b", "mmau", 40, seed=4)
    run = tmp_path / "run"
    with FaultServer(default="delay:0.25") as srv:
        args = ["run", "--tasks", "mmau", "--model", "fake-model", "--backend", "openai", "--base-url", srv.url,
                "--data-dir", f"mmau={bench}", "--output", str(run), "--concurrency", "4", "--no-progress"]
        p = cli(*args, start_new_session=True)
        deadline = time.monotonic() + 120
        while len(lines(run)) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        before = lines(run)
        assert 12 <= len(before) < 40, "the kill should land mid-run"
        served_before = srv.count
        p = cli(*args)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        after = lines(run)
        keys = [r["key"] for r in after]
        assert len(keys) == len(set(keys)) == 40           # every sample once, none twice
        assert after[: len(before)] == before              # finished samples untouched
        assert f"resuming, {len(before)} of 40" in err
        # only the unfinished samples were asked again (in-flight ones at the kill included)
        assert srv.count - served_before == 40 - len(before)


def test_bad_strings_and_foreign_lines_end_in_records_or_clear_errors(tmp_path):
    bench = make_fake_benchmark(tmp_path / "b", "mmau", 5, seed=3)
    meta = bench / "mmau-test-mini.json"
    recs = json.loads(meta.read_text())
    recs[2]["question"] += " X\ud800Y"           # a lone surrogate: cannot be encoded as UTF-8
    recs[2]["sub-category"] = "Pitch \udcff"     # ... also in a breakdown the tables print
    meta.write_text(json.dumps(recs))
    run = tmp_path / "run"
    with FaultServer() as srv:
        args = ["run", "--tasks", "mmau", "--model", "fake-model", "--backend", "openai", "--base-url", srv.url,
                "--data-dir", f"mmau={bench}", "--output", str(run), "--no-progress", "--max-retries", "0"]
        out, err = cli(*args).communicate(timeout=300)
        assert "Traceback" not in err and "Total Accuracy" in out, err
        got = {r["id"]: r for r in lines(run)}
        assert len(got) == 5 and got[recs[2]["id"]]["meta"]["question"].endswith(" X\ud800Y")
        assert "Pitch \\udcff : " in out                 # printed escaped
        report = cli("report", str(run))
        rout, rerr = report.communicate(timeout=120)
        assert report.returncode == 0 and "Pitch \\udcff : " in rout, rerr
        # a complete line that is not a sample record: a clear error naming it, for run and report
        with open(run / "samples.jsonl", "a") as f:
            f.write("[1, 2]\n")
        for p in (cli(*args), cli("report", str(run))):
            _, err = p.communicate(timeout=300)
            assert p.returncode != 0 and "line 6 is an array" in err and "Traceback" not in err, err
