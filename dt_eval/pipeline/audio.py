"""Audio loading: any soundfile-readable format, mono downmix, proper resampling (soxr).

Errors are per item (AudioError) so one bad clip never stops a run. What is usable but not what
the file promised is a warning in the sample record (and, once per kind, on stderr): a clip
trimmed to the model's window, a WAV whose data is cut short, a long clip sent whole because no
window is known.
"""

from __future__ import annotations

import base64
import io
import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from dt_eval.errors import DtEvalError
from dt_eval.types import AudioInput, AudioRef

# With no window, clips longer than this get a warning: the longest window any known family
# takes (Qwen2.5-Omni / Qwen3-Omni: 300 s). 10 minutes of 16 kHz audio is a 25.6 MB request.
LONG_CLIP_S = 300.0

# Warning kinds (LoadedAudio.warning_kinds), so a caller can announce each kind once.
TRIMMED = "trimmed"
TRUNCATED_WAV = "truncated-wav"
LONG_NO_WINDOW = "long-no-window"


class AudioError(DtEvalError, ValueError):
    """A clip that cannot be used: missing, empty, corrupt or unreadable."""


@dataclass
class LoadedAudio:
    audio: AudioInput
    source_rate: int
    source_channels: int
    source_seconds: float
    warnings: list[str] = field(default_factory=list)
    warning_kinds: list[str] = field(default_factory=list)  # one per warning: TRIMMED, ...


