"""Synthetic audio and fake benchmark directories for offline tests.

Only numpy + soundfile (+ soxr for optional resampling of espeak output): no torch.

The signals are chosen so that a tiny model can learn them and a human can check them:
rising / falling pitch sweeps, steady tones, noise. ``make_fake_benchmark`` writes small
MMAU / MMAR / MMSU directories in the same metadata schema as the real releases, where every
item asks for the direction of a pitch sweep. Choice order always puts ``"rising"`` first
and ``"falling"`` second, so the deterministic tiny model
(:mod:`dt_eval.testing.tiny_qwen2audio`: ``(A) rising`` / ``(B) falling``) answers every
fake item correctly, by text and by letter.

CLI::

    python -m dt_eval.testing.synth_audio fake-bench OUT --task mmau --n 8 [--seed 0]
    python -m dt_eval.testing.synth_audio sweep OUT.wav --direction rising --seconds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

Direction = Literal["rising", "falling"]
Task = Literal["mmau", "mmar", "mmsu"]

DEFAULT_SR = 16000
_FADE_S = 0.01  # 10 ms raised-cosine fade in/out, avoids clicks at the edges

#: Metadata keys of the real releases (schema facts of the distributed metadata files).
MMAU_KEYS = (
    "id", "audio_id", "question", "choices", "answer", "dataset", "task", "split",
    "category", "sub-category", "difficulty",
)
MMAR_KEYS = (
    "id", "audio_path", "question", "choices", "answer", "modality", "category", "sub-category",
    "language", "source", "url", "timestamp", "thinking", "cue", "rubric",
)
MMAR_RUBRIC_KEYS = ("name", "scoring_point", "note", "choices")
MMSU_KEYS = (
    "id", "task_name", "audio", "question", "choice_a", "choice_b", "choice_c", "choice_d",
    "answer_gt", "category", "sub-category", "sub-sub-category", "linguistics_sub_discipline",
)

#: File names / audio folders of each fake benchmark directory.
BENCH_LAYOUT = {
    "mmau": ("mmau-test-mini.json", "test-mini-audios"),
    "mmar": ("MMAR-meta.jsonl", "audio"),
    "mmsu": ("mmsu.jsonl", "audio"),
}


# --------------------------------------------------------------------------- signals


def _n_samples(seconds: float, sr: int) -> int:
    n = int(round(seconds * sr))
    if n <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    return n


def _fade(audio: np.ndarray, sr: int) -> np.ndarray:
    n = min(int(_FADE_S * sr), len(audio) // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    return audio


def sweep(
    direction: Direction,
    seconds: float = 2.0,
    sr: int = DEFAULT_SR,
    f0: float | None = None,
    f1: float | None = None,
    amplitude: float = 0.3,
    *,
    method: Literal["log", "linear"] = "log",
) -> np.ndarray:
    """A sine sweep from ``f0`` to ``f1`` Hz (float32, mono, peak ``amplitude``).

    Defaults: rising 300 -> 1500 Hz, falling 1500 -> 300 Hz. Given frequencies must agree
    with ``direction`` (``f0 < f1`` for rising). ``method="log"`` sweeps exponentially
    (constant rate in octaves, as heard); ``"linear"`` sweeps linearly in Hz.
    """
    if direction not in ("rising", "falling"):
        raise ValueError(f"direction must be 'rising' or 'falling', got {direction!r}")
    lo, hi = 300.0, 1500.0
    if f0 is None:
        f0 = lo if direction == "rising" else hi
    if f1 is None:
        f1 = hi if direction == "rising" else lo
    if f0 <= 0 or f1 <= 0 or f0 == f1:
        raise ValueError(f"need distinct positive frequencies, got f0={f0} f1={f1}")
    if (f1 > f0) != (direction == "rising"):
        raise ValueError(f"f0={f0} -> f1={f1} is not {direction}")
    if max(f0, f1) >= sr / 2:
        raise ValueError(f"frequencies must be below Nyquist ({sr / 2} Hz)")
    n = _n_samples(seconds, sr)
    t = np.arange(n) / sr
    T = n / sr
    if method == "log":
        k = np.log(f1 / f0) / T
        phase = 2 * np.pi * f0 * np.expm1(k * t) / k  # integral of f0 * exp(k t)
    elif method == "linear":
        phase = 2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / T * t**2)
    else:
        raise ValueError(f"method must be 'log' or 'linear', got {method!r}")
    return _fade(amplitude * np.sin(phase), sr).astype(np.float32)


def tone(
    freq: float = 440.0, seconds: float = 1.0, sr: int = DEFAULT_SR, amplitude: float = 0.3
) -> np.ndarray:
    """A steady sine tone (float32, mono)."""
    n = _n_samples(seconds, sr)
    t = np.arange(n) / sr
    return _fade(amplitude * np.sin(2 * np.pi * freq * t), sr).astype(np.float32)


def noise(
    seconds: float = 1.0, sr: int = DEFAULT_SR, amplitude: float = 0.1, seed: int = 0
) -> np.ndarray:
    """Gaussian white noise with standard deviation ``amplitude``, clipped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal(_n_samples(seconds, sr)) * amplitude
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(
    path: str | Path, audio: np.ndarray, sr: int = DEFAULT_SR, subtype: str = "PCM_16"
) -> Path:
    """Write ``audio`` (mono ``(n,)`` or ``(n, channels)``) as WAV; creates parent dirs."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio), sr, subtype=subtype, format="WAV")
    return path


def speech_espeak(
    text: str, path: str | Path, *, voice: str = "en", sr: int | None = DEFAULT_SR
) -> Path | None:
    """Synthesise ``text`` with ``espeak-ng`` into a WAV at ``path``.

    Returns ``None`` when ``espeak-ng`` is not on PATH (callers/tests should skip). espeak
    writes 22.05 kHz; with ``sr`` set the file is resampled (soxr) to that rate.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    if sr is not None:
        import soundfile as sf

        audio, native = sf.read(str(path), dtype="float32")
        if native != sr:
            import soxr

            write_wav(path, soxr.resample(audio, native, sr), sr)
    return path


