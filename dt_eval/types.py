"""Typed records passed between pipeline stages.

Data flows one way: TaskConfig -> Item -> Request -> Generation -> Extraction -> SampleRecord.
Each stage only consumes the record of the stage before it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AudioRef:
    """Where an item's audio lives: a file path, encoded bytes (HF parquet) or a decoded array."""

    path: str | None = None
    data: bytes | None = None  # encoded file bytes (wav/flac/...) from a parquet dataset
    array: Any = None  # decoded numpy array, never serialised
    sampling_rate: int | None = None

    def describe(self) -> str:
        # Logs and run records carry a path, never audio bytes.
        if self.path:
            return self.path
        return "<embedded bytes>" if self.data is not None else f"<array sr={self.sampling_rate}>"


@dataclass
class Item:
    """One benchmark question, normalised across benchmarks."""

    id: str
    question: str
    choices: list[str]
    answer: str | None  # None where answers are hidden (MMAU test)
    audio: AudioRef | None
    # Fields the official breakdowns group by (task, difficulty, modality, category, ...).
    groups: dict[str, str] = field(default_factory=dict)
    # The record exactly as the benchmark ships it; exporters write it back untouched.
    raw: dict[str, Any] = field(default_factory=dict)
    # Extra per-item material used by reasoning scorers (reference chain, rubric).
    reference_thinking: str | None = None
    # Why the official scorer cannot score this record (no answer, a null option): the run records
    # it as a data error instead of asking the model, and the tables count it.
    data_error: str | None = None


@dataclass
class Extraction:
    """A model output split into reasoning and a final answer."""

    reasoning: str | None
    answer_text: str | None  # the cleaned final answer string (None = could not extract)
    matched_choice: int | None = None  # index into choices when the answer maps to one option
    truncated: bool = False  # reasoning opened but never closed: the output was cut off
    unparsed: bool = False  # no answer could be extracted: scored wrong, never guessed
    # a bare letter that is both a label and another option's text ('C' among chords): scored wrong
    ambiguous: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
