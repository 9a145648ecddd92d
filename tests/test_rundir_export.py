"""Run directory durability, results from samples, and official submission exports."""

import json
import random

import pytest

from dt_eval.backends.base import Generation
from dt_eval.tasks.data import load_task_data
from dt_eval.storage.export import export_run
from dt_eval.tasks.prompts import PromptSettings
from dt_eval.storage.rundir import RunDir, latest_by_key, read_samples
from dt_eval.scoring.aggregate import compute_results
from dt_eval.pipeline.records import make_sample_record
from dt_eval.scoring.submission import read_prediction_file, score_records
from dt_eval.tasks.config import load_task

from .reference_scoring import OfficialScriptCrash, ref_load_submission, ref_mcq_report, ref_mmsu_report
from .synthetic_meta import mmar_records, mmau_records, mmsu_records


def _rec(i, **extra):
    return {"key": f"k{i}", "task": "t", "id": str(i), "repeat": 0, "v": i, **extra}


def test_torn_last_line_is_cut_and_middle_garbage_dropped(tmp_path):
    with RunDir(tmp_path) as rd:
        rd.append([_rec(i) for i in range(3)])
    f = tmp_path / "samples.jsonl"
    with open(f, "ab") as fh:
        fh.write(b'{"key": "k3", "v"')  # a crash mid-write
    recs, dropped = read_samples(tmp_path, repair=True)
    assert [r["key"] for r in recs] == ["k0", "k1", "k2"] and dropped == 1
    assert f.read_bytes().endswith(b"}\n")  # file repaired: the next append starts on a clean line
    # a complete JSON value without its newline is also a torn write
    with open(f, "ab") as fh:
        fh.write(json.dumps(_rec(9)).encode())
    assert [r["key"] for r in read_samples(tmp_path, repair=True)[0]] == ["k0", "k1", "k2"]
    with RunDir(tmp_path) as rd:
        rd.append([_rec(3)])
    assert [r["key"] for r in read_samples(tmp_path)[0]] == ["k0", "k1", "k2", "k3"]


def test_records_with_any_string_are_written_and_read_back(tmp_path):
    odd = {"question": "lone \ud800 surrogate", "cjk": "一二 😀"}
    with RunDir(tmp_path) as rd:
        rd.append([_rec(0, meta=odd), _rec(1, meta={"cjk": "一二 😀"})])
        with pytest.raises(TypeError):  # not JSON at all: raises, and writes nothing
            rd.append([_rec(2), _rec(3, meta={"when": object()})])
    recs, dropped = read_samples(tmp_path)
    assert dropped == 0 and [r["meta"] for r in recs] == [odd, {"cjk": "一二 😀"}]
    assert "一二 😀" in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()[1]  # readable


def test_append_after_close_is_refused(tmp_path):
    from dt_eval.storage.rundir import RunDirError

    rd = RunDir(tmp_path)
    rd.open()
    rd.close()
    with pytest.raises(RunDirError, match="not open"):
        rd.append([_rec(0)])


def test_a_line_that_is_not_a_sample_record_is_a_clear_error(tmp_path, fake_bench, capsys):
    from dt_eval.reporting.tables import ReportError, load_run_results
    from dt_eval.storage.rundir import SamplesError

    with RunDir(tmp_path) as rd:
        rd.append([_rec(0), _rec(1)])
    f = tmp_path / "samples.jsonl"
    with open(f, "ab") as fh:
        fh.write(b"garbage\n")  # unreadable: dropped and counted, named on resume
        fh.write(json.dumps(_rec(2)).encode() + b"\n")
    assert read_samples(tmp_path)[1] == 1
    assert RunDir(tmp_path).load_samples()[1] == [3]
    good = f.read_bytes()
    for bad, what in ((b"[1, 2]", "an array"), (b"null", "null"), (b'{"key": "k9"}', "without 'task'")):
        f.write_bytes(good + bad + b"\n" + json.dumps(_rec(4)).encode() + b"\n")
        with pytest.raises(SamplesError, match=f"line 5 is .*{what}"):
            read_samples(tmp_path, repair=True)
        assert f.read_bytes().endswith(json.dumps(_rec(4)).encode() + b"\n")  # nothing cut
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ReportError, match="line 5"):
        load_run_results(tmp_path)


def test_run_dir_lock(tmp_path):
    from dt_eval.storage.rundir import RunDirError

    with RunDir(tmp_path):
        with pytest.raises(RunDirError, match="in use"):
            RunDir(tmp_path).open()


def test_latest_record_wins():
    assert latest_by_key([{"key": "a", "v": 1}, {"key": "a", "v": 2}])["a"]["v"] == 2


