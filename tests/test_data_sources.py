"""Task data from a local parquet folder (MMSU ships only as HF parquet with embedded audio),
decoded with soundfile rather than datasets' torchcodec path; sha256 recorded per source."""

import io
import json

import numpy as np
import pytest
import soundfile as sf

from dt_eval.pipeline.audio import load_audio
from dt_eval.tasks.data import DataError, item_from_record, load_task_data
from dt_eval.tasks.config import load_task

from .synthetic_meta import mmsu_records


def _wav_bytes(freq: float) -> bytes:
    buf = io.BytesIO()
    t = np.arange(16000) / 16000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def test_mmsu_parquet_folder_with_embedded_audio(tmp_path):
    datasets = pytest.importorskip("datasets")
    recs = mmsu_records(6, 3)
    for i, r in enumerate(recs):
        r["audio"] = {"bytes": _wav_bytes(200 + 100 * i), "path": f"{r['id']}.wav"}
    ds = datasets.Dataset.from_list(recs).cast_column("audio", datasets.Audio(decode=False))
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    lt = load_task_data(load_task("mmsu"), tmp_path)
    assert len(lt.items) == 6 and len(lt.sha256) == 64
    item = lt.items[2]
    assert item.choices == [recs[2][c] for c in ("choice_a", "choice_b", "choice_c", "choice_d")]
    assert item.answer == recs[2]["answer_gt"] and item.groups["category"] == recs[2]["category"]
    assert "audio" not in item.raw and item.raw["audio_path"] == recs[2]["audio"]["path"]  # no bytes in logs
    clip = load_audio(item.audio, 16000)
    assert clip.audio.array.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(clip.audio.array))
    assert abs(np.argmax(spectrum) - 400) <= 1  # the third clip is the 400 Hz tone
    # a changed file changes the recorded sha256
    ds.select(range(5)).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    assert load_task_data(load_task("mmsu"), tmp_path).sha256 != lt.sha256


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task_data(load_task("mmau"), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="mmau-test-mini.json"):
        load_task_data(load_task("mmau"), tmp_path / "empty")


def test_unknown_metadata_version_warns(tmp_path, fake_bench):
    lt = load_task_data(load_task("mmau"), fake_bench("mmau", 3))
    assert lt.version_label is None and any("not a known release" in w for w in lt.warnings)


def _mmar_lines(bench):
    meta = bench / "MMAR-meta.jsonl"
    return meta, meta.read_text(encoding="utf-8").split("\n")


def test_unreadable_metadata_is_a_clear_error_naming_where(fake_bench):
    mmau = fake_bench("mmau", 4)
    meta = mmau / "mmau-test-mini.json"
    good = meta.read_bytes()
    meta.write_bytes(good.replace(b"pitch", b"pi\xfftch", 1))  # a Latin-1 byte in a UTF-8 file
    line = good[: good.index(b"pitch")].count(b"\n") + 1
    with pytest.raises(DataError, match=f"not UTF-8 text .*line {line}"):
        load_task_data(load_task("mmau"), mmau)
    recs = json.loads(good)
    meta.write_text(json.dumps(recs[:2] + ["oops"] + recs[2:]))
    with pytest.raises(DataError, match="record #2 is a str, not an object"):
        load_task_data(load_task("mmau"), mmau)

    mmar = fake_bench("mmar", 5)
    path, lines = _mmar_lines(mmar)
    path.write_text("\n".join(lines[:2] + [lines[2][:-3]] + lines[3:]), encoding="utf-8")  # cut short
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        load_task_data(load_task("mmar"), mmar)
    path.write_text("\n".join(lines[:4] + ["[1, 2]"] + lines[4:]), encoding="utf-8")
    with pytest.raises(DataError, match="line 5 is a list, not an object"):
        load_task_data(load_task("mmar"), mmar)


def test_jsonl_strings_may_hold_unicode_line_separators(fake_bench):
    mmar = fake_bench("mmar", 3)
    path, lines = _mmar_lines(mmar)
    recs = [json.loads(x) for x in lines if x.strip()]
    recs[0]["question"] += "\u2028second line\u0085"  # legal raw in a JSON string
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    lt = load_task_data(load_task("mmar"), mmar)
    assert len(lt.items) == 3 and lt.items[0].question.endswith("\u2028second line\u0085")


def test_duplicate_ids_are_named(fake_bench):
    mmar = fake_bench("mmar", 5)
    path, lines = _mmar_lines(mmar)
    recs = [json.loads(x) for x in lines if x.strip()]
    recs[3]["id"] = recs[4]["id"] = recs[0]["id"]
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    with pytest.raises(DataError, match=f"1 item id.*{recs[0]['id']}' \\(3x\\)"):
        load_task_data(load_task("mmar"), mmar, limit=2)  # checked on the whole file, whatever --limit


def test_records_the_official_scorer_cannot_score_are_flagged():
    cfg = load_task("mmsu")
    recs = mmsu_records(4, 1)
    recs[1]["choice_b"] = None  # a gap: choice_c would be shown as "(B)" but scored as C
    recs[2]["choice_d"] = None  # a three-option item: fine
    del recs[3]["answer_gt"]
    items = [item_from_record(cfg, r, i, None) for i, r in enumerate(recs)]
    assert items[0].data_error is None and items[2].data_error is None and len(items[2].choices) == 3
    assert items[1].data_error == "'choice_b' is null"
    assert items[3].data_error == "'answer_gt' is missing"
    hidden = load_task("mmau-test")
    assert item_from_record(hidden, {"id": "x", "choices": ["a", "b"]}, 0, None).data_error is None
