"""Per-token log-probabilities of a run (`logprobs=K`): what backends hand over
(`dt_eval.types.TokenLogprobs`) -> the compact `logprobs` field of a sample record.

The field (one short list per completion token, floats rounded to 4 decimals):

    "logprobs": {"k": 5,                  # top-K asked of the backend; null = entropy exact
                 "reasoning_tokens": 812, # the first 812 tokens are the reasoning, through </think>
                 "tokens": ["<think>", "\\n", "The", ...],
                 "logprob": [-0.0012, ...],   # of each chosen token (nats)
                 "entropy": [0.0153, ...]}    # of each position's next-token distribution (nats)

dt_eval.analyze.reasoning_tokens reads it. Light module: the record builder and the backends
import it, so it imports nothing heavy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dt_eval.types import TokenLogprobs

DIGITS = 4
_CLOSE_TAGS = ("</think>", "</reasoning>")
_OPEN_TAGS = ("<think>", "<reasoning>")


def topk_entropy(top_logprobs: Sequence[float]) -> float:
    """Entropy estimate (nats) of one position's distribution from K listed log-probabilities: the
    listed tokens plus the unlisted mass as one outcome. Merging outcomes never raises entropy, so
    this is a lower bound on the true entropy (whichever K tokens are listed); the gap is at most
    R ln(V - K), R the unlisted mass and V the vocabulary size."""
    ps = [math.exp(lp) for lp in top_logprobs if lp is not None and lp > -math.inf]
    h = -sum(p * math.log(p) for p in ps if p > 0)
    rest = 1.0 - sum(ps)
    if rest > 1e-12:
        h -= rest * math.log(rest)
    return max(h, 0.0)


def _round(x: float) -> float:
    return round(float(x), DIGITS) + 0.0  # + 0.0: -0.0 is written as 0.0


def logprobs_field(tokens: Sequence[str], logprobs: Sequence[float], entropies: Sequence[float], k: int | None,
                   reasoning_tokens: int | None) -> dict[str, Any]:
    """The compact per-sample `logprobs` record (see the module doc); validates the lengths."""
    if not (len(tokens) == len(logprobs) == len(entropies)):
        raise ValueError(f"tokens, logprob and entropy differ in length: {len(tokens)}, {len(logprobs)}, "
                         f"{len(entropies)}")
    if reasoning_tokens is not None and not 0 <= reasoning_tokens <= len(tokens):
        raise ValueError(f"reasoning_tokens={reasoning_tokens} outside 0..{len(tokens)}")
    return {"k": k, "reasoning_tokens": reasoning_tokens, "tokens": list(tokens),
            "logprob": [_round(x) for x in logprobs], "entropy": [_round(x) for x in entropies]}


def _token_ends(tokens: Sequence[str]) -> tuple[str, list[int]]:
    text, ends = "", []
    for t in tokens:
        text += t
        ends.append(len(text))
    return text.lower(), ends


def reasoning_span(tokens: Sequence[str], reasoning: str | None, text: str | None) -> int | None:
    """How many leading tokens are the reasoning, through its closing tag; None when the tokens do
    not show it. `reasoning`: what a server's reasoning parser split off (it switches at the first
    closing tag); else the harness splits `text` at the last one (pipeline.extract.split_reasoning)."""
    joined, ends = _token_ends(tokens)
    found = [(joined.find(t) if reasoning else joined.rfind(t), t) for t in _CLOSE_TAGS]
    found = [(at, t) for at, t in found if at >= 0]
    if found:
        at, tag = min(found) if reasoning else max(found)
        stop = at + len(tag)
        return next(i + 1 for i, e in enumerate(ends) if e >= stop)
    if reasoning and not (text or "").strip():
        return len(tokens)  # all reasoning: cut off mid-thought (the tag is in the prompt, or never came)
    if any(t in joined for t in _OPEN_TAGS):
        return len(tokens)  # opened, never closed: cut off mid-thought
    return 0 if not reasoning else None


def record_field(lp: TokenLogprobs, reasoning: str | None, text: str | None) -> dict[str, Any]:
    """A generation's log-probabilities as the record's compact `logprobs` field."""
    return logprobs_field(lp.tokens, lp.logprob, lp.entropy, lp.k, reasoning_span(lp.tokens, reasoning, text))
