"""Test oracle: a deliberately plain re-implementation of the official scorers.

Written from the rules in ``shared/docs/method-notes.md`` (and from observing the
official scripts' printed output), *not* from their source. It is meant to be
obviously correct rather than fast or pretty, so that ``dt_eval.scoring`` can be
checked against it.

Four entry points:

* :func:`ref_match` -- the MMAU/MMAR token-set rule for one prediction.
* :func:`ref_mcq_report` -- the exact stdout of the official MMAU or MMAR
  evaluation script for a list of submission records, plus per-item verdicts.
* :func:`ref_mmsu_report` -- the exact stdout of the official MMSU evaluation
  script for a list of records, plus per-item outcomes.
* :func:`ref_load_submission` -- the records the official script's file loader
  gets from a file (MMAU, MMAR, MMSU, MMAR-Rubrics), or a crash.

Where the official script would die with a traceback, the oracle raises
:class:`OfficialScriptCrash`; its ``stdout`` attribute holds whatever the
script had already printed before dying (e.g. the whole breakdown when every
record lacks a prediction and the final ``corr/total`` divides by zero).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "OfficialScriptCrash",
    "MMAU_TASKS",
    "MMAU_DIFFICULTIES",
    "MMAR_MODALITIES",
    "MMAR_CATEGORIES",
    "PRED_KEY",
    "tokens",
    "ref_match",
    "ref_mcq_report",
    "ref_mmsu_report",
    "ref_mmsu_report_jsonl",
    "ref_load_submission",
]


class OfficialScriptCrash(Exception):
    """The official script would exit with a traceback on this input.

    ``stdout`` is the text it would have printed before the traceback,
    ``reason`` a short human description (not the traceback text).
    """

    def __init__(self, reason: str, stdout: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.stdout = stdout


# Fixed breakdown rows, printed in exactly this order even when empty.
MMAU_TASKS = ("sound", "music", "speech")
MMAU_DIFFICULTIES = ("easy", "hard", "medium")  # note: not easy/medium/hard
MMAR_MODALITIES = (
    "sound",
    "music",
    "speech",
    "mix-sound-music",
    "mix-sound-speech",
    "mix-music-speech",
    "mix-sound-music-speech",
)
MMAR_CATEGORIES = ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer")

PRED_KEY = {"mmau": "model_output", "mmar": "answer_prediction", "mmsu": "response"}

_STARS = "*" * 30


# --------------------------------------------------------------------------
# MMAU / MMAR matching rule
# --------------------------------------------------------------------------

def _is_word_char(ch: str) -> bool:
    # Python's Unicode ``\w``: alphanumeric in the str.isalnum() sense, or "_".
    return ch == "_" or ch.isalnum()


def tokens(text: str) -> set[str]:
    """Set of maximal runs of word characters in ``text.lower()``.

    Equivalent to the documented ``set(re.findall(r"\\b\\w+\\b", s.lower()))``
    but written as a character scan so that it does not share the regex with
    the code under test.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    found: set[str] = set()
    run: list[str] = []
    for ch in text.lower():
        if _is_word_char(ch):
            run.append(ch)
        elif run:
            found.add("".join(run))
            run = []
    if run:
        found.add("".join(run))
    return found


def ref_match(answer: str, prediction: str, choices: list[str]) -> bool:
    """MMAU/MMAR rule: every answer token present, no distractor-only token present.

    A "distractor-only token" is a token of some choice whose token set differs
    from the answer's, minus the answer's tokens. An empty prediction token set is
    always wrong. ``choices`` is iterated as given (a bare string would be iterated
    character by character, exactly as the official code does).
    """
    pred = tokens(prediction)
    ans = tokens(answer)
    if len(pred) == 0:
        return False
    forbidden: set[str] = set()
    for choice in choices:
        ctoks = tokens(choice)
        if ctoks == ans:
            continue  # same tokens as the answer (duplicates, reorderings)
        forbidden |= ctoks - ans
    has_all_answer_tokens = all(t in pred for t in ans)
    hits_forbidden = any(t in forbidden for t in pred)
    return has_all_answer_tokens and not hits_forbidden


# --------------------------------------------------------------------------
# MMAU / MMAR report
# --------------------------------------------------------------------------

