"""Audio loading: any soundfile-readable format, mono downmix, proper resampling (soxr).

Errors are per item (AudioError) so one bad clip never stops a run.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field

import numpy as np

from .backends.base import AudioInput
from .records import AudioRef


class AudioError(ValueError):
    """A clip that cannot be used: missing, empty, corrupt or unreadable."""


@dataclass
class LoadedAudio:
    audio: AudioInput
    source_rate: int
    source_channels: int
    source_seconds: float
    warnings: list[str] = field(default_factory=list)


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
    warnings = []
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
    return LoadedAudio(AudioInput(mono, target_rate), sr, channels, seconds, warnings)


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
