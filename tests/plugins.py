"""Small plugins for dt-eval's extension points, written the way a third-party package would.

This file imports nothing from the tests: test_plugins.py copies it into a temporary folder as the
module of a separate distribution (with a `*.dist-info/entry_points.txt`), so a subprocess finds
its backend and scorer through entry points alone.

- `create_echo_backend`: a backend that answers every request with a fixed reply (default
  "(A) rising"), after a short <think> block, in process;
- `LetterExactScorer`: an official scorer: correct when the extracted option letter is the
  answer's letter (the submission's prediction field holds the letter alone);
- `ReasoningLengthScorer`: a reasoning scorer: the chain's length in words / 50, capped at 1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from dt_eval.backends.base import Generation, GenerationRequest
from dt_eval.reasoning.types import CotInput, CotScore
from dt_eval.scoring.scorers import McqOfficialScorer


class EchoBackend:
    name = "echo"

    def __init__(self, settings: Any):
        self.model = settings.model
        self.reply = settings.options.get("reply", "(A) rising")
        self.seen = 0

    async def generate(self, requests: Sequence[GenerationRequest]) -> AsyncIterator[Generation]:
        for r in requests:
            self.seen += 1
            yield Generation(key=r.key, text=f"<think>I hear {len(r.audio)} clip(s).</think>{self.reply}",
                             finish_reason="stop", backend_info={"plugin": "echo", "request": self.seen,
                                                                 "seconds": sum(a.seconds for a in r.audio)})

    async def aclose(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        # no "name": the runner records the registered name for a backend that leaves it out
        return {"model": self.model, "reply": self.reply}


def create_echo_backend(settings: Any) -> EchoBackend:
    return EchoBackend(settings)


class LetterExactScorer(McqOfficialScorer):
    name = "letter_exact"

    def prediction(self, cfg, ext) -> str:
        idx = ext.matched_choice
        return cfg.prompt.labels[idx] if idx is not None and not ext.ambiguous else ""

    def match(self, cfg, answer: str, prediction: str, choices: Sequence[str]) -> bool:
        if answer not in choices:
            return False
        return prediction.strip() == cfg.prompt.labels[list(choices).index(answer)]


class ReasoningLengthScorer:
    name = "length"
    summary = "chain length in words / 50"
    needs: frozenset[str] = frozenset()

    def version(self) -> str:
        return "test-length-v1"

    async def score_batch(self, items: Sequence[CotInput], ctx: Any) -> list[CotScore]:
        out = []
        for it in items:
            if not it.reasoning:
                out.append(CotScore(id=it.id, scorer=self.name, version=self.version(), value=None,
                                    error="no reasoning"))
                continue
            words = len(it.reasoning.split())
            out.append(CotScore(id=it.id, scorer=self.name, version=self.version(), value=min(1.0, words / 50),
                                components={"words": words}))
        return out

    def summarize(self, lines: list[dict[str, Any]], scored: list[dict[str, Any]],
                  not_applicable: list[dict[str, Any]]) -> dict[str, Any]:
        return {"words": sum((r.get("components") or {}).get("words", 0) for r in scored)}