def _pct_line(name: Any, n_correct: int, n_total: int) -> str:
    if n_total > 0:
        pct = (n_correct / n_total) * 100  # this order of operations matters for .2f ties
    else:
        pct = 0
    return f"{name} : {pct:.2f}% over {n_total} samples"


def _lookup_pred(rec: Any, key: str) -> tuple[bool, Any]:
    """(present, value) for a record, mimicking ``key in rec`` / ``rec[key]``."""
    try:
        present = key in rec
    except TypeError as exc:
        raise OfficialScriptCrash(f"record is {type(rec).__name__}, `in` fails: {exc}") from None
    if not present:
        return False, None
    if not isinstance(rec, dict):
        raise OfficialScriptCrash(f"record is {type(rec).__name__}, cannot index by {key!r}")
    return True, rec[key]


def _need(rec: dict, field: str) -> Any:
    if field not in rec:
        raise OfficialScriptCrash(f"record {rec.get('id')!r} has no {field!r} field (KeyError)")
    return rec[field]


def _bucket(table: dict, value: Any, field: str, rec: dict) -> list[int]:
    try:
        return table[value]
    except TypeError:
        raise OfficialScriptCrash(
            f"record {rec.get('id')!r}: {field} {value!r} is unhashable (TypeError)"
        ) from None
    except KeyError:
        raise OfficialScriptCrash(
            f"record {rec.get('id')!r}: unknown {field} {value!r} (KeyError)"
        ) from None


def _checked_match(rec: dict, answer: Any, prediction: Any, choices: Any) -> bool:
    # Same evaluation order as the official function: prediction, answer,
    # then (only when the prediction has tokens) each choice.
    rid = rec.get("id")
    if not isinstance(prediction, str):
        raise OfficialScriptCrash(
            f"record {rid!r}: prediction is {type(prediction).__name__}, not str (AttributeError)"
        )
    if not isinstance(answer, str):
        raise OfficialScriptCrash(f"record {rid!r}: answer is {type(answer).__name__}, not str")
    if not tokens(prediction):
        return False
    try:
        choice_list = list(choices)
    except TypeError:
        raise OfficialScriptCrash(
            f"record {rid!r}: choices is {type(choices).__name__}, not iterable"
        ) from None
    for c in choice_list:
        if not isinstance(c, str):
            raise OfficialScriptCrash(f"record {rid!r}: a choice is {type(c).__name__}, not str")
    return ref_match(answer, prediction, choice_list)


def ref_mcq_report(records: list[dict], kind: str) -> tuple[str, list[tuple[Any, bool]]]:
    """Exact stdout of the official MMAU (``kind="mmau"``) or MMAR (``"mmar"``) script.

    Returns ``(stdout_text, [(id, correct), ...])``; the list has one entry per
    record that carries the prediction key, in input order. Records without the
    key are skipped silently (the official "No prediction count" stays 0).
    Raises :class:`OfficialScriptCrash` where the script would crash.
    """
    if kind == "mmau":
        key, first_field, second_field = "model_output", "task", "difficulty"
        first_rows, second_rows = MMAU_TASKS, MMAU_DIFFICULTIES
        first_title, second_title = "Task-wise Accuracy:", "Difficulty-wise Accuracy:"
    elif kind == "mmar":
        key, first_field, second_field = "answer_prediction", "modality", "category"
        first_rows, second_rows = MMAR_MODALITIES, MMAR_CATEGORIES
        first_title, second_title = "Modality-wise Accuracy:", "Category-wise Accuracy:"
    else:
        raise ValueError(f"kind must be 'mmau' or 'mmar', not {kind!r}")

    first = {name: [0, 0] for name in first_rows}
    second = {name: [0, 0] for name in second_rows}
    subcats: dict[Any, list[int]] = {}
    n_correct = 0
    n_total = 0
    verdicts: list[tuple[Any, bool]] = []

    for rec in records:
        present, prediction = _lookup_pred(rec, key)
        if not present:
            continue
        answer = _need(rec, "answer")
        v1 = _need(rec, first_field)
        v2 = _need(rec, second_field)
        choices = _need(rec, "choices")
        subcat = rec.get("sub-category")
        if subcat is not None:
            try:
                subcats.setdefault(subcat, [0, 0])
            except TypeError:
                raise OfficialScriptCrash(
                    f"record {rec.get('id')!r}: sub-category {subcat!r} is unhashable (TypeError)"
                ) from None

        ok = _checked_match(rec, answer, prediction, choices)
        b1 = _bucket(first, v1, first_field, rec)
        b2 = _bucket(second, v2, second_field, rec)
        for b in (b1, b2) + ((subcats[subcat],) if subcat is not None else ()):
            b[1] += 1
            if ok:
                b[0] += 1
        n_total += 1
        if ok:
            n_correct += 1
        verdicts.append((rec.get("id"), ok))

    out: list[str] = [_STARS, first_title]
    out += [_pct_line(name, c, t) for name, (c, t) in first.items()]
    out += [_STARS, second_title]
    out += [_pct_line(name, c, t) for name, (c, t) in second.items()]
    out += [_STARS, "Sub-category-wise Accuracy:"]
    out += [_pct_line(name, c, t) for name, (c, t) in subcats.items()]
    out.append(_STARS)
    if n_total == 0:
        raise OfficialScriptCrash(
            "no record carries the prediction key: total is 0 (ZeroDivisionError)",
            stdout="\n".join(out) + "\n",
        )
    out.append(f"Total Accuracy: {(n_correct / n_total) * 100:.2f}% over {n_total} samples")
    out.append(_STARS)
    out.append("No prediction count: 0")
    return "\n".join(out) + "\n", verdicts


