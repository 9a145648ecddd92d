"""Typed records of the reasoning scorers: one input record, one score record.

Pure data: no I/O, no dependency on the run machinery, so an RL reward function can build
`CotInput`s from a rollout and read `CotScore.value` as a reward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dt_eval.tasks.prompts import format_options


@dataclass
class CotInput:
    """One generated chain to score, with what the scorers compare it against.

    `id` identifies the item (the judge cache keys on it together with a hash of the prompt, so
    two repeats with the same chain share cached verdicts). `correct` is R_acc, decided upstream
    (dt-eval: the official match on the extracted answer); None means unknown, and scorers
    gated by correctness then report the item unscored rather than guess.
    """

    id: str
    question: str
    choices: list[str] = field(default_factory=list)
    answer: str | None = None  # the correct answer (option text)
    reasoning: str | None = None  # the generated chain (without the final answer)
    prediction: str | None = None  # the model's final answer (extracted)
    correct: bool | None = None  # R_acc
    reference: str | None = None  # reference chain r* (MMAR `thinking`, or a teacher's)
    rubric: list[dict[str, Any]] | None = None  # MMAR-Rubrics criteria (name, scoring_point, choices)
    output: str | None = None  # the raw model output (content), for the format check
    server_reasoning: str | None = None  # reasoning returned separately by the server, if any
    meta: dict[str, Any] = field(default_factory=dict)  # free-form (task, repeat, key ...)


@dataclass
class CotScore:
    """One scorer's verdict on one CotInput.

    `value` is in [0, 1], or None when the item could not be scored (judge failure,
    unparseable replies, missing reference): unscored items are excluded from means and
    counted, never turned into a silent 0 or 0.5. `raw` holds every judge reply received, in
    order (the accepted one last). `judge_calls` counts HTTP requests actually sent (0 when
    everything came from the cache).
    """

    id: str
    scorer: str
    version: str
    value: float | None
    components: dict[str, Any] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)
    error: str | None = None
    judge_calls: int = 0
    cached: bool = False

    @property
    def scored(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scored"] = self.scored
        return d


def render_options(choices: list[str], labels: str = "ABCDEFGHIJ") -> str:
    """Options as "(A) text" lines (the same shape dt-eval's prompts use)."""
    if not choices:
        return "(none)"
    return format_options(choices, [labels[i] if i < len(labels) else str(i + 1) for i in range(len(choices))])
