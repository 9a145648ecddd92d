"""Value types passed between pipeline stages (plain dataclasses: this module is on the start-up
path of `dt-eval score`, so it imports nothing heavy).

Data flows one way: TaskConfig -> Item -> GenerationRequest -> Generation -> Extraction ->
SampleRecord (dt_eval/records.py, the persisted, versioned form).
Each stage only consumes the record of the stage before it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


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


@dataclass
class SamplingConfig:
    """Generation settings. `max_tokens` is sized for thinking models (thousands, not 128)."""

    max_tokens: int = 4096
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    # Extra fields passed through to the server / engine as they are (e.g. min_p).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AudioInput:
    """Decoded mono float32 audio at the model's sampling rate."""

    array: np.ndarray
    sampling_rate: int

    @property
    def seconds(self) -> float:
        return len(self.array) / self.sampling_rate


@dataclass
class GenerationRequest:
    key: str  # unique per (task, item, repeat): the run directory's resume key
    messages: list[dict[str, Any]]  # chat messages; audio parts are {"type": "audio"} placeholders
    audio: list[AudioInput]  # one entry per audio placeholder, in order
    sampling: SamplingConfig
    # Chat-template switches such as {"enable_thinking": True} (Qwen3 family).
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # Per-token log-probabilities wanted, with this many top alternatives (None: none wanted).
    logprobs: int | None = None


@dataclass
class TokenLogprobs:
    """Per-token log-probabilities of one generation (`GenerationRequest.logprobs`), one entry per
    completion token; the record keeps them compactly (dt_eval/pipeline/logprobs.py)."""

    tokens: list[str]  # each completion token as text
    logprob: list[float]  # of the chosen token (nats)
    entropy: list[float]  # of the position's next-token distribution (nats): exact, or from the top-K
    k: int | None  # None: entropies exact over the whole vocabulary; K: estimated from K listed tokens
    # the top alternatives per position as (token, logprob), for servers that return them
    top: list[list[tuple[str, float]]] | None = None


@dataclass
class Generation:
    key: str
    text: str = ""  # the answer content (without reasoning when the server split it)
    reasoning: str | None = None  # reasoning returned separately (vLLM reasoning parsers)
    finish_reason: str | None = None  # "stop", "length" (cut off), ...
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None  # set when the request failed after retries
    backend_info: dict[str, Any] = field(default_factory=dict)  # e.g. which server answered
    logprobs: TokenLogprobs | None = None  # when the request asked for them and the backend gave them

    @property
    def ok(self) -> bool:
        return self.error is None