def _wav_shortfall(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """(bytes the data chunk declares, bytes present) of a RIFF/WAVE file whose data chunk is cut
    short; None when it is whole or not such a file. libsndfile reads what is there silently."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        cid, n = struct.unpack("<4sI", f.read(8))
        if cid == b"data":
            present = size - pos - 8
            # 0 and 0xFFFFFFFF are "length unknown" placeholders of streamed WAVs, not a promise.
            return (n, present) if n not in (0, 0xFFFFFFFF) and n > present else None
        pos += 8 + n + (n & 1)
    return None


def _truncation_warning(ref: AudioRef, seconds: float) -> str | None:
    try:
        if ref.data is not None:
            found = _wav_shortfall(io.BytesIO(ref.data), len(ref.data))
        elif ref.path:
            with open(ref.path, "rb") as f:
                found = _wav_shortfall(f, os.fstat(f.fileno()).st_size)
        else:
            return None
    except (OSError, struct.error):
        return None
    if found is None:
        return None
    declared, present = found
    return (f"truncated WAV: its header declares {declared} bytes of audio (about "
            f"{seconds * declared / max(present, 1):.1f} s) but the file holds {present} ({seconds:.1f} s); "
            "only what is there was used (re-download or re-export the file)")


def _read(ref: AudioRef) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if ref.array is not None:
        if not ref.sampling_rate:
            raise AudioError("decoded audio array without a sampling rate")
        return np.asarray(ref.array, dtype=np.float32), int(ref.sampling_rate)
    try:
        if ref.data is not None:
            data, sr = sf.read(io.BytesIO(ref.data), dtype="float32", always_2d=True)
        elif ref.path:
            if not os.path.isfile(ref.path):  # libsndfile reports this as a vague "System error"
                raise AudioError(f"audio file not found: {ref.path}")
            if os.path.getsize(ref.path) == 0:
                raise AudioError(f"audio file is empty (0 bytes): {ref.path}")
            data, sr = sf.read(ref.path, dtype="float32", always_2d=True)
        else:
            raise AudioError("the item has no audio")
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {ref.path}") from None
    except sf.LibsndfileError as e:
        where = ref.path or "embedded audio"
        raise AudioError(f"cannot decode {where}: {e}") from None
    except RuntimeError as e:  # older soundfile raises RuntimeError
        raise AudioError(f"cannot decode {ref.describe()}: {e}") from None
    return data, int(sr)


def load_audio(ref: AudioRef | None, target_rate: int = 16000, window_s: float | None = None) -> LoadedAudio:
    """Decode, downmix to mono, resample to `target_rate`, and trim to the model's window.

    Trimming is explicit and recorded: models such as Qwen2-Audio silently drop everything past
    30 s, so we cut there ourselves and say so in the sample's warnings.
    """
    if ref is None:
        raise AudioError("the item has no audio reference")
    data, sr = _read(ref)
    channels = 1 if data.ndim == 1 else data.shape[1]
    mono = data if data.ndim == 1 else data.mean(axis=1)
    if mono.size == 0:
        raise AudioError(f"audio is empty (0 samples): {ref.describe()}")
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"audio contains NaN or infinite samples: {ref.describe()}")
    seconds = mono.size / sr
    warnings, kinds = [], []
    truncated = _truncation_warning(ref, seconds) if ref.array is None else None
    if truncated:
        warnings.append(truncated)
        kinds.append(TRUNCATED_WAV)
    if sr != target_rate:
        import soxr

        mono = soxr.resample(mono, sr, target_rate, quality="HQ")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if window_s and seconds > window_s:
        mono = mono[: int(window_s * target_rate)]
        warnings.append(
            f"clip is {seconds:.1f} s, longer than the model's {window_s:g} s audio window: "
            f"only the first {window_s:g} s were used"
        )
        kinds.append(TRIMMED)
    elif not window_s and seconds > LONG_CLIP_S:
        request_mb = (44 + 2 * mono.size) * 4 / 3 / 1e6  # base64 of the 16-bit WAV sent
        warnings.append(
            f"clip is {seconds:.1f} s and no audio window is set (unknown model family, one without a "
            f"window, or --audio-window 0): sent whole, about {request_mb:.1f} MB in one request; "
            "pass --preset or --audio-window SECONDS to trim it"
        )
        kinds.append(LONG_NO_WINDOW)
    return LoadedAudio(AudioInput(mono, target_rate), sr, channels, seconds, warnings, kinds)


def wav_pcm16_bytes(audio: AudioInput) -> bytes:
    """16-bit PCM WAV bytes: what OpenAI-compatible servers accept as `input_audio`; byte for
    byte what soundfile writes (PCM_16) for float32 input (tested).

    libsndfile maps float x to (lrint(x * 2**31) >> 16), clipped; this does the same with numpy
    and writes the 44-byte header by hand, several times faster than going through soundfile
    (which matters at hundreds of requests per second; see benchmarks/run_overhead.py).
    """
    x = np.asarray(audio.array, dtype=np.float32)
    channels = 1 if x.ndim == 1 else int(x.shape[1])
    # Exact in float32: scaling by powers of two, and rint/floor of values that are integers or
    # small. Same result as libsndfile's lrint(x * 2**31) >> 16 with clipping.
    scaled = np.multiply(x, np.float32(2.0**31), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.multiply(scaled, np.float32(2.0**-16), out=scaled)
    np.floor(scaled, out=scaled)
    # fmax/fmin clip and, unlike np.clip, map NaN to the bound (-32768, as libsndfile does).
    np.fmax(scaled, np.float32(-32768.0), out=scaled)
    np.fmin(scaled, np.float32(32767.0), out=scaled)
    data = np.ascontiguousarray(scaled.astype("<i2")).tobytes()
    sr = int(audio.sampling_rate)
    block = 2 * channels
    header = b"".join(
        (
            b"RIFF",
            (36 + len(data)).to_bytes(4, "little"),
            b"WAVEfmt ",
            (16).to_bytes(4, "little"),
            (1).to_bytes(2, "little"),  # PCM
            channels.to_bytes(2, "little"),
            sr.to_bytes(4, "little"),
            (sr * block).to_bytes(4, "little"),
            block.to_bytes(2, "little"),
            (16).to_bytes(2, "little"),
            b"data",
            len(data).to_bytes(4, "little"),
        )
    )
    return header + data


def wav_base64(audio: AudioInput) -> bytes:
    """Base64 (ASCII bytes) of `wav_pcm16_bytes`: what goes into `input_audio.data`."""
    return base64.b64encode(wav_pcm16_bytes(audio))
