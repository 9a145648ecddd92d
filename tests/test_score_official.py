"""`dt-eval score` agrees with an independent re-implementation of the official scripts, item by
item and line by line, on synthetic records and on the real MMAU test-mini / MMAR metadata."""

import json
import random
from contextlib import nullcontext

import pytest

from dt_eval.scoring.submission import SubmissionError, read_prediction_file, score_records
from dt_eval.tasks.config import load_task

from .adversarial import build_prediction_file
from .paths import MMAR_META, MMAR_META_V1, MMAU_META, MMAU_META_OLD, need
from .reference_scoring import ref_mcq_report, ref_mmsu_report
from .synthetic_meta import mmar_records, mmau_records, mmsu_records


def _load(path):
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]


def _check_mcq(task, kind, records, seed):
    preds = build_prediction_file(records, kind, random.Random(seed))
    report = score_records(load_task(task), preds)
    text, verdicts = ref_mcq_report(preds, kind)
    assert "\n".join(report.official_lines()) + "\n" == text
    assert [(r.id, r.correct) for r in report.items] == [(str(i), c) for i, c in verdicts]
    missing = [r["id"] for r in preds if load_task(task).prediction_key not in r]
    assert report.missing_ids == missing
    return report


@pytest.mark.parametrize("seed", range(5))
def test_mmau_synthetic_agrees_with_reference(seed):
    _check_mcq("mmau", "mmau", mmau_records(300, seed), seed)


@pytest.mark.parametrize("seed", range(5))
def test_mmar_synthetic_agrees_with_reference(seed):
    _check_mcq("mmar", "mmar", mmar_records(300, seed), seed)


@pytest.mark.parametrize("seed", range(5))
def test_mmsu_synthetic_agrees_with_reference(seed):
    # null and non-string responses included: the official script drops them ('Error prediction!')
    preds = build_prediction_file(mmsu_records(300, seed), "mmsu", random.Random(seed))
    report = score_records(load_task("mmsu"), preds)
    text, outcomes = ref_mmsu_report(preds)
    assert "".join(line + "\n" for line in report.official_lines()) == text
    assert [rid for rid, _ in report.non_string] == [rid for rid, o in outcomes if o == "not_string"]
    with pytest.raises(SubmissionError, match="must be a string|is null") if report.non_string else nullcontext():
        score_records(load_task("mmsu"), preds, strict=True)


@pytest.mark.parametrize("seed", range(3))
def test_real_mmau_test_mini(seed):
    records = _load(need(MMAU_META))
    assert len(records) == 1000
    report = _check_mcq("mmau", "mmau", records, seed)
    assert report.overall.total + len(report.missing_ids) == 1000


def test_real_mmau_pre_v05_file():
    _check_mcq("mmau", "mmau", _load(need(MMAU_META_OLD)), 11)


@pytest.mark.parametrize("seed", range(3))
def test_real_mmar(seed):
    records = _load(need(MMAR_META))
    assert len(records) == 1000
    _check_mcq("mmar", "mmar", records, seed)


def test_real_mmar_2025_release():
    _check_mcq("mmar-2025", "mmar", _load(need(MMAR_META_V1)), 7)


def _label_clashes(choices, labels="ABCDEFGHIJ"):
    """Letters that label one option and are, case aside, the whole text of a different option."""
    labels = labels[: len(choices)]
    texts = [c.strip().casefold() for c in choices]
    return {letter for i, letter in enumerate(labels)
            if letter.casefold() in texts and texts[texts.index(letter.casefold())] != texts[i]}


@pytest.mark.parametrize("path", [MMAU_META, MMAU_META_OLD, MMAR_META, MMAR_META_V1], ids=lambda p: p.name)
def test_real_items_are_ambiguous_only_where_a_letter_is_also_an_option_text(path):
    """On the real metadata, extraction calls an answer ambiguous only on items where a label
    letter is also another option's whole text (MMAU's chord and letter-name items), and there
    a bare clashing letter always is."""
    from dt_eval.pipeline.extract import extract

    from .adversarial import adversarial_predictions

    rng = random.Random(0)
    for r in _load(need(path)):
        clashes = _label_clashes(r["choices"])
        for pred in adversarial_predictions(r, rng):
            ext = extract(pred, r["choices"])
            assert not ext.ambiguous or clashes, (r["id"], pred)
        for letter in clashes:
            assert extract(letter, r["choices"]).ambiguous and not extract(f"({letter})", r["choices"]).ambiguous


