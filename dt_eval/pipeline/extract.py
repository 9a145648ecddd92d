"""Split a model output into reasoning and a final answer, and map the answer to an option.

Rules (never guess: an answer we cannot read is `unparsed` and scores wrong):
- Reasoning is the server's separate reasoning field when given; otherwise the content of
  <think>...</think> or <reasoning>...</reasoning>. A closing tag without an opening one means
  everything before it is reasoning (chat templates often put the opening tag in the prompt).
  An opening tag that is never closed means generation was cut off: no answer, `truncated`.
- The answer is the text after the reasoning; the last <answer>...</answer> block wins; else the
  text after the last "answer is" / "Answer:" style marker; else the whole remaining text.
- Wrappers, markdown emphasis, quotes and trailing punctuation are stripped. An option label
  (`B`, `(B)`, `B.`, `Option B`) maps to that option's text; `(B) Man` keeps the text.
- Where a bare letter is both a label and an option's text naming a different option (MMAU chord
  items: `C` of [`C`, `Gm`, `Cm7b5`, `Eb/G`] is the chord C and label C = `Cm7b5`), the answer is
  `ambiguous`: no answer, scored wrong. A marked label (`Option C`, `(C)`, `C.`) is a label.

Every step is linear in the output's length (model outputs can be long and adversarial: thousands of
unclosed tags, long whitespace runs), so scoring never stalls a run.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from dt_eval.types import Extraction

_REASONING_TAGS = ("think", "reasoning")
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# Markers that introduce a final answer; we take the text after the LAST one.
_MARKER = re.compile(
    r"(?:(?:final\s+answer|correct\s+answer|the\s+answer|my\s+answer|answer)\s*(?:is|:|：|=)"
    r"|答案(?:是|为|：|:))\s*",
    re.I,
)
_ANY_LETTER = re.compile(r"^[\(\[]?([A-Z])[\)\]]?[.:)]?$")
_ANSWER_WORDS = (
    r"final\s+answer|correct\s+answer|answer|the\s+answer\s+is|so\s+the\s+answer\s+is|"
    r"therefore,?\s+the\s+answer\s+is|the\s+correct\s+(?:answer|option)\s+is"
)
_LEAD_WRAPPERS = re.compile(rf"^(?:{_ANSWER_WORDS}|option|choice)\s*[:：-]?\s*", re.I)
# The same, keeping 'Option'/'Choice': what is left shows whether a letter was marked as a label.
_ANSWER_WRAPPERS = re.compile(rf"^(?:{_ANSWER_WORDS})\s*[:：-]?\s*", re.I)
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_QUOTES = "\"'“”‘’「」『』«»"
_TRAILING = " \t\r\n.,;:!?。，；：！？"


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only: the same length as `text`, so indices found in it apply to
    `text` (str.lower() lengthens some characters, e.g. 'İ', and would shift them)."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def split_reasoning(text: str, reasoning: str | None = None) -> tuple[str | None, str, bool]:
    """Return (reasoning, remaining answer region, truncated)."""
    if reasoning:  # the server already split it (vLLM reasoning parsers)
        return reasoning.strip(), _strip_stray_tags(text), False
    lower = _ascii_lower(text)
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


def _last_answer_block(text: str, lower: str) -> str | None:
    """The last complete <answer>...</answer> block (blocks pair each opening tag with the next
    closing tag, left to right). A scan with str.find, not a lazy regex: the regex retries every
    unclosed opening tag to the end of the text, quadratic on outputs full of them."""
    last, pos = None, 0
    while (start := lower.find(_ANSWER_OPEN, pos)) >= 0:
        end = lower.find(_ANSWER_CLOSE, start + len(_ANSWER_OPEN))
        if end < 0:  # no closing tag after this one, so none after any later one either
            break
        last, pos = text[start + len(_ANSWER_OPEN):end], end + len(_ANSWER_CLOSE)
    return last


def answer_region(text: str) -> str:
    """Narrow the post-reasoning text to the part that states the answer."""
    return _answer_part(text)[0]


def _answer_part(text: str) -> tuple[str, bool]:
    """(the part that states the answer, whether it ends an 'The answer is ...' sentence)."""
    lower = _ascii_lower(text)
    block = _last_answer_block(text, lower)
    if block is not None:
        return block, False
    opened = lower.find(_ANSWER_OPEN)  # <answer> left open at the end of generation
    if opened >= 0:
        return text[opened + len(_ANSWER_OPEN):], False
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1], False
    markers = list(_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end():]
        # the answer ends at the end of its line
        line = tail.strip().split("\n", 1)[0]
        if line.strip():
            return line, True
    return text, False


def clean_answer(text: str) -> str:
    s = unicodedata.normalize("NFC", text).strip()
    s = _EMPHASIS.sub("", s).strip()
    for _ in range(3):  # wrappers can nest: 'Answer: **"B"**.'
        s = _LEAD_WRAPPERS.sub("", s).strip()
        s = s.strip(_QUOTES).strip()
        s = s.rstrip(_TRAILING).strip()
        s = s.strip(_QUOTES).strip()
    return s


def _as_written(text: str, sentence: bool) -> str:
    """The answer with quotes and 'Answer:' wrappers gone but label marks kept ('Option C',
    '(C)', 'C.'): whether a letter was written as a label is read from this. Emphasis becomes a
    space, so that in '**C**.' the period is not attached to the letter. A period that ends an
    'The answer is C.' sentence is punctuation, not a label mark."""
    s = _EMPHASIS.sub(" ", unicodedata.normalize("NFC", text)).strip()
    for _ in range(3):
        s = _ANSWER_WRAPPERS.sub("", s).strip()
        s = s.strip(_QUOTES).strip()
    return s[:-1] if sentence and s.endswith((".", "。")) else s


def _norm(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).casefold().split()).strip(_TRAILING + _QUOTES)


class _LabelPatterns(NamedTuple):
    bare: re.Pattern[str]  # 'B', '(B)', 'Option B' (a cleaned answer)
    with_text: re.Pattern[str]  # '(B) Woman', 'B. Woman'
    justified: re.Pattern[str]  # 'B, because ...'
    marked: re.Pattern[str]  # a letter written as a label: 'Option B', '(B)', 'B.', 'B)'


@lru_cache(maxsize=64)
def _label_patterns(labels: str) -> _LabelPatterns:
    cls = "[" + re.escape(labels) + "]"
    return _LabelPatterns(
        bare=re.compile(rf"^(?:option\s+|choice\s+)?[\(\[]?({cls})[\)\]]?[.:)]?$", re.I),
        with_text=re.compile(rf"^(?:option\s+|choice\s+)?[\(\[]?({cls})(?:[\)\]][.:]?|[.:])\s*(.+)$", re.I | re.S),
        justified=re.compile(rf"^[\(\[]?({cls})[\)\]]?(?:\s*[,;]|\s+(?:because|since|as)\b)", re.I),
        # Upper-case letters only, as everywhere: a lone lower-case 'a' is an article.
        marked=re.compile(
            rf"^(?:(?i:option|choice)\s*[:：-]?\s*[\(\[]?{cls}[\)\]]?|[\(\[]{cls}[\)\]]|{cls}[.:)])\W*$"
        ),
    )


def match_choice(
    answer: str,
    choices: Sequence[str],
    labels: str = "ABCDEFGHIJ",
    written: str | None = None,
    letters_only: bool = False,
) -> tuple[str | None, int | None, bool]:
    """Map a cleaned answer to (answer text, option index, ambiguous); (None, None, False) when
    unreadable. `written`: the answer before label marks were stripped (see _as_written).
    letters_only: the prompt asks for a letter alone, so a bare letter is always a label."""
    if not answer:
        return None, None, False
    labels = labels[: len(choices)] if choices else ""
    normed = [_norm(c) for c in choices]
    key = _norm(answer)
    by_text = normed.index(key) if key in normed else None  # case/space/punctuation-insensitive

    def label_or_ambiguous(letter: str, marked: bool) -> tuple[str | None, int | None, bool]:
        """A letter that may also be an option's own text (chord 'C' vs label C)."""
        i = labels.index(letter)
        as_text = normed.index(_norm(letter)) if _norm(letter) in normed else None
        if marked or letters_only or as_text is None or normed[as_text] == normed[i]:
            return choices[i], i, False
        return None, None, True

    if labels:
        pats = _label_patterns(labels)
        # Labels are upper-case letters; a lone lower-case 'a' is an article, not option A.
        m = pats.bare.match(answer)
        if m and (m.group(1).isupper() or answer.lower().startswith(("option", "choice"))):
            marked = answer != m.group(1) or bool(pats.marked.match(answer if written is None else written))
            return label_or_ambiguous(m.group(1).upper(), marked)
    if by_text is not None:  # the option's own text
        return choices[by_text], by_text, False
    if labels:
        m = pats.with_text.match(answer)
        if m and m.group(1).isupper():
            text = clean_answer(m.group(2))
            t = _norm(text)
            if t in normed:
                i = normed.index(t)
                return choices[i], i, False
            # '(B) something else': keep the model's text; the official match decides.
            return text, None, False
        m = pats.justified.match(answer)
        if m and m.group(1).isupper():
            return label_or_ambiguous(m.group(1), any(ch in m.group(0) for ch in "()[]"))
    if _ANY_LETTER.match(answer):  # a label that names no option ('E' of four): unreadable
        return None, None, False
    return answer, None, False  # free text: not an option, but an answer; the official match decides


def extract(
    text: str | None,
    choices: Sequence[str] = (),
    reasoning: str | None = None,
    labels: str = "ABCDEFGHIJ",
    letters_only: bool = False,
) -> Extraction:
    """Turn a full model output (plus an optional server-split reasoning field) into an answer.
    letters_only: the prompt asks for a letter alone (MMSU), so a bare letter is a label."""
    reasoning_text, region, truncated = split_reasoning(text or "", reasoning)
    if truncated:
        return Extraction(reasoning=reasoning_text, answer_text=None, truncated=True, unparsed=True)
    region, sentence = _answer_part(region)
    answer_text, idx, ambiguous = match_choice(
        clean_answer(region), choices, labels, written=_as_written(region, sentence), letters_only=letters_only
    )
    return Extraction(
        reasoning=reasoning_text,
        answer_text=answer_text,
        matched_choice=idx,
        truncated=False,
        unparsed=answer_text is None and not ambiguous,
        ambiguous=ambiguous,
    )
