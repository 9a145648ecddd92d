"""The record path of `dt-eval run`, in process against the fault-injecting server: records are
built off the event loop, and no bad item (a bad string, a failing step, metadata the official
scorer cannot score) stops the run or drops out of the tables silently."""

import asyncio
import datetime
import json
import threading
import time

import pytest

import dt_eval.pipeline.records as records_mod
import dt_eval.pipeline.runner as runner_mod
from dt_eval.backends.openai_compat import OpenAIBackend
from dt_eval.tasks.data import DataError
from dt_eval.reporting.tables import print_results
from dt_eval.pipeline.runner import Runner
from dt_eval.config import RunOptions

from .fault_server import FaultServer


def run_once(bench, out, srv, task="mmau", timeout_s=30.0, events=None):
    opts = RunOptions(tasks=[task], model="fake-model", output=out, data_dirs={task: str(bench)}, progress=False,
                      concurrency=8, timeout_s=timeout_s, max_retries=0)
    backend = OpenAIBackend("fake-model", [srv.url], concurrency=8, timeout_s=timeout_s, max_retries=0)
    say = events.append if events is not None else (lambda msg: None)
    return asyncio.run(Runner(opts, backend, on_event=say).run())


def edit_meta(bench, edit):
    meta = bench / "mmau-test-mini.json"
    recs = json.loads(meta.read_text())
    edit(recs)
    meta.write_text(json.dumps(recs))
    return recs


