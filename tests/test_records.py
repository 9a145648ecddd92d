"""Typed run records (dt_eval/records.py) through a real run directory: written by the run's own
record builder, read back by `RunDir.read()`; lone surrogates, unknown fields and the records of
release 0.1.0 (tests/fixtures/run-0.1.0, written by commit 0c05d29) survive; the reader never
repairs what it only reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dt_eval.pipeline.records import sample_record
from dt_eval.records import SCHEMA_VERSION, RunConfig, SampleRecord, TaskResults
from dt_eval.storage.rundir import RunDir, SamplesError
from dt_eval.tasks.config import load_task
from dt_eval.tasks.prompts import PromptSettings
from dt_eval.types import Generation, Item

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


def mmau_item(i: int, question: str = "Is the pitch rising or falling?") -> Item:
    raw = {"id": f"q{i}", "audio_id": f"./a/{i}.wav", "question": question, "choices": ["rising", "falling"],
           "answer": "falling", "task": "sound", "difficulty": "easy", "sub-category": "Pitch"}
    return Item(id=raw["id"], question=question, choices=raw["choices"], answer="falling", audio=None, raw=raw)


def test_records_round_trip_through_the_run_directory_with_a_lone_surrogate(tmp_path):
    cfg = load_task("mmau")
    item = mmau_item(0, "What \ud800 is this?")  # a lone surrogate in the metadata ...
    gen = Generation(key="mmau/q0/0", text="<think>\nIt goes down \udcff.\n</think>\n\n(B) falling",
                     finish_reason="stop", completion_tokens=12)  # ... and in the output
    rec = sample_record(cfg, 0, item, 0, gen, ["a warning"], PromptSettings())
    failed = sample_record(cfg, 1, mmau_item(1), 0, Generation(key="mmau/q1/0", error="audio: gone"), [])
    with RunDir(tmp_path) as rd:
        rd.append([rec, failed])
    run = RunDir(tmp_path).read()
    assert list(run.samples) == ["mmau/q0/0", "mmau/q1/0"] and run.bad_lines == [] and run.records == 2
    back = run.samples["mmau/q0/0"]
    assert back == rec  # every field, the surrogates included
    assert back.schema_version == SCHEMA_VERSION == 2 and back.kind == "audio"
    assert back.meta["question"] == "What \ud800 is this?" and back.output.endswith("(B) falling")
    assert back.extracted.answer_text == "falling" and back.correct is True and back.correct_raw is True
    assert back.prompt["user"].startswith("<audio>What \ud800 is this?")
    bad = run.samples["mmau/q1/0"]
    assert bad.failed and bad.extracted is None and bad.correct is False and bad.prediction == ""
    # the line is the record's fields as JSON (no pydantic writer: it refuses the surrogate)
    line = json.loads((tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line == rec.to_json_dict() and "logprobs" not in line


def test_unknown_fields_survive_and_version_1_records_stay_version_1(tmp_path):
    old = json.loads((FIXTURE / "samples.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "schema_version" not in old  # written by 0.1.0
    newer = dict(old, key="mmau/x/0", id="x", schema_version=7, judge_note={"by": "a later dt-eval"})
    with RunDir(tmp_path) as rd:
        rd.append([old, newer])
    run = RunDir(tmp_path).read()
    v1, v7 = run.samples[old["key"]], run.samples["mmau/x/0"]
    assert v1.schema_version == 1 and v1.to_json_dict() == old  # nothing added, nothing lost
    assert v7.schema_version == 7 and v7.get("judge_note") == {"by": "a later dt-eval"}
    assert "judge_note" in v7 and "judge_note" not in v1
    assert v7.to_json_dict() == newer


def test_a_line_with_wrong_field_types_is_named_and_the_reader_never_repairs(tmp_path):
    with RunDir(tmp_path) as rd:
        rd.append([{"key": "t/1/0", "task": "t", "id": "1", "repeat": 0}])
    f = tmp_path / "samples.jsonl"
    with open(f, "ab") as fh:
        fh.write(b'{"key": "t/2/0", "task"')  # a torn tail, as a crash leaves it
    size = f.stat().st_size
    run = RunDir(tmp_path).read()
    assert list(run.samples) == ["t/1/0"] and run.bad_lines == [2]
    assert f.stat().st_size == size  # read-only: the torn tail is still there
    f.write_bytes(f.read_bytes()[: -len(b'{"key": "t/2/0", "task"')]
                  + b'{"key": "t/2/0", "task": "t", "id": "2", "repeat": "second"}\n')
    with pytest.raises(SamplesError, match=r"line 2 is not a dt-eval sample record \(repeat"):
        RunDir(tmp_path).read()


def test_config_and_results_models_read_what_0_1_0_wrote():
    config = RunDir(FIXTURE).read().config
    assert isinstance(config, RunConfig) and config.model == "models/tiny-deterministic"
    assert config.backend_name == "hf" and config.tasks["mmau"].repeats == 2 and config.tasks["mmsu"].items == 3
    assert config.to_json_dict() == json.loads((FIXTURE / "config.json").read_text())  # unchanged on rewrite
    stored = json.loads((FIXTURE / "results.json").read_text())["tasks"]["mmau"]
    typed = TaskResults.model_validate(stored)
    assert typed.pass_at_k == stored["pass_at_2"] and typed.k == 2 and typed.accuracy == stored["accuracy_mean"]
    assert typed.errors == sum(r["errors"] for r in stored["repeats"]) == 2
    assert typed.to_json_dict() == stored  # results.json's keys, pass_at_2 included


def test_the_openai_backends_name_is_read_from_either_key():
    assert RunConfig(backend={"backend": "openai", "servers": ["http://x/v1"]}).backend_name == "openai"
    assert RunConfig(backend={"name": "hf"}).backend_name == "hf" and RunConfig().backend_name is None


def test_lm_eval_records_are_sample_records(tmp_path):
    rec = SampleRecord(schema_version=SCHEMA_VERSION, key="lm-eval:gsm8k/gsm8k/3/0/0", task="lm-eval:gsm8k",
                       kind="lm-eval", subtask="gsm8k", id="gsm8k/3", index=3, output="42", metrics={"em,none": 1.0},
                       target="42", correct=True, returned="42")
    with RunDir(tmp_path) as rd:
        rd.append([rec])
    back = RunDir(tmp_path).read().samples[rec.key]
    assert back.is_lm_eval and back.metrics == {"em,none": 1.0} and back.index == 3 and back == rec


def test_a_copy_of_the_fixture_reads_like_the_original(tmp_path):
    run = shutil.copytree(FIXTURE, tmp_path / "run")
    assert RunDir(run).read().samples == RunDir(FIXTURE).read().samples
