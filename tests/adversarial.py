"""Realistic hard predictions for MCQ scoring tests.

These generate the kinds of strings real audio LMs emit (bare letters, chains of
thought, ``<think>`` blocks, hedges, markdown, Unicode, blanks) for one
benchmark record, so that the harness's scorer can be compared with the
official scripts (or with ``tests/reference_scoring.py``) on inputs that
exercise every branch of the official rules.

* :func:`adversarial_predictions` -- MMAU/MMAR records (``choices`` + ``answer``).
* :func:`mmsu_adversarial_responses` -- MMSU records (``choice_a..d`` + ``answer_gt``);
  includes non-string values to hit the official "Error prediction!" path.
* :func:`build_prediction_file` -- a whole submission with one prediction per record.
"""

from __future__ import annotations

import copy
import random
from typing import Any

__all__ = ["adversarial_predictions", "mmsu_adversarial_responses", "build_prediction_file"]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MMSU_FIELDS = ("choice_a", "choice_b", "choice_c", "choice_d")


def _dedupe(items: list) -> list:
    seen = set()
    out = []
    for item in items:
        marker = (type(item).__name__, repr(item))
        if marker not in seen:
            seen.add(marker)
            out.append(item)
    return out


def _strip_punct(s: str) -> str:
    return "".join(ch for ch in s if ch.isalnum() or ch.isspace() or ch == "_").strip()


def adversarial_predictions(record: dict, rng: random.Random) -> list[str]:
    """Hard predictions for one MMAU/MMAR record (needs ``choices`` and ``answer``)."""
    choices = [str(c) for c in record.get("choices") or []]
    answer = str(record.get("answer", ""))
    if answer in choices:
        idx = choices.index(answer)
    else:
        idx = 0
    letter = _LETTERS[idx] if idx < len(_LETTERS) else "A"
    wrong_idx = [i for i, c in enumerate(choices) if c != answer]
    w = rng.choice(wrong_idx) if wrong_idx else None
    wrong = choices[w] if w is not None else "none of the above"
    wrong_letter = _LETTERS[w] if w is not None and w < len(_LETTERS) else "Z"
    other = rng.choice([c for c in choices if c not in (answer, wrong)] or [wrong])
    first_word = answer.split()[0] if answer.split() else answer

    cot_opts = rng.sample(choices, k=min(len(choices), 3)) if choices else []
    cot = " ".join(f"Option {_LETTERS[choices.index(c)]} ({c}) seems {rng.choice(['plausible', 'unlikely', 'possible'])}." for c in cot_opts)

    preds = [
        # exact and near-exact
        answer,
        answer.upper(),
        answer.lower(),
        answer.title(),
        answer + ".",
        f'"{answer}"',
        f"'{answer}'",
        _strip_punct(answer),
        f"{answer} {answer}",
        f"  {answer}  ",
        answer + "\n",
        answer + "\n\n\n",
        "\n" + answer + "\n",
        # letters
        letter,
        f"({letter})",
        f"{letter}.",
        f"{letter})",
        letter.lower(),
        f"Option {letter}",
        f"option {letter.lower()}",
        f"({letter}) {answer}",
        f"{letter}. {answer}",
        f"{letter}: {answer}",
        # sentences
        f"The answer is {answer}.",
        f"The answer is {letter}.",
        f"The correct answer is ({letter}) {answer}.",
        f"Answer: {answer}",
        f"ANSWER: {answer.upper()}",
        f"I believe the answer is {answer}, not {wrong}.",
        f"It is not {wrong}; it is {answer}.",
        # hedges
        f"It could be {answer} or {wrong}.",
        f"Either {wrong} or {answer}, probably the latter.",
        f"I'm not sure. Maybe {answer}?",
        # long chains of thought
        f"Let me listen carefully. {cot} Considering the audio cues, the best match is {answer}.",
        f"First, I identify the sounds. {cot} So the final answer is ({letter}).",
        # thinking / answer tags
        f"<think>The clip could contain {wrong} or {answer}. {cot}</think>\n{answer}",
        f"<think>\nI compare {other} with {answer}.\n</think>\n\nThe answer is {answer}.",
        f"<think>Hmm.</think><answer>{answer}</answer>",
        f"<think>{cot}</think><answer>{letter}</answer>",
        f"<reasoning>The audio suggests {answer} rather than {wrong}.</reasoning>\n{answer}",
        f"<answer>{answer}</answer>",
        f"<answer>{wrong}</answer>",
        "<answer></answer>",
        # blanks and punctuation
        "",
        " ",
        "   \n\t  ",
        "\n\n",
        "...",
        "?!",
        "()",
        "-",
        # Unicode
        f"答案是：{answer}",
        f"答案是 {letter}。",
        f"{answer} 🎵",
        f"🎧 {answer} ✅",
        f"Réponse : {answer}",
        f"La respuesta correcta es «{answer}».",
        f"Ответ: {answer}",
        "\u3000" + answer + "\u3000",
        "ｆｕｌｌｗｉｄｔｈ " + answer,
        answer.replace(" ", "\u00a0"),
        "café naïve résumé",
        "音频中听到了声音",
        # wrong options and mixtures
        wrong,
        f"The answer is {wrong}.",
        f"({wrong_letter}) {wrong}",
        wrong_letter,
        other,
        f"{answer} and {wrong}",
        " / ".join(choices),
        "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(choices[: len(_LETTERS)])),
        first_word,
        f"Probably {first_word}.",
        "None of the above.",
        "I cannot determine the answer from the audio.",
        # markdown
        f"**{answer}**",
        f"The answer is **{answer}**.",
        f"**Answer:** {answer}",
        f"- {answer}\n",
        f"`{answer}`",
        f"### Final answer\n\n**({letter}) {answer}**\n",
        f"*{wrong}* is wrong, the answer is _{answer}_",
    ]

    # Duplicated-choice situations: when the answer text occurs twice, answer
    # with the letter/text of the other copy; when some choice shares all the
    # answer's tokens, use that spelling.
    for j, c in enumerate(choices):
        if j != idx and c == answer and j < len(_LETTERS):
            preds += [_LETTERS[j], f"({_LETTERS[j]}) {c}", f"The answer is {_LETTERS[j]}."]
    for j, c in enumerate(choices):
        if c != answer and sorted(c.lower().split()) == sorted(answer.lower().split()):
            preds.append(c)
    for j, c in enumerate(choices):
        if j != idx and choices.count(c) > 1:
            preds.append(c)  # a duplicated wrong choice
    return _dedupe(preds)


