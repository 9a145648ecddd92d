"""Audio MCQ training data: a generic JSONL format (AVQA-style), prompts, and a synthetic task.

One JSON object per line:

    {"id": "avqa-0001", "audio": "clips/0001.wav", "question": "What is making the sound?",
     "choices": ["a dog", "a cat", "a car", "rain"], "answer": "a dog",
     "reference": "The clip has short, sharp barks ... so the source is a dog."}

- ``audio``: a file path, relative to the JSONL's folder (or ``data.audio_root``). Aliases:
  ``audio_path``, ``audio_id``, ``wav``, ``path``.
- ``choices`` (alias ``options``): the option texts, in order. Option strings that carry their
  own label ("A. a dog", "(A) a dog") are accepted and stripped.
- ``answer`` (aliases ``gt``, ``label``): the correct option's text, or its letter ("A", "(B)"),
  or its 0-based index.
- ``reference`` (aliases ``reference_chain``, ``thinking``, ``cot``): the reference chain r*
  (optional; needed by the similarity reward). A ``dt-eval refs build`` file given as
  ``data.references`` fills in chains by id.
Everything else is kept in ``meta``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dt_eval.tasks.prompts import PromptError
from dt_eval.tasks.prompts import render_options as render_task_options

from .config import PromptConfig

if TYPE_CHECKING:
    from dt_eval.tasks.config import TaskConfig

_AUDIO_KEYS = ("audio", "audio_path", "audio_id", "wav", "path")
_CHOICE_KEYS = ("choices", "options")
_ANSWER_KEYS = ("answer", "gt", "label")
_REF_KEYS = ("reference", "reference_chain", "thinking", "cot")
_LABELLED = re.compile(r"^\s*[\(\[]?([A-J])[\)\].:]\s+(.+?)\s*$")


class DataError(ValueError):
    pass


@dataclass
class McqItem:
    id: str
    audio: str  # absolute path
    question: str
    choices: list[str]
    answer: str  # option text
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "audio": self.audio, "question": self.question, "choices": self.choices,
                "answer": self.answer, "reference": self.reference, "meta": self.meta}


def _first(rec: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if rec.get(k) not in (None, ""):
            return rec[k]
    return None


def _clean_choices(raw: Any) -> list[str]:
    if isinstance(raw, dict):  # {"A": "...", "B": "..."}
        raw = [raw[k] for k in sorted(raw)]
    if not isinstance(raw, list) or not raw:
        raise DataError("needs a non-empty list of choices")
    out = []
    for c in raw:
        s = str(c).strip()
        m = _LABELLED.match(s)
        out.append(m.group(2) if m and all(_LABELLED.match(str(x).strip()) for x in raw) else s)
    return out


def _answer_text(ans: Any, choices: list[str], labels: str = "ABCDEFGHIJ") -> str:
    if isinstance(ans, int) and not isinstance(ans, bool):
        if not 0 <= ans < len(choices):
            raise DataError(f"answer index {ans} out of range")
        return choices[ans]
    s = str(ans).strip()
    if s in choices:
        return s
    m = re.fullmatch(r"[\(\[]?([A-J])[\)\].]?", s)
    if m and labels.index(m.group(1)) < len(choices):
        return choices[labels.index(m.group(1))]
    m = _LABELLED.match(s)
    if m and m.group(2) in choices:
        return m.group(2)
    low = [c.lower() for c in choices]
    if s.lower() in low:
        return choices[low.index(s.lower())]
    raise DataError(f"answer {s!r} is not one of the choices {choices}")


def parse_item(rec: dict[str, Any], base: Path, index: int = 0) -> McqItem:
    audio = _first(rec, _AUDIO_KEYS)
    if not audio:
        raise DataError("no audio path")
    p = Path(str(audio)).expanduser()
    if not p.is_absolute():
        p = (base / p).resolve()
    choices = _clean_choices(_first(rec, _CHOICE_KEYS))
    ans = _first(rec, _ANSWER_KEYS)
    if ans is None:
        raise DataError("no answer")
    question = str(rec.get("question") or rec.get("problem") or "").strip()
    if not question:
        raise DataError("no question")
    known = set(_AUDIO_KEYS + _CHOICE_KEYS + _ANSWER_KEYS + _REF_KEYS + ("id", "question", "problem"))
    ref = _first(rec, _REF_KEYS)
    return McqItem(id=str(rec.get("id", index)), audio=str(p), question=question, choices=choices,
                   answer=_answer_text(ans, choices), reference=str(ref) if ref else None,
                   meta={k: v for k, v in rec.items() if k not in known})


def load_items(path: str | Path, audio_root: str | Path | None = None, references: str | Path | None = None,
               limit: int | None = None, check_audio: bool = True) -> list[McqItem]:
    """Read and validate the JSONL; errors name the line. Duplicate ids are errors."""
    path = Path(path)
    base = Path(audio_root) if audio_root else path.resolve().parent
    items: list[McqItem] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                item = parse_item(rec, base, len(items))
            except (ValueError, DataError) as e:
                raise DataError(f"{path}:{n}: {e}") from None
            if item.id in seen:
                raise DataError(f"{path}:{n}: duplicate id {item.id!r}")
            if check_audio and not Path(item.audio).exists():
                raise DataError(f"{path}:{n}: audio file not found: {item.audio}")
            seen.add(item.id)
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise DataError(f"{path}: no items")
    if references:
        from dt_eval.reasoning.refs import load_references

        refs = load_references(references)
        for it in items:
            if it.id in refs and not it.reference:
                it.reference = refs[it.id]
    return items


@lru_cache(maxsize=None)
def _prompt_task(task: str, template: str | None, option_format: str | None, labels: str,
                 instruction: str) -> TaskConfig:
    from dt_eval.tasks.config import UnknownTaskError, load_task

    try:
        cfg = load_task(task)
    except UnknownTaskError as e:
        raise ValueError(f"prompt task: {e}") from None
    given = {"template": template, "option_format": option_format, "labels": labels, "instruction": instruction}
    return cfg.model_copy(update={"prompt": cfg.prompt.model_copy(update={k: v for k, v in given.items() if v is not None})})


def prompt_task(cfg: PromptConfig) -> TaskConfig:
    """The dt-eval task config that renders the training prompt: `cfg.task`'s (default mmar), with
    the recipe's labels and instruction (and template / option format where the recipe sets them)."""
    return _prompt_task(cfg.task or "mmar", cfg.template, cfg.option_format, cfg.labels, cfg.instruction)


