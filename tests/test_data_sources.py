"""Task data from a local parquet folder (MMSU ships only as HF parquet with embedded audio),
decoded with soundfile rather than datasets' torchcodec path; sha256 recorded per source."""

import io

import numpy as np
import pytest
import soundfile as sf

from dt_eval.audio import load_audio
from dt_eval.data import DataError, load_task_data
from dt_eval.taskconfig import load_task

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