# --------------------------------------------------------------------------- fake benchmarks

_QUESTIONS = (
    "Does the pitch of the tone go up or down?",
    "Which best describes how the pitch changes over the clip?",
    "Listen to the tone. Is its pitch rising or falling?",
    "What is the direction of the frequency sweep in this recording?",
)
_EXTRA_CHOICES = ("steady", "silent")


def _choices(i: int) -> list[str]:
    """2, 3 or 4 choices; always "rising" (A) then "falling" (B)."""
    return ["rising", "falling", *_EXTRA_CHOICES[: i % 3]]


def _random_sweep(rng: np.random.Generator, direction: str, seconds: float) -> np.ndarray:
    lo = float(rng.uniform(200.0, 500.0))
    hi = float(lo * rng.uniform(2.0, 5.0))
    amplitude = float(rng.uniform(0.1, 0.6))
    f0, f1 = (lo, hi) if direction == "rising" else (hi, lo)
    return sweep(direction, seconds, DEFAULT_SR, f0, f1, amplitude)  # type: ignore[arg-type]


def _mmau_item(
    i: int, rng: np.random.Generator, direction: str, seconds: float
) -> tuple[dict, str]:
    item_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    rel = f"./test-mini-audios/{item_id}.wav"
    rec = {
        "id": item_id,
        "audio_id": rel,
        "question": _QUESTIONS[i % len(_QUESTIONS)],
        "choices": _choices(i),
        "answer": direction,
        "dataset": "synthetic",
        "task": ("sound", "music", "speech")[i % 3],
        "split": "test-mini",
        "category": ("Reasoning", "Information Extraction")[i % 2],
        "sub-category": "Pitch Direction",
        "difficulty": ("easy", "medium", "hard")[i % 3],
    }
    return rec, rel


def _mmar_item(
    i: int, rng: np.random.Generator, direction: str, seconds: float
) -> tuple[dict, str]:
    secs = int(np.ceil(seconds))
    youtube = i % 2 == 0
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    vid = "".join(rng.choice(list(alphabet), size=11 if youtube else 10))
    if not youtube:
        vid = "BV" + vid
    item_id = f"{vid}_00-00-00_00-00-{secs:02d}"
    rel = f"./audio/{item_id}.wav"
    up = direction == "rising"
    rec = {
        "id": item_id,
        "audio_path": rel,
        "question": _QUESTIONS[i % len(_QUESTIONS)],
        "choices": _choices(i),
        "answer": direction,
        "modality": ("sound", "music", "speech", "mix-sound-music")[i % 4],
        "category": ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer")[i % 4],
        "sub-category": "Pitch Direction",
        "language": None if i % 3 else "en",
        "source": "youtube" if youtube else "bilibili",
        "url": (
            f"https://www.youtube.com/watch?v={vid}" if youtube
            else f"https://www.bilibili.com/video/{vid}"
        ),
        "timestamp": f"00:00:00,00:00:{secs:02d}",
        "thinking": f"The pitch goes {'up' if up else 'down'} steadily from start to end.",
        "cue": ["Pitch contour", "Frequency sweep"],
        "rubric": [
            {
                "name": f"Cue Identification: {name}",
                "scoring_point": f"Award 1 point if the test-taker {point}.",
                "note": "Synthetic rubric item for offline tests.",
                "choices": [0, 1],
            }
            for name, point in (
                ("Tonal Sound", "identifies that the clip is a single tone"),
                ("Pitch Change", "notices that the pitch changes over time"),
                ("Direction", f"states that the pitch goes {'up' if up else 'down'}"),
                ("Continuity", "describes the change as continuous (a sweep)"),
                ("Conclusion", f"concludes that the answer is {direction}"),
            )
        ],
    }
    return rec, rel