# --------------------------------------------------------------------------
# MMSU report
# --------------------------------------------------------------------------

_LETTERS = ("A", "B", "C", "D")


def _mmsu_letter(text: str) -> str | None:
    """Letter picked from a cleaned, non-empty response, or None if unparseable."""
    if text[0] in _LETTERS:
        return text[0]
    if len(text) >= 2 and text[-2] in _LETTERS:
        return text[-2]
    return None


def ref_mmsu_report(records: list[dict]) -> tuple[str, list[tuple[Any, str]]]:
    """Exact stdout of the official MMSU script for already-parsed records.

    Returns ``(stdout_text, outcomes)`` where ``outcomes`` has one
    ``(id, status)`` per record, status one of:

    * ``"correct"`` / ``"wrong"`` -- counted in the denominator
      (an empty or ``'None'`` response is counted as wrong);
    * ``"unparsed"`` -- no A-D letter at position 0 or -2 after cleaning;
      printed as ``Wrong format response: ...`` and left out of every count;
    * ``"not_string"`` -- the response is not a string (e.g. null, a number);
      printed as ``Error prediction!`` and left out of every count.

    A missing ``response`` key behaves like ``""`` (counted wrong).
    """
    printed: list[str] = []
    # category -> sub-category -> [correct, total], both in first-seen order
    table: dict[Any, dict[Any, list[int]]] = {}
    outcomes: list[tuple[Any, str]] = []
    grand_correct = 0
    grand_total = 0

    for rec in records:
        if not isinstance(rec, dict):
            raise OfficialScriptCrash(
                f"record is {type(rec).__name__}, has no .get (AttributeError)",
                stdout="".join(line + "\n" for line in printed),
            )
        cat = rec.get("category", "")
        sub = rec.get("sub-category", "")
        rid = rec.get("id")
        response = rec.get("response", "")
        if not isinstance(response, str):
            printed.append("Error prediction!")
            outcomes.append((rid, "not_string"))
            continue
        cleaned = response.strip().replace("\n", "")

        letter = None
        if cleaned and cleaned != "None":
            letter = _mmsu_letter(cleaned)
            if letter is None:
                printed.append(f"Wrong format response: {cleaned}")
                outcomes.append((rid, "unparsed"))
                continue

        option_field = {"A": "choice_a", "B": "choice_b", "C": "choice_c", "D": "choice_d"}
        ok = letter is not None and rec.get(option_field[letter], "") == rec.get("answer_gt", "")

        try:
            cell = table.setdefault(cat, {}).setdefault(sub, [0, 0])
        except TypeError:
            raise OfficialScriptCrash(
                f"record {rid!r}: category/sub-category unhashable (TypeError)",
                stdout="".join(line + "\n" for line in printed),
            ) from None
        cell[1] += 1
        grand_total += 1
        if ok:
            cell[0] += 1
            grand_correct += 1
        outcomes.append((rid, "correct" if ok else "wrong"))

    for cat, subs in table.items():
        for sub, (c, t) in subs.items():
            printed.append(f"Category: {cat}, Sub-category: {sub}, Accuracy: {c / t:.4f}")
    for cat, subs in table.items():
        c = sum(v[0] for v in subs.values())
        t = sum(v[1] for v in subs.values())
        printed.append(f"Category: {cat}, Average Accuracy: {c / t:.4f}")
    overall = grand_correct / grand_total if grand_total else 0
    printed.append(f"Overall Accuracy: {overall:.4f}")
    printed.append(f"Total count: {grand_total}")
    return "".join(line + "\n" for line in printed), outcomes