def test_real_quirks_load(tmp_path):
    """The loader copes with the real files' quirks (list categories, duplicate choices, ...)."""
    from dt_eval.tasks.data import load_task_data

    mmau = need(MMAU_META)
    lt = load_task_data(load_task("mmau"), mmau.parent)
    assert len(lt.items) == 1000 and lt.version_label and not lt.warnings
    assert sum(isinstance(i.raw["category"], list) for i in lt.items) == 13
    assert sum(len(set(i.choices)) < len(i.choices) for i in lt.items) == 27
    assert {len(i.choices) for i in lt.items} == {2, 4, 5, 8}
    mmar = load_task_data(load_task("mmar"), need(MMAR_META).parent)
    assert {i.groups["modality"] for i in mmar.items} >= {"mix-sound-music-speech", "mix-sound-music"}
    assert sum(i.raw["language"] is None for i in mmar.items) == 320
    assert all(i.reference_thinking for i in mmar.items)


def test_perfect_and_letter_only_predictions():
    recs = mmau_records(60, 3)
    perfect = [dict(r, model_output=r["answer"]) for r in recs]
    assert score_records(load_task("mmau"), perfect).accuracy == 100.0
    letters = [dict(r, model_output="ABCDEFGH"[r["choices"].index(r["answer"])]) for r in recs]
    official = score_records(load_task("mmau"), letters)
    extracted = score_records(load_task("mmau"), letters, extract_answers=True)
    assert extracted.accuracy == 100.0 and official.accuracy < 50.0
    assert extracted.official_raw.accuracy == official.accuracy  # reported beside, not instead


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda r: r.update(model_output=None), "is null"),
        (lambda r: r.update(model_output=3), "must be a string"),
        (lambda r: r.update(task="noise"), "'task' is 'noise'"),
        (lambda r: r.pop("difficulty"), "'difficulty' is missing"),
        (lambda r: r.update(choices="Man"), "list of strings"),
        (lambda r: r.update({"sub-category": ["x"]}), "sub-category"),
    ],
)
def test_malformed_records_name_the_record(mutate, needle):
    recs = [dict(r, model_output=r["answer"]) for r in mmau_records(10, 1)]
    mutate(recs[4])
    with pytest.raises(SubmissionError) as e:
        score_records(load_task("mmau"), recs)
    assert needle in str(e.value) and "record #4" in str(e.value) and recs[4]["id"] in str(e.value)


def test_unknown_mmar_modality_is_an_error():
    recs = [dict(r, answer_prediction="x") for r in mmar_records(5)]
    recs[2]["modality"] = "mix-speech-sound"
    with pytest.raises(SubmissionError, match="'modality' is 'mix-speech-sound'"):
        score_records(load_task("mmar"), recs)


def test_no_predictions_at_all():
    with pytest.raises(SubmissionError, match="no record carries 'model_output'"):
        score_records(load_task("mmau"), mmau_records(5))


def test_mmsu_missing_counted_wrong_and_reported():
    recs = mmsu_records(20)
    for r in recs[:15]:
        r["response"] = "ABCD"[[r["choice_a"], r["choice_b"], r["choice_c"], r["choice_d"]].index(r["answer_gt"])]
    rep = score_records(load_task("mmsu"), recs)
    assert rep.overall.total == 20 and rep.overall.correct == 15 and len(rep.missing_ids) == 5


def test_read_prediction_file_errors(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": 1}\n{"id": 2\n')
    with pytest.raises(SubmissionError, match="line 2"):
        read_prediction_file(p)
    p.write_text("")
    with pytest.raises(SubmissionError, match="empty"):
        read_prediction_file(p)
    p.write_text("[1, 2]")
    with pytest.raises(SubmissionError, match="record #0"):
        read_prediction_file(p)
    with pytest.raises(SubmissionError, match="no such file"):
        read_prediction_file(tmp_path / "nope.json")


def test_hidden_answers_task_refuses_to_score():
    with pytest.raises(SubmissionError, match="answers are hidden"):
        score_records(load_task("mmau-test"), [dict(r, model_output="x") for r in mmau_records(3)])
