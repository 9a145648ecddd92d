"""`dt-eval run` end to end on CPU with the tiny Qwen2-Audio (hf backend) and real audio files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from dt_eval.testing.synth_audio import make_fake_benchmark, sweep

pytestmark = pytest.mark.slow


def dt_eval(*args, check=True, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "dt_eval.cli", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dt-eval {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def samples(run):
    return [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def mmau_run(det_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hfrun")
    bench = make_fake_benchmark(root / "mmau", "mmau", 8, seed=3)
    run = root / "run"
    proc = dt_eval("run", "--tasks", "mmau", "--model", str(det_model_dir), "--backend", "hf",
                   "--data-dir", f"mmau={bench}", "--output", str(run), "--batch-size", "4", "--no-progress")
    return bench, run, proc


REASONING = {"The pitch goes up.", "The pitch goes down."}


def test_hf_run_records_reasoning_answers_and_scores(mmau_run):
    bench, run, proc = mmau_run
    recs = samples(run)
    assert len(recs) == 8 and len({r["key"] for r in recs}) == 8
    meta = {m["id"]: m for m in json.loads((bench / "mmau-test-mini.json").read_text())}
    for r in recs:
        # the deterministic model's exact strings, split and extracted by the harness
        assert r["output"].startswith("<think>\n") and r["reasoning"] is None
        assert r["reasoning_text"] in REASONING
        assert r["extracted"]["answer_text"] in ("rising", "falling")
        assert r["correct"] == (r["extracted"]["answer_text"] == meta[r["id"]]["answer"])
        assert r["finish_reason"] == "stop" and r["error"] is None
        assert r["completion_tokens"] > 0 and r["latency_s"] > 0
        assert r["audio"].endswith(".wav") and "<audio>" in r["prompt"]["user"]  # a path, never bytes
    n_correct = sum(r["correct"] for r in recs)
    assert n_correct >= 6  # the tiny model hears the pitch direction (chance would be 4)
    res = json.loads((run / "results.json").read_text())["tasks"]["mmau"]
    assert res["accuracy_mean"] == n_correct / 8 * 100 and res["repeats"][0]["unparsed"] == 0
    assert f"Total Accuracy: {n_correct / 8 * 100:.2f}% over 8 samples" in proc.stdout
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["tasks"]["mmau"]["sha256"] and cfg["identity"]["model"] and cfg["backend"]["name"] == "hf"
    assert cfg["dt_eval_version"] and "sampling" in cfg["identity"]


# `dt-eval ARGS`, then which model libraries the process had loaded: the observable sign of a model load
_PROBE = """
import sys
from dt_eval.cli import main
code = main(sys.argv[1:])
print("MODEL-LIBRARIES:" + ",".join(m for m in ("torch", "transformers") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def probe_run(*args):
    """`dt-eval run ARGS` in a subprocess: (exit code, stderr, model libraries it loaded)."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, "run", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODEL-LIBRARIES:"))
    return proc.returncode, proc.stderr, set(filter(None, line.split(":", 1)[1].split(",")))


def test_rerun_resumes_without_regenerating_or_loading_the_model(mmau_run, det_model_dir):
    """Issue #14 item 4: a finished run said "all 8 samples already done" after loading the model."""
    bench, run, _ = mmau_run
    before = (run / "samples.jsonl").read_bytes()
    code, err, loaded = probe_run("--tasks", "mmau", "--model", det_model_dir, "--backend", "hf",
                                  "--data-dir", f"mmau={bench}", "--output", run, "--no-progress")
    assert code == 0 and "all 8 samples already done" in err, err
    assert loaded == set(), err  # the model was never loaded: not even torch was imported
    assert (run / "samples.jsonl").read_bytes() == before
    config = json.loads((run / "config.json").read_text())
    assert config["backend"]["name"] == "hf" and config["backend"]["device"]  # the backend that made them


def test_changed_settings_refuse_to_mix(mmau_run, det_model_dir):
    bench, run, _ = mmau_run
    code, err, loaded = probe_run("--tasks", "mmau", "--model", det_model_dir, "--backend", "hf",
                                  "--data-dir", f"mmau={bench}", "--output", run, "--gen-kwargs", "max_tokens=99")
    assert code == 2 and "sampling differ" in err
    assert loaded == set()  # refused before the model was loaded


def test_bad_data_fails_before_the_model_loads(det_model_dir, tmp_path):
    """Issue #14 item 4: a bad --data-dir, unknown task or unreadable metadata failed only after the
    weights had loaded. Each now fails with exit 2, no model library imported, no run directory."""
    run = tmp_path / "run"
    base = ("--model", det_model_dir, "--backend", "hf", "--output", run)
    code, err, loaded = probe_run("--tasks", "mmau", "--data-dir", tmp_path / "nowhere", *base)
    assert code == 2 and "does not exist" in err and loaded == set(), err
    code, err, loaded = probe_run("--tasks", "no-such-task", "--data-dir", tmp_path, *base)
    assert code == 2 and "unknown task 'no-such-task'" in err and loaded == set(), err
    bench = make_fake_benchmark(tmp_path / "mmau", "mmau", 2)
    (bench / "mmau-test-mini.json").write_text("[{not json")
    code, err, loaded = probe_run("--tasks", "mmau", "--data-dir", bench, *base)
    assert code == 2 and "not valid JSON" in err and loaded == set(), err
    assert not run.exists()


def test_a_run_directory_in_use_fails_before_the_model_loads(det_model_dir, tmp_path):
    from dt_eval.storage.rundir import LOCK
    from dt_eval.util.locks import try_lock

    bench = make_fake_benchmark(tmp_path / "mmau", "mmau", 2)
    run = tmp_path / "run"
    run.mkdir()
    held = try_lock(run / LOCK)  # another dt-eval (this process) holds the run directory
    try:
        code, err, loaded = probe_run("--tasks", "mmau", "--model", det_model_dir, "--backend", "hf",
                                      "--data-dir", bench, "--output", run)
    finally:
        held.release()
    assert code == 2 and "in use by another dt-eval process" in err and loaded == set(), err


def test_progress_counts_each_sample_when_it_ends_not_when_its_batch_returns(det_model_dir, tmp_path):
    """Issue #14 item 5: with --batch-size 8 the bar stayed at 0/8 until the whole batch was done.
    The hf backend now reports each row the step it emits end-of-sequence, while the batch is
    still generating: all 8 are counted before the first record is written."""
    import asyncio

    from dt_eval.api import plan_run
    from dt_eval.pipeline import runner as runner_mod

    bench = make_fake_benchmark(tmp_path / "mmau", "mmau", 8, seed=3)
    run = tmp_path / "run"
    seen = []  # (key, samples written when it was counted, done count shown)
    original = runner_mod._Progress.generated

    def generated(self, key):
        original(self, key)
        written = (run / "samples.jsonl").read_text().count("\n")
        seen.append((key, written, self.done))

    plan = plan_run("mmau", str(det_model_dir), backend="hf", data_dirs=bench, output=run, batch_size=8,
                    progress=False, on_event=lambda msg: None)
    runner_mod._Progress.generated = generated
    try:
        asyncio.run(runner_mod.Runner(plan.opts, make_backend=plan.make_backend, on_event=lambda m: None).execute())
    finally:
        runner_mod._Progress.generated = original
    assert sorted(k for k, _, _ in seen) == sorted(json.loads(x)["key"] for x in
                                                   (run / "samples.jsonl").read_text().splitlines())
    assert all(written == 0 for _, written, _ in seen)  # counted mid-batch, before any record
    assert [done for _, _, done in seen] == list(range(1, 9))  # one step per sample


def test_report_and_export_round_trip(mmau_run, tmp_path):
    _, run, proc = mmau_run
    acc = json.loads((run / "results.json").read_text())["tasks"]["mmau"]["accuracy_mean"]
    line = f"Total Accuracy: {acc:.2f}% over 8 samples"
    rep = dt_eval("report", str(run))
    assert line in rep.stdout
    out = tmp_path / "sub.json"
    dt_eval("export", str(run), "--task", "mmau", "--out", str(out))
    assert line in dt_eval("score", "--task", "mmau", "-p", str(out)).stdout


def test_bad_inputs_are_recorded_and_the_run_finishes(det_model_dir, tmp_path):
    bench = make_fake_benchmark(tmp_path / "mmar", "mmar", 7, seed=5)
    meta_path = bench / "MMAR-meta.jsonl"
    recs = [json.loads(x) for x in meta_path.read_text().splitlines()]
    audio = lambda r: bench / r["audio_path"]  # noqa: E731
    audio(recs[0]).unlink()                                   # missing file
    audio(recs[1]).write_bytes(b"RIFF\x00\x00garbage")          # corrupt
    audio(recs[2]).write_bytes(b"")                            # zero-length file
    sf.write(audio(recs[3]), sweep("rising", 600, 16000, 300, 900, 0.3), 16000)  # 10 minutes
    st = sweep("falling", 2, 48000, 1200, 400, 0.3)
    sf.write(audio(recs[4]), np.stack([st, st * 0.5], axis=1), 48000)  # 48 kHz stereo
    recs[5]["choices"] = []                                    # no options
    meta_path.write_text("\n".join(json.dumps(r) for r in recs))
    run = tmp_path / "run"
    first = dt_eval("run", "--tasks", "mmar", "--model", str(det_model_dir), "--backend", "hf",
                    "--data-dir", f"mmar={bench}", "--output", str(run), "--no-progress", check=False)
    assert first.returncode == 1, first.stderr  # finished, with failed samples
    assert "errors: 4 sample(s) failed" in first.stdout and "--retry-errors" in first.stdout
    by_id = {r["id"]: r for r in samples(run)}
    assert len(by_id) == 7
    assert "not found" in by_id[recs[0]["id"]]["error"]
    assert "cannot decode" in by_id[recs[1]["id"]]["error"]
    assert by_id[recs[2]["id"]]["error"].startswith("audio:")
    long = by_id[recs[3]["id"]]
    assert long["error"] is None and "600.0 s" in long["warnings"][0] and "first 30 s" in long["warnings"][0]
    stereo = by_id[recs[4]["id"]]
    assert stereo["error"] is None and stereo["extracted"]["answer_text"] in ("rising", "falling")
    assert "no answer options" in by_id[recs[5]["id"]]["error"]
    res = json.loads((run / "results.json").read_text())["tasks"]["mmar"]["repeats"][0]
    assert res["errors"] == 4 and res["total"] == 7 and res["warnings"] == 1
    # --retry-errors redoes only the failed ones (they fail again: the files are still bad)
    audio(recs[0]).write_bytes(b"")  # still unusable
    retry = dt_eval("run", "--tasks", "mmar", "--model", str(det_model_dir), "--backend", "hf",
                    "--data-dir", f"mmar={bench}", "--output", str(run), "--no-progress", "--retry-errors", check=False)
    assert retry.returncode == 1, retry.stderr
    again = samples(run)
    assert len(again) == 7 + 4


def test_repeats_give_mean_std_pass_and_vote(det_model_dir, tmp_path):
    bench = make_fake_benchmark(tmp_path / "mmsu", "mmsu", 4, seed=1)
    run = tmp_path / "run"
    proc = dt_eval("run", "--tasks", "mmsu", "--model", str(det_model_dir), "--backend", "hf",
                   "--data-dir", f"mmsu={bench}", "--output", str(run), "--repeats", "3",
                   "--gen-kwargs", "temperature=0.7,top_p=0.9", "--no-progress")
    res = json.loads((run / "results.json").read_text())["tasks"]["mmsu"]
    assert len(res["repeats"]) == 3 and res["k"] == 3
    assert {"accuracy_std", "pass_at_3", "majority_vote_accuracy"} <= set(res)
    assert 0 <= res["majority_vote_accuracy"] <= res["pass_at_3"] <= 100
    assert "pass@3" in proc.stdout and "maj@3" in proc.stdout
    seeds = {r["repeat"] for r in samples(run)}
    assert seeds == {0, 1, 2}