def render_options(choices: list[str], cfg: PromptConfig) -> str:
    """The options as the training prompt shows them (the prompt task's option format, the recipe's labels)."""
    try:
        return render_task_options(prompt_task(cfg), choices)
    except PromptError:
        raise DataError(f"{len(choices)} options but only {len(cfg.labels)} labels") from None


def user_text(item: McqItem, cfg: PromptConfig) -> str:
    """The user turn's text, rendered by dt-eval's task code (dt_eval.tasks.prompts.task_text)."""
    from dt_eval.tasks.prompts import task_text
    from dt_eval.types import Item

    dt_item = Item(id=item.id, question=item.question, choices=list(item.choices), answer=item.answer, audio=None,
                   raw=dict(item.meta))
    try:
        return task_text(prompt_task(cfg), dt_item).strip()
    except PromptError as e:
        raise DataError(f"{item.id}: {e}") from None


def build_messages(item: McqItem, cfg: PromptConfig) -> list[dict[str, Any]]:
    """Chat messages with one audio part (the processor's chat template places the audio tokens):
    dt-eval's message layout (dt_eval.tasks.prompts.compose_messages), the audio part carrying the
    clip's path, in front of the text unless `audio_first` is off."""
    from dt_eval.tasks.prompts import PromptSettings, compose_messages

    # native_thinking: the instruction is already in the text; compose adds no second one
    settings = PromptSettings(thinking="on", system_prompt=cfg.system, native_thinking=True)
    msgs, _ = compose_messages(user_text(item, cfg), settings, task_system=prompt_task(cfg).prompt.system)
    user = msgs[-1]
    audio = [dict(p, audio_url=item.audio) for p in user["content"] if p["type"] == "audio"]
    text = [p for p in user["content"] if p["type"] != "audio"]
    user["content"] = audio + text if cfg.audio_first else text + audio
    return msgs


# -- synthetic task: rising vs falling pitch --------------------------------------------------------

SYNTH_QUESTIONS = (
    "Does the pitch of the tone go up or down?",
    "Listen to the tone. Is its pitch rising or falling?",
    "Which best describes how the pitch changes over the clip?",
    "What is the direction of the frequency sweep in this recording?",
)
SYNTH_REFERENCES = {
    "rising": "The tone starts low and its pitch goes up steadily until the end of the clip, so the sweep is rising.",
    "falling": "The tone starts high and its pitch goes down steadily until the end of the clip, so the sweep is falling.",
}


def make_synthetic_task(out_dir: str | Path, n: int, seed: int = 0, name: str = "train",
                        seconds: tuple[float, float] = (1.0, 2.5), silence: bool = False,
                        low_hz: tuple[float, float] = (200.0, 600.0), ratio: tuple[float, float] = (2.0, 5.0)) -> Path:
    """Write ``n`` rising/falling sweep MCQs (balanced, with reference chains) as NAME.jsonl + wavs.

    The answer depends only on the audio (questions and options never give it away). With
    ``silence`` every clip is replaced by silence of the same length (the audio-ablation control).
    Each sweep spans [lo, lo * r] Hz, lo drawn from ``low_hz`` and r from ``ratio`` (capped at 3.5 kHz).
    """
    import numpy as np
    import soundfile as sf

    from dt_eval.testing.synth_audio import sweep

    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        direction = ("rising", "falling")[i % 2]
        lo = float(rng.uniform(*low_hz))
        hi = float(min(lo * rng.uniform(*ratio), 3500.0))
        f0, f1 = (lo, hi) if direction == "rising" else (hi, lo)
        secs = float(rng.uniform(*seconds))
        audio = sweep(direction, secs, 16000, f0, f1, float(rng.uniform(0.1, 0.6)))
        if silence:
            audio = np.zeros_like(audio)
        rel = f"audio/{name}-{i:05d}.wav"
        sf.write(out / rel, audio, 16000, subtype="PCM_16")
        question = SYNTH_QUESTIONS[int(rng.integers(0, len(SYNTH_QUESTIONS)))]  # independent of the answer
        lines.append({"id": f"{name}-{i:05d}", "audio": rel, "question": question,
                      "choices": ["rising", "falling"], "answer": direction,
                      "reference": SYNTH_REFERENCES[direction], "direction": direction})
    order = rng.permutation(n)
    path = out / f"{name}.jsonl"
    path.write_text("".join(json.dumps(lines[i]) + "\n" for i in order), encoding="utf-8")
    return path