def _mmsu_item(
    i: int, rng: np.random.Generator, direction: str, seconds: float
) -> tuple[dict, str]:
    item_id = f"pitch_direction_{i:04d}_{int(rng.integers(0, 10**6)):06d}"
    rel = f"audio/{item_id}.wav"
    rec = {
        "id": item_id,
        "task_name": "pitch_direction",
        "audio": rel,
        "question": _QUESTIONS[i % len(_QUESTIONS)],
        "choice_a": "rising",
        "choice_b": "falling",
        "choice_c": "steady",
        "choice_d": "silent",
        "answer_gt": direction,
        "category": ("Perception", "Reasoning")[i % 2],
        "sub-category": "Paralinguistics",
        "sub-sub-category": "Pitch",
        "linguistics_sub_discipline": "Phonetics",
    }
    return rec, rel


_ITEM_MAKERS = {"mmau": _mmau_item, "mmar": _mmar_item, "mmsu": _mmsu_item}


def make_fake_benchmark(out_dir: str | Path, task: Task, n: int, seed: int = 0) -> Path:
    """Write a small synthetic benchmark laid out like the real one; returns ``out_dir``.

    * ``mmau``: ``mmau-test-mini.json`` (JSON array), audio in ``test-mini-audios/``.
    * ``mmar``: ``MMAR-meta.jsonl`` (one object a line, no trailing newline, as the real
      file), audio in ``audio/``.
    * ``mmsu``: ``mmsu.jsonl`` (the HF parquet columns; ``audio`` is a relative path),
      audio in ``audio/``.

    Item ``i`` is a rising sweep for even ``i`` and falling for odd ``i``; the answer is the
    matching choice text. Everything (ids, lengths, frequencies) is deterministic in ``seed``.
    """
    if task not in _ITEM_MAKERS:
        raise ValueError(f"task must be one of {sorted(_ITEM_MAKERS)}, got {task!r}")
    if n < 0:
        raise ValueError("n must be >= 0")
    out = Path(out_dir)
    meta_name, audio_dir = BENCH_LAYOUT[task]
    (out / audio_dir).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, list(_ITEM_MAKERS).index(task)])
    records = []
    for i in range(n):
        direction = "rising" if i % 2 == 0 else "falling"
        seconds = round(float(rng.uniform(1.0, 4.0)), 3)
        rec, rel = _ITEM_MAKERS[task](i, rng, direction, seconds)
        write_wav(out / rel, _random_sweep(rng, direction, seconds), DEFAULT_SR)
        records.append(rec)
    meta = out / meta_name
    if task == "mmau":
        meta.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    else:
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        meta.write_text("\n".join(lines), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dt_eval.testing.synth_audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    fb = sub.add_parser("fake-bench", help="write a fake MMAU/MMAR/MMSU directory")
    fb.add_argument("out", type=Path)
    fb.add_argument("--task", choices=sorted(_ITEM_MAKERS), required=True)
    fb.add_argument("--n", type=int, default=8)
    fb.add_argument("--seed", type=int, default=0)
    sw = sub.add_parser("sweep", help="write one pitch sweep WAV")
    sw.add_argument("out", type=Path)
    sw.add_argument("--direction", choices=["rising", "falling"], default="rising")
    sw.add_argument("--seconds", type=float, default=2.0)
    sw.add_argument("--f0", type=float, default=None)
    sw.add_argument("--f1", type=float, default=None)
    sw.add_argument("--amplitude", type=float, default=0.3)
    sw.add_argument("--sr", type=int, default=DEFAULT_SR)
    args = p.parse_args(argv)
    if args.cmd == "fake-bench":
        print(make_fake_benchmark(args.out, args.task, args.n, args.seed))
    else:
        audio = sweep(args.direction, args.seconds, args.sr, args.f0, args.f1, args.amplitude)
        print(write_wav(args.out, audio, args.sr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