def samples(run):
    return [json.loads(x) for x in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_slow_record_building_does_not_turn_other_requests_into_timeouts(tmp_path, fake_bench, monkeypatch):
    n, timeout_s = 6, 1.5
    bench = fake_bench("mmau", n)

    def tag(recs):  # every item but the first is answered after 0.4 s
        for i, r in enumerate(recs[1:], 1):
            r["question"] += f" [[id=q{i} faults=delay:0.4]]"

    edit_meta(bench, tag)
    run = tmp_path / "run"

    def others_written():
        f = run / "samples.jsonl"
        return f.exists() and len(f.read_bytes().splitlines()) >= n - 1

    real, lock, state = records_mod.task_extract, threading.Lock(), {"slow": None}

    def slow_extract(*args, **kw):
        # The first record to be built is slow (a pathological output): it stays busy until the
        # other samples are written. Blocking the event loop, it would stay busy past the client
        # timeout and every in-flight request would fail.
        with lock:
            first, state["slow"] = state["slow"] is None, state["slow"] or "running"
        if first:
            deadline = time.monotonic() + 4 * timeout_s
            while not others_written() and time.monotonic() < deadline:
                time.sleep(0.02)
            state["slow"] = "others finished meanwhile" if others_written() else "waited out"
        return real(*args, **kw)

    monkeypatch.setattr(records_mod, "task_extract", slow_extract)
    with FaultServer() as srv:
        run_once(bench, run, srv, timeout_s=timeout_s)
    got = samples(run)
    assert len(got) == n and len({r["key"] for r in got}) == n
    assert [r["error"] for r in got] == [None] * n
    assert state["slow"] == "others finished meanwhile"
    assert all(r["extracted"]["answer_text"] is not None or r["extracted"]["unparsed"] for r in got)


def test_a_failure_in_one_item_is_that_samples_error_record(tmp_path, fake_bench, monkeypatch):
    """Prompt building, scoring, a value JSON cannot hold, a lone surrogate: each one item's problem."""
    n = 6
    bench = fake_bench("mmau", n)

    def edit(recs):
        recs[4]["question"] += " broken \ud800 text"  # a lone surrogate (json.loads gives it back as is)

    recs = edit_meta(bench, edit)
    ids = [r["id"] for r in recs]
    real_build, real_score, real_load = runner_mod.build_messages, records_mod.score_one, runner_mod.load_task_data

    def build(cfg, item, settings):
        if item.id == ids[1]:
            raise TypeError("prompt template blew up")
        return real_build(cfg, item, settings)

    def score(cfg, meta, prediction):
        if meta["id"] == ids[2]:
            raise KeyError("scorer blew up")
        return real_score(cfg, meta, prediction)

    def load(*args, **kw):  # a metadata value JSON cannot encode (as a parquet timestamp column gives)
        lt = real_load(*args, **kw)
        lt.items[3].raw["recorded"] = datetime.datetime(2024, 5, 1, 12, 0)
        return lt

    monkeypatch.setattr(runner_mod, "build_messages", build)  # the request
    monkeypatch.setattr(records_mod, "build_messages", build)  # the record's prompt text
    monkeypatch.setattr(records_mod, "score_one", score)
    monkeypatch.setattr(runner_mod, "load_task_data", load)
    run = tmp_path / "run"
    with FaultServer() as srv:
        results = run_once(bench, run, srv)
        by_id = {r["id"]: r for r in samples(run)}
        assert len(by_id) == n
        assert "prompt template blew up" in by_id[ids[1]]["error"]
        assert by_id[ids[2]]["error"].startswith("record: KeyError") and by_id[ids[2]]["output"]  # output kept
        assert by_id[ids[3]]["error"].startswith("record: TypeError")
        assert by_id[ids[3]]["meta"]["recorded"] == repr(datetime.datetime(2024, 5, 1, 12, 0))
        assert by_id[ids[4]]["meta"]["question"].endswith("broken \ud800 text")  # kept, as written
        assert by_id[ids[4]]["error"]  # the request cannot be encoded as UTF-8
        assert [by_id[i]["error"] for i in (ids[0], ids[5])] == [None, None]
        assert results["tasks"]["mmau"]["repeats"][0]["errors"] == 4
        # the run is not wedged: a rerun finds every sample done and asks nothing
        asked, events = srv.count, []
        run_once(bench, run, srv, events=events)
        assert srv.count == asked and any(f"all {n} samples already done" in e for e in events)


def test_items_the_official_scorer_cannot_score_are_named_data_errors(tmp_path, fake_bench, capsys):
    n = 6
    bench = fake_bench("mmau", n)

    def edit(recs):
        del recs[1]["answer"]
        recs[2]["choices"] = [recs[2]["choices"][0], None]
        for i, r in enumerate(recs):
            r["question"] += f" [[id=q{i}]]"

    recs = edit_meta(bench, edit)
    run = tmp_path / "run"
    events = []
    with FaultServer() as srv:
        results = run_once(bench, run, srv, events=events)
        assert srv.attempts_for("q1") == srv.attempts_for("q2") == 0  # never asked
        assert srv.attempts_for("q0") == 1
    by_id = {r["id"]: r for r in samples(run)}
    assert by_id[recs[1]["id"]]["data_error"] and "'answer' is missing" in by_id[recs[1]["id"]]["error"]
    assert by_id[recs[2]["id"]]["data_error"] and "option #1 of 'choices' is null" in by_id[recs[2]["id"]]["error"]
    assert any(recs[1]["id"] in e and recs[2]["id"] in e for e in events if e.startswith("warning"))
    rep = results["tasks"]["mmau"]["repeats"][0]
    assert rep["data_errors"] == 2 and rep["total"] == n - 2 and rep["errors"] == 0
    print_results(results)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert "data errors" in header
    assert "2 item(s) left out of the accuracy" in out and recs[1]["id"] in out and recs[2]["id"] in out


def test_duplicate_item_ids_stop_the_run_before_any_request(tmp_path, fake_bench):
    bench = fake_bench("mmau", 5)
    recs = edit_meta(bench, lambda recs: recs[3].update(id=recs[1]["id"]))
    run = tmp_path / "run"
    with FaultServer() as srv:
        with pytest.raises(DataError, match="more than once") as err:
            run_once(bench, run, srv)
        assert srv.chat_requests() == []
    assert recs[1]["id"] in str(err.value)
    assert not (run / "samples.jsonl").exists()
