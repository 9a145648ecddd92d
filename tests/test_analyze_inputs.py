"""Pieces of the gating analysis that need no model: how a recorded response is split into the
reasoning and answer segments, and the expert-load entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dt_eval.analyze.inputs import split_response
from dt_eval.analyze.routing_stats import load_entropy_bits


@pytest.mark.parametrize("output, reasoning, want", [
    ("<think>\nA.\n</think>\n\n(A) x", None, ("<think>\nA.\n</think>", "\n\n(A) x")),
    # the chat template opened the tag in the prompt: everything up to </think> is reasoning
    ("A.\n</think>\n\nB", None, ("A.\n</think>", "\n\nB")),
    # the last closing tag ends the reasoning (a model that closes twice)
    ("<think>a</think>b</think>c", None, ("<think>a</think>b</think>", "c")),
    ("<reasoning>r</reasoning> ans", None, ("<reasoning>r</reasoning>", " ans")),
    ("<think>cut off mid-thought", None, ("<think>cut off mid-thought", "")),  # truncated
    ("(B) falling", None, ("", "(B) falling")),  # no reasoning at all
    ("(B) falling", " the server split it ", ("<think>\nthe server split it\n</think>", "\n\n(B) falling")),
    (None, None, ("", "")),
])
def test_split_response(output, reasoning, want):
    assert split_response(output, reasoning) == want


def test_load_entropy_bits():
    assert load_entropy_bits(np.array([5.0, 5.0, 5.0, 5.0])) == pytest.approx(2.0)  # uniform over 4: 2 bits
    assert load_entropy_bits(np.array([7.0, 0.0, 0.0])) == 0.0  # one expert takes every slot
    assert load_entropy_bits(np.array([3.0, 1.0])) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert load_entropy_bits(np.zeros(4)) is None  # a segment without tokens