def _write_bench(tmp_path, task, records):
    d = tmp_path / task
    d.mkdir()
    cfg = load_task(task)
    name = cfg.data.local.metadata
    if name.endswith(".jsonl"):
        (d / name).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    else:
        (d / name).write_text(json.dumps(records, ensure_ascii=False))
    return d


def _outputs(item, rng):
    labels = "ABCDEFGH"
    k = rng.randrange(len(item.choices))
    return rng.choice([
        f"<think>\nI listen to the clip.\n</think>\n\n({labels[k]}) {item.choices[k]}",
        f"<think>\nHmm.\n</think>\n\nThe answer is {labels[k]}.",
        "<think>\nThe clip is long and I keep",  # cut off
        item.choices[k],
    ])


def _fake_run(tmp_path, task, records, seed=0, outputs=None):
    """Sample records made by the real record builder from realistic generations
    (outputs: the model output for item i, instead of random ones; no errors then)."""
    cfg = load_task(task)
    lt = load_task_data(cfg, _write_bench(tmp_path, task, records))
    rng = random.Random(seed)
    run = tmp_path / f"run-{task}"
    with RunDir(run) as rd:
        rd.write_config({"identity": {"model": "x"}, "tasks": {task: lt.to_json()}})
        for idx, item in enumerate(lt.items):
            key = f"{task}/{item.id}/0"
            if outputs is not None:
                gen = Generation(key=key, text=outputs[idx], finish_reason="stop")
            elif idx % 17:
                gen = Generation(key=key, text=_outputs(item, rng), finish_reason="stop")
            else:
                gen = Generation(key=key, error="audio: file not found")
            rd.append([make_sample_record(cfg, idx, item, 0, gen, [], PromptSettings())])
    return run, lt


@pytest.mark.parametrize("task,records,kind", [("mmau", mmau_records(120, 4), "mmau"),
                                               ("mmar", mmar_records(120, 4), "mmar")])
def test_exported_files_score_identically_with_the_official_rules(tmp_path, task, records, kind):
    run, lt = _fake_run(tmp_path, task, records)
    samples, _ = read_samples(run)
    results = compute_results(json.loads((run / "config.json").read_text()), latest_by_key(samples).values())
    t = results["tasks"][task]
    assert t["repeats"][0]["errors"] == len(range(0, 120, 17))
    suffix = ".jsonl" if task == "mmar" else ".json"
    for answers, key in (("extracted", "accuracy"), ("raw", "accuracy_official_raw")):
        out = tmp_path / f"{task}-{answers}{suffix}"
        assert export_run(run, task, out, answers=answers) == 120
        subs = read_prediction_file(out)
        text, _ = ref_mcq_report(subs, kind)  # the independent official re-implementation
        assert f"Total Accuracy: {t['repeats'][0][key]:.2f}% over 120 samples" in text
        # the exported records are the metadata as shipped, plus the prediction key
        assert all(set(s) - {load_task(task).prediction_key} == set(r) for s, r in zip(subs, records))
    # per-sample `correct` flags sum to the headline number
    assert sum(s["correct"] for s in samples) == t["repeats"][0]["correct"]


def test_ambiguous_letters_score_wrong_and_are_counted(tmp_path):
    """A bare letter that is both a label and another option's text is `ambiguous`: scored wrong
    in the run, counted beside unparsed, shown in the summary table, exported as no answer."""
    from dt_eval.reporting.tables import summary_rows

    recs = mmau_records(5, 1)
    for r in recs:  # label C is 'Cm7b5', the chord 'C' is option A and the answer
        r["choices"], r["answer"] = ["C", "Gm", "Cm7b5", "Eb/G"], "C"
    outputs = ["<think>x</think>\n\nC", "<think>x</think>\n\nThe answer is **C**.", "<think>x</think>\n\n(A) C",
               "<think>x</think>\n\nOption C", "<think>x</think>\n\nA"]
    run, _ = _fake_run(tmp_path, "mmau", recs, outputs=outputs)
    samples, _ = read_samples(run)
    assert [s["correct"] for s in samples] == [False, False, True, False, True]
    assert [s["extracted"]["ambiguous"] for s in samples] == [True, True, False, False, False]
    results = compute_results(json.loads((run / "config.json").read_text()), samples)
    rep = results["tasks"]["mmau"]["repeats"][0]
    assert (rep["ambiguous"], rep["unparsed"], rep["correct"], rep["total"]) == (2, 0, 2, 5)
    assert summary_rows(results)[0]["ambiguous"] == 2
    out = tmp_path / "sub.json"
    export_run(run, "mmau", out)
    assert [r["model_output"] for r in json.loads(out.read_text())] == ["", "", "C", "Cm7b5", "C"]