def ref_mmsu_report_jsonl(text: str) -> tuple[str, list[tuple[Any, str]]]:
    """Same as :func:`ref_mmsu_report` but starting from the JSONL file text.

    Mirrors the official loader: lines that are not valid JSON are reported on
    stdout (``Error decoding JSON on line <0-based n>: <stripped line>`` followed
    by the decoder's message) and dropped. A blank line, e.g. a doubled trailing
    newline, is such a line.
    """
    # Text-mode file iteration: universal newlines, split after each "\n".
    norm = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = norm.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    diag: list[str] = []
    records = []
    for n, line in enumerate(lines):
        try:
            records.append(json.loads(line.strip()))
        except json.JSONDecodeError as exc:
            diag.append(f"Error decoding JSON on line {n}: {line.strip()}")
            diag.append(str(exc))
    try:
        body, outcomes = ref_mmsu_report(records)
    except OfficialScriptCrash as crash:
        crash.stdout = "".join(d + "\n" for d in diag) + crash.stdout
        raise
    return "".join(d + "\n" for d in diag) + body, outcomes


# --------------------------------------------------------------------------
# File loaders
# --------------------------------------------------------------------------

def _text_mode_lines(path) -> list[str]:
    # ``for line in open(path)``: universal newlines, each line keeps its "\n".
    with open(path, encoding="utf-8") as f:
        return list(f)


def _whole_document(path, script: str) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise OfficialScriptCrash(f"{script}: json.load fails: {exc}") from None


def ref_load_submission(path, script: str) -> list:
    """What the official script's loader returns for the file at ``path``.

    ``script``: ``"mmau"`` (json.load whatever the name), ``"mmar"`` (a name
    ending in ``json`` is json.load-ed, one ending in ``jsonl`` is read a line at
    a time with ``json.loads(line.strip())``, any other name leaves the data
    unset), ``"mmsu"`` (a line at a time; undecodable lines are reported and
    dropped, see :func:`ref_mmsu_report_jsonl`) or ``"mmar-rubrics"`` (a name
    ending in ``.json`` is json.load-ed, anything else read a line at a time,
    blank lines skipped, undecodable ones logged and dropped).

    Raises :class:`OfficialScriptCrash` where the loader would die.
    """
    name = str(path)
    if script == "mmau":
        return _whole_document(path, script)
    if script == "mmar":
        if name.endswith("json"):
            return _whole_document(path, script)
        if name.endswith("jsonl"):
            out = []
            for n, line in enumerate(_text_mode_lines(path)):
                try:
                    out.append(json.loads(line.strip()))
                except json.JSONDecodeError as exc:
                    raise OfficialScriptCrash(f"mmar: line {n} fails to decode: {exc}") from None
            return out
        raise OfficialScriptCrash("mmar: input_data is never assigned for this name (NameError)")
    if script == "mmsu":
        out = []
        for line in _text_mode_lines(path):
            try:
                out.append(json.loads(line.strip()))
            except json.JSONDecodeError:
                pass  # printed and dropped by the official loader
        return out
    if script == "mmar-rubrics":
        if name.endswith(".json"):
            return _whole_document(path, script)
        out = []
        for line in _text_mode_lines(path):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # logged and dropped
        return out
    raise ValueError(f"unknown script {script!r}")
