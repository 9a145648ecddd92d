"""The benchmarks' own per-item rules, written from their documented behaviour.

MMAU and MMAR share one rule: the prediction's word set must contain every word of the answer
and no word that only a wrong option has. MMSU takes a letter from the first or the
second-to-last character of the response and compares that option's text with the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum

_WORD = re.compile(r"\b\w+\b")  # Unicode \w, like the official scripts


def word_set(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def mcq_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """MMAU/MMAR official string match."""
    pred = word_set(prediction)
    if not pred:
        return False
    ans = word_set(answer)
    if not ans <= pred:
        return False
    for choice in choices:
        words = word_set(choice)
        if words != ans and not pred.isdisjoint(words - ans):
            return False
    return True


class MmsuStatus(str, Enum):
    LETTER = "letter"  # a letter was read; correctness decided by option text
    EMPTY = "empty"  # empty or 'None': counted, wrong
    SKIPPED = "skipped"  # wrong format: the official script leaves it out of the denominator


MMSU_LETTERS = ("A", "B", "C", "D")


def mmsu_read_letter(response: str) -> tuple[MmsuStatus, str | None]:
    """MMSU official letter reading on a (string) response."""
    predict = response.strip().replace("\n", "")
    if not predict or predict == "None":
        return MmsuStatus.EMPTY, None
    if predict[0] in MMSU_LETTERS:
        return MmsuStatus.LETTER, predict[0]
    if len(predict) > 1 and predict[-2] in MMSU_LETTERS:
        return MmsuStatus.LETTER, predict[-2]
    return MmsuStatus.SKIPPED, None


def mmsu_correct(letter: str | None, choices: dict[str, str], answer_gt: str) -> bool:
    return letter is not None and choices.get(letter) == answer_gt