def mmsu_adversarial_responses(record: dict, rng: random.Random) -> list:
    """Hard ``response`` values for one MMSU record (``choice_a..d``, ``answer_gt``).

    Mostly strings, plus a few non-string JSON values (None, numbers, lists)
    that the official script reports as ``Error prediction!`` and skips.
    """
    options = [record.get(f, "") for f in _MMSU_FIELDS]
    gt = record.get("answer_gt", "")
    gt_idx = options.index(gt) if gt in options else 0
    L = "ABCD"[gt_idx]
    W = rng.choice([x for x in "ABCD" if x != L])
    gt_text = str(options[gt_idx])
    wrong_text = str(options["ABCD".index(W)])

    out: list[Any] = [
        L,
        W,
        f"{L}.",
        f"({L})",
        f"({W})",
        f"{L})",
        f"[{L}]",
        f" {L} ",
        f"{L}\n",
        f"\n{L}\n\n",
        L.lower(),
        f"({L.lower()})",
        f"The answer is {L}.",
        f"The answer is {W}.",
        f"The answer is ({L}).",
        f"The answer is {L}",  # no final period: second-to-last char is a space
        f"Answer: {L}",  # first char 'A' wins whatever the letter
        f"Answer: ({L})",
        f"After listening, the answer is {L}.",  # first char 'A'
        f"Because the speaker sounds calm, {L}.",  # first char 'B'
        f"Clearly {L}.",  # first char 'C'
        f"Definitely {L}.",  # first char 'D'
        f"{L}. {gt_text}",
        f"{W}. {wrong_text}",
        f"{L}: {gt_text}",
        gt_text,
        wrong_text,
        f"The correct option is {L}",
        f"I think it's {L}.",
        f"I think it's {W}.",
        f"the answer is {L.lower()}.",
        f"Option {L}",
        f"option {L}.",
        f"<think>The audio is ambiguous between {W} and {L}.</think>\n{L}",
        f"<answer>{L}</answer>",
        f"**{L}**",
        f"{L}{W}",
        f"{L}, {W}",
        f"{L} or {W}",
        f"{L}\n{W}",
        "E",
        "ABCD",
        "None",
        " None ",
        "none",
        "None.",
        "",
        " ",
        "\n",
        "\n\n\t",
        "?",
        ".",
        f"答案是{L}。",
        f"答案：{L}",
        f"{L} ✅",
        f"🎧{L}",
        "Ａ",  # fullwidth A: not an ASCII letter
        f"Réponse {L}.",
        f"The answer is\n{L}.",
        # non-strings: official prints "Error prediction!" and skips the item
        None,
        123,
        0,
        1.5,
        True,
        [L],
        {"answer": L},
    ]
    return _dedupe(out)


def build_prediction_file(records: list[dict], kind: str, rng: random.Random) -> list[dict]:
    """One adversarial prediction per record, as a submission ready to dump.

    ``kind`` is ``"mmau"`` (key ``model_output``), ``"mmar"`` (key
    ``answer_prediction``) or ``"mmsu"`` (key ``response``). About 2% of the
    records get no prediction key at all. Input records are not modified.
    For MMSU, non-string responses are chosen only now and then (~3%).
    """
    keys = {"mmau": "model_output", "mmar": "answer_prediction", "mmsu": "response"}
    if kind not in keys:
        raise ValueError(f"kind must be one of {sorted(keys)}, not {kind!r}")
    key = keys[kind]
    out: list[dict] = []
    for rec in records:
        new = copy.deepcopy(rec)
        new.pop(key, None)
        if rng.random() < 0.02:
            out.append(new)
            continue
        if kind == "mmsu":
            options = mmsu_adversarial_responses(rec, rng)
            strings = [o for o in options if isinstance(o, str)]
            others = [o for o in options if not isinstance(o, str)]
            pool = others if (others and rng.random() < 0.03) else strings
        else:
            pool = adversarial_predictions(rec, rng)
        new[key] = rng.choice(pool)
        out.append(new)
    return out
