"""Extraction and the answer-matching path take time linear in the output's length, whatever the
output holds (unclosed tags by the thousand, long whitespace runs, endless markers).

The check does not depend on the machine's speed: it times the same shape at sizes N and 4N
(CPU time, best of several interleaved runs) and asks for growth well below quadratic (16x).
A linear scan grows about 4x; the old lazy `<answer>(.*?)</answer>` regex grew 16x.
"""

import gc
import math
import time

import pytest

from dt_eval.pipeline.extract import extract
from dt_eval.scoring.submission import score_records
from dt_eval.tasks.config import load_task

from .synthetic_meta import mmau_records, mmsu_records

CHOICES = ["Man", "Woman", "Child", "Robot"]

# name -> output of roughly n units; each aims at one step of extraction.
SHAPES = {
    "unclosed answer tags": lambda n: "<answer>x " * n,
    "unclosed upper-case answer tags": lambda n: "<ANSWER>" * n,
    "unclosed answer tags after non-ASCII": lambda n: "İ<answer>" * n,
    "many opening tags, one closing": lambda n: "<answer>" * n + "</answer>",
    "many closing answer tags": lambda n: "</answer>" * n,
    "alternating answer blocks": lambda n: "<answer>B</answer>x" * n,
    "unclosed think tags": lambda n: "<think>" * n,
    "many closing think tags": lambda n: "</think>" * n + "B",
    "reasoning tags both ways": lambda n: "</reasoning><reasoning>" * n,
    "unclosed boxed": lambda n: "\\boxed{" + "a" * (8 * n),
    "many boxed": lambda n: "\\boxed{a" * n,
    "many answer markers": lambda n: "the answer is " * n,
    "marker then whitespace": lambda n: "answer is" + " " * (8 * n),
    "answer word then whitespace": lambda n: "answer" + " " * (8 * n) + "x",
    "the then whitespace": lambda n: "the" + " \t" * (4 * n) + "x",
    "the answer then whitespace": lambda n: "the answer" + " " * (8 * n) + "is",
    "option then whitespace": lambda n: "option" + " " * (8 * n) + "x",
    "label then whitespace": lambda n: "A" + " " * (8 * n) + "x",
    "label then whitespace and comma": lambda n: "(A" + " " * (8 * n) + ",",
    "label with long text": lambda n: "(A) " + "word " * n,
    "nested wrappers": lambda n: "Answer: " * n + "B",
    "emphasis run": lambda n: "*" * (8 * n),
    "quote runs": lambda n: '"' * (4 * n) + "B" + '"' * (4 * n),
    "newline runs": lambda n: "\n" * (8 * n) + "B" + "\n" * (8 * n),
    "many words": lambda n: "woman man " * n,
}


def _cpu(fn, reps):
    best = float("inf")
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
    finally:
        gc.enable()
    return best


def _growth(run, build):
    """CPU time at 4N over time at N. N grows until one run takes a few milliseconds or the text
    reaches 64K characters (huge strings would time the allocator); fast runs are repeated
    `loops` times inside each measurement instead."""
    n = 16
    while _cpu(lambda: run(build(n)), 3) < 0.002 and len(build(2 * n)) <= 1 << 16:
        n *= 2
    small, large = build(n), build(4 * n)
    loops = max(1, math.ceil(0.002 / max(_cpu(lambda: run(small), 3), 1e-6)))

    def timed(text):
        return _cpu(lambda: [run(text) for _ in range(loops)], 1)

    best_small = best_large = float("inf")
    for _ in range(4):  # interleaved, so a busy moment hits both sizes
        best_small = min(best_small, timed(small))
        best_large = min(best_large, timed(large))
    return best_large / max(best_small, 1e-6), n


def _assert_linear(run, build):
    # A few rounds: a linear step passes in one unless the machine is badly overloaded; a
    # quadratic one (16x) never does.
    ratios = []
    for _ in range(3):
        ratio, n = _growth(run, build)
        ratios.append(round(ratio, 1))
        if ratio < 9:
            return
    pytest.fail(f"time grew {ratios}x from N={n} to 4N (linear: ~4x, quadratic: ~16x)")


@pytest.mark.parametrize("name", SHAPES)
def test_extraction_is_linear(name):
    _assert_linear(lambda text: extract(text, CHOICES), SHAPES[name])


_MMAU = load_task("mmau")
_MMAU_REC = mmau_records(1, 0)[0]
_MMSU = load_task("mmsu")
_MMSU_REC = mmsu_records(1, 0)[0]


@pytest.mark.parametrize("name", ["unclosed answer tags", "many answer markers", "label with long text",
                                  "many words", "newline runs"])
def test_scoring_with_extraction_is_linear(name):
    """The whole answer-matching path: extraction, the official match on the extracted answer
    and on the whole output (MMAU), and MMSU's letter rule."""
    build = SHAPES[name]
    _assert_linear(lambda text: score_records(_MMAU, [dict(_MMAU_REC, model_output=text)], extract_answers=True),
                   build)
    _assert_linear(lambda text: score_records(_MMSU, [dict(_MMSU_REC, response=text)], extract_answers=True),
                   build)