def test_rubrics_export(tmp_path):
    run, _ = _fake_run(tmp_path, "mmar", mmar_records(30, 1))
    out = tmp_path / "rubrics.jsonl"
    export_run(run, "mmar", out, fmt="rubrics")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(set(x) == {"id", "thinking_prediction", "answer_prediction"} for x in lines)
    assert all(len(x["thinking_prediction"]) <= 10_000 for x in lines)
    assert any(x["thinking_prediction"] == "I listen to the clip." for x in lines)


def test_mmsu_export_matches_official_output_schema(tmp_path):
    recs = mmsu_records(60, 2)
    run, _ = _fake_run(tmp_path, "mmsu", recs)
    out = tmp_path / "mmsu.jsonl"
    export_run(run, "mmsu", out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert list(rows[0]) == ["id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer_gt",
                             "response", "task_name", "category", "sub-category", "sub-sub-category",
                             "linguistics_sub_discipline"]
    samples, _ = read_samples(run)
    res = compute_results(json.loads((run / "config.json").read_text()), samples)["tasks"]["mmsu"]
    text, _ = ref_mmsu_report(rows)
    assert f"Overall Accuracy: {res['repeats'][0]['correct'] / res['repeats'][0]['total']:.4f}" in text


def test_export_errors(tmp_path):
    from dt_eval.storage.export import ExportError

    run, _ = _fake_run(tmp_path, "mmau", mmau_records(5))
    with pytest.raises(ExportError, match="no rubrics export"):
        export_run(run, "mmau", tmp_path / "x", fmt="rubrics")
    with pytest.raises(ExportError, match="no samples of task mmar"):
        export_run(run, "mmar", tmp_path / "x.jsonl")


# task, export format -> (the official script that loads the file, names it cannot load + the name to use)
_READERS = {
    ("mmau", "official"): ("mmau", {".jsonl": ".json"}),
    ("mmau-test", "official"): ("mmau", {".jsonl": ".json"}),
    ("mmar", "official"): ("mmar", {".txt": ".jsonl"}),
    ("mmar-2025", "official"): ("mmar", {".txt": ".jsonl"}),
    ("mmar", "rubrics"): ("mmar-rubrics", {".txt": ".jsonl"}),
    ("mmsu", "official"): ("mmsu", {".json": ".jsonl"}),
}
_RECORDS = {"mmau": mmau_records, "mmau-test": mmau_records, "mmar": mmar_records, "mmar-2025": mmar_records,
            "mmsu": mmsu_records}


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    runs = {}
    for task, make in _RECORDS.items():
        run, _ = _fake_run(tmp_path_factory.mktemp(task), task, make(40, 3))
        samples, _ = read_samples(run)
        runs[task] = (run, compute_results(json.loads((run / "config.json").read_text()), samples)["tasks"][task])
    return runs


@pytest.mark.parametrize("task,fmt", list(_READERS))
@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".txt"])
@pytest.mark.parametrize("answers", ["extracted", "raw"])
def test_every_export_loads_with_the_official_reader(fake_runs, tmp_path, task, fmt, suffix, answers):
    """The file's layout follows its name the way the official script's loader does; a name the
    loader cannot read is refused with the name to use; what it loads scores dt-eval's numbers."""
    from dt_eval.storage.export import ExportError

    script, refused = _READERS[(task, fmt)]
    run, results = fake_runs[task]
    out = tmp_path / f"sub{suffix}"
    if suffix in refused:
        with pytest.raises(ExportError, match=rf"official script.*\{refused[suffix]}\b"):
            export_run(run, task, out, fmt=fmt, answers=answers)
        assert not out.exists()
        return
    assert export_run(run, task, out, fmt=fmt, answers=answers) == 40
    try:
        loaded = ref_load_submission(out, script)
    except OfficialScriptCrash as crash:
        pytest.fail(f"the official {script} loader fails on {out.name}: {crash.reason}")
    assert len(loaded) == 40 and all(isinstance(r, dict) for r in loaded)
    if fmt == "rubrics":
        assert all(set(r) == {"id", "thinking_prediction", "answer_prediction"} for r in loaded)
        return
    # dt-eval score reads it like the official script does
    assert read_prediction_file(out, reader=load_task(task).submission_reader) == loaded
    if not results["answers_available"]:
        return
    # the official script prints, on what it loaded, the number dt-eval reported for the run
    text, _ = ref_mmsu_report(loaded) if script == "mmsu" else ref_mcq_report(loaded, script)
    report = score_records(load_task(task), loaded)
    assert "".join(line + "\n" for line in report.official_lines()) == text
    assert report.accuracy == results["repeats"][0]["accuracy" if answers == "extracted" else "accuracy_official_raw"]
