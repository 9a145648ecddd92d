"""Audio that is usable but not what the file promised is flagged, never used silently: a WAV
whose data chunk is cut short, and a clip longer than any model window sent whole because no
window is known. Real WAV files written with soundfile. (The run-level check -- the warning in
the sample record and once on stderr -- is in test_run_outcome.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from dt_eval.pipeline.audio import LONG_CLIP_S, LONG_NO_WINDOW, TRIMMED, TRUNCATED_WAV, load_audio
from dt_eval.types import AudioRef


def write_tone(path, seconds: float, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, subtype="PCM_16")
    return path.read_bytes()


def test_truncated_wav_is_flagged(tmp_path):
    whole = write_tone(tmp_path / "whole.wav", 2.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: 44 + 16000 * 2 // 2])  # header + 0.5 s of the 2 s the header declares
    got = load_audio(AudioRef(path=str(cut)))
    assert got.warning_kinds == [TRUNCATED_WAV]
    assert "truncated WAV" in got.warnings[0] and "64000 bytes" in got.warnings[0] and "(0.5 s)" in got.warnings[0]
    assert abs(got.source_seconds - 0.5) < 1e-3  # what is there is used
    # the same bytes embedded (HF parquet audio) are flagged too
    assert load_audio(AudioRef(data=cut.read_bytes())).warning_kinds == [TRUNCATED_WAV]
    # an intact file, and a streamed WAV whose header leaves the length open, are not
    assert load_audio(AudioRef(path=str(tmp_path / "whole.wav"))).warnings == []
    streamed = bytearray(whole)
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert load_audio(AudioRef(path=str(tmp_path / "streamed.wav"))).warnings == []


@pytest.mark.parametrize("window", [None, 0.0])
def test_long_clip_without_a_window_is_flagged(tmp_path, window):
    seconds = LONG_CLIP_S + 10
    write_tone(tmp_path / "long.wav", seconds, sr=8000)  # resampled to 16 kHz: what is sent
    got = load_audio(AudioRef(path=str(tmp_path / "long.wav")), 16000, window)
    assert got.warning_kinds == [LONG_NO_WINDOW]
    assert f"{seconds:.1f} s" in got.warnings[0] and "no audio window" in got.warnings[0]
    assert "13.2 MB" in got.warnings[0]  # base64 of 310 s of 16 kHz 16-bit audio: 310 * 32000 * 4 / 3
    assert got.audio.array.size == int(seconds * 16000)  # sent whole, as the warning says
    # with the family's window it is trimmed (and says so); a clip under the threshold is quiet
    trimmed = load_audio(AudioRef(path=str(tmp_path / "long.wav")), 16000, 30.0)
    assert trimmed.warning_kinds == [TRIMMED] and trimmed.audio.array.size == 30 * 16000
    write_tone(tmp_path / "short.wav", 20.0)
    assert load_audio(AudioRef(path=str(tmp_path / "short.wav")), 16000, window).warnings == []
