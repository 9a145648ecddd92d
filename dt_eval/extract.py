"""Split a model output into reasoning and a final answer, and map the answer to an option.

Rules (never guess: an answer we cannot read is `unparsed` and scores wrong):
- Reasoning is the server's separate reasoning field when given; otherwise the content of
  <think>...</think> or <reasoning>...</reasoning>. A closing tag without an opening one means
  everything before it is reasoning (chat templates often put the opening tag in the prompt).
  An opening tag that is never closed means generation was cut off: no answer, `truncated`.
- The answer is the text after the reasoning; the last <answer>...</answer> block wins; else the
  text after the last "answer is" / "Answer:" style marker; else the whole remaining text.
- Wrappers, markdown emphasis, quotes and trailing punctuation are stripped. A bare option label
  (`B`, `(B)`, `B.`, `Option B`) maps to that option's text; `(B) Man` keeps the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from .records import Extraction

_REASONING_TAGS = ("think", "reasoning")
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_ANSWER_OPEN = re.compile(r"<answer>(.*)$", re.S | re.I)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# Markers that introduce a final answer; we take the text after the LAST one.
_MARKER = re.compile(
    r"(?:(?:final\s+answer|correct\s+answer|the\s+answer|my\s+answer|answer)\s*(?:is|:|：|=)"
    r"|答案(?:是|为|：|:))\s*(?:option\s+)?",
    re.I,
)
_ANY_LETTER = re.compile(r"^[\(\[]?([A-Z])[\)\]]?[.:)]?$")
_LEAD_WRAPPERS = re.compile(
    r"^(?:final\s+answer|correct\s+answer|answer|the\s+answer\s+is|so\s+the\s+answer\s+is|"
    r"therefore,?\s+the\s+answer\s+is|the\s+correct\s+(?:answer|option)\s+is|option|choice)\s*[:：-]?\s*",
    re.I,
)
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_QUOTES = "\"'“”‘’「」『』«»"
_TRAILING = " \t\r\n.,;:!?。，；：！？"


def split_reasoning(text: str, reasoning: str | None = None) -> tuple[str | None, str, bool]:
    """Return (reasoning, remaining answer region, truncated)."""
    if reasoning:  # the server already split it (vLLM reasoning parsers)
        return reasoning.strip(), _strip_stray_tags(text), False
    lower = text.lower()
    for tag in _REASONING_TAGS:
        open_t, close_t = f"<{tag}>", f"</{tag}>"
        close_at = lower.rfind(close_t)
        if close_at >= 0:
            open_at = lower.find(open_t)
            start = open_at + len(open_t) if 0 <= open_at < close_at else 0
            return text[start:close_at].strip(), text[close_at + len(close_t):], False
        open_at = lower.find(open_t)
        if open_at >= 0:  # opened, never closed: cut off mid-thought
            return text[open_at + len(open_t):].strip(), "", True
    return None, text, False


def _strip_stray_tags(text: str) -> str:
    # Some servers leave an empty "<think></think>" or a lone closing tag in the content.
    for tag in _REASONING_TAGS:
        text = re.sub(rf"</?{tag}>", "", text, flags=re.I)
    return text


def answer_region(text: str) -> str:
    """Narrow the post-reasoning text to the part that states the answer."""
    blocks = _ANSWER_BLOCK.findall(text)
    if blocks:
        return blocks[-1]
    opened = _ANSWER_OPEN.search(text)  # <answer> left open at the end of generation
    if opened:
        return opened.group(1)
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1]
    markers = list(_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end():]
        # the answer ends at the end of its line
        line = tail.strip().split("\n", 1)[0]
        if line.strip():
            return line
    return text


def clean_answer(text: str) -> str:
    s = unicodedata.normalize("NFC", text).strip()
    s = _EMPHASIS.sub("", s).strip()
    for _ in range(3):  # wrappers can nest: 'Answer: **"B"**.'
        s = _LEAD_WRAPPERS.sub("", s).strip()
        s = s.strip(_QUOTES).strip()
        s = s.rstrip(_TRAILING).strip()
        s = s.strip(_QUOTES).strip()
    return s


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).casefold().split()).strip(_TRAILING + _QUOTES)


@lru_cache(maxsize=64)
def _label_patterns(labels: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    cls = "[" + re.escape(labels) + "]"
    bare = re.compile(rf"^(?:option\s+|choice\s+)?[\(\[]?({cls})[\)\]]?[.:)]?$", re.I)
    # 'A, because ...' / 'B since ...': a label, then a justification.
    justified = re.compile(rf"^[\(\[]?({cls})[\)\]]?(?:\s*[,;]|\s+(?:because|since|as)\b)", re.I)
    with_text = re.compile(rf"^(?:option\s+|choice\s+)?[\(\[]?({cls})(?:[\)\]][.:]?|[.:])\s*(.+)$", re.I | re.S)
    return bare, with_text, justified


def match_choice(answer: str, choices: Sequence[str], labels: str = "ABCDEFGHIJ") -> tuple[str | None, int | None]:
    """Map a cleaned answer to (answer text, option index). (None, None) when unreadable."""
    if not answer:
        return None, None
    labels = labels[: len(choices)] if choices else ""
    normed = [_norm(c) for c in choices]
    key = _norm(answer)
    if key in normed:  # the option's own text (case/space/punctuation-insensitive)
        i = normed.index(key)
        return choices[i], i
    if labels:
        bare, with_text, justified = _label_patterns(labels)
        # Labels are upper-case letters; a lone lower-case 'a' is an article, not option A.
        m = bare.match(answer)
        if m and (m.group(1).isupper() or answer.lower().startswith(("option", "choice"))):
            i = labels.index(m.group(1).upper())
            return choices[i], i
        m = with_text.match(answer)
        if m and m.group(1).isupper():
            text = clean_answer(m.group(2))
            t = _norm(text)
            if t in normed:
                i = normed.index(t)
                return choices[i], i
            # '(B) something else': keep the model's text; the official match decides.
            return text, None
        m = justified.match(answer)
        if m and m.group(1).isupper():
            i = labels.index(m.group(1))
            return choices[i], i
    if _ANY_LETTER.match(answer):  # a label that names no option ('E' of four): unreadable
        return None, None
    return answer, None  # free text: not an option, but an answer; the official match decides


def extract(
    text: str | None,
    choices: Sequence[str] = (),
    reasoning: str | None = None,
    labels: str = "ABCDEFGHIJ",
) -> Extraction:
    """Turn a full model output (plus an optional server-split reasoning field) into an answer."""
    reasoning_text, region, truncated = split_reasoning(text or "", reasoning)
    if truncated:
        return Extraction(reasoning=reasoning_text, answer_text=None, truncated=True, unparsed=True)
    answer = clean_answer(answer_region(region))
    answer_text, idx = match_choice(answer, choices, labels)
    return Extraction(
        reasoning=reasoning_text,
        answer_text=answer_text,
        matched_choice=idx,
        truncated=False,
        unparsed=answer_text is None,
    )
