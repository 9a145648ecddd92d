"""Answer extraction on realistic thinking-model outputs."""

import pytest

from dt_eval.extract import extract

C = ["Man", "Woman", "Child", "Robot"]

# (output, server reasoning, expected answer text, expected option index, expected reasoning, truncated)
CASES = [
    # Qwen3 style: reasoning block, blank line, answer
    ("<think>\nThe voice is deep.\n</think>\n\n(A) Man", None, "Man", 0, "The voice is deep.", False),
    # the chat template opened <think> in the prompt: only a closing tag in the output
    ("The voice is deep, adult.\n</think>\n\nWoman", None, "Woman", 1, "The voice is deep, adult.", False),
    # Audio-DeepThinker format
    ("<reasoning>High pitch, playful.</reasoning>\nThe answer is C.", None, "Child", 2, "High pitch, playful.", False),
    # <think> + <answer>
    ("<think>metallic timbre</think><answer>(D) Robot</answer>", None, "Robot", 3, "metallic timbre", False),
    # several answer blocks: the last wins
    ("<answer>A</answer> wait, no. <answer>B</answer>", None, "Woman", 1, None, False),
    # cut off mid-thought: no answer, flagged
    ("<think>\nLet me listen again. The speaker", None, None, None, "Let me listen again. The speaker", True),
    # server split the reasoning (vLLM reasoning parser)
    ("B", "The speaker sounds female.", "Woman", 1, "The speaker sounds female.", False),
    ("\n\n**Answer:** (B) Woman.", "chain", "Woman", 1, "chain", False),
    # letter only variants
    ("B", None, "Woman", 1, None, False),
    ("(B)", None, "Woman", 1, None, False),
    ("B.", None, "Woman", 1, None, False),
    ("Option B", None, "Woman", 1, None, False),
    ("[C]", None, "Child", 2, None, False),
    # label + text keeps the text, even when it disagrees with the label
    ("(B) Man", None, "Man", 0, None, False),
    ("(B) a dog", None, "a dog", None, None, False),
    # wrappers, quotes, emphasis, punctuation
    ('Final answer: "Robot".', None, "Robot", 3, None, False),
    ("The correct answer is **woman**!", None, "Woman", 1, None, False),
    ("Answer: A, because the voice is deep.", None, "Man", 0, None, False),
    ("Final answer: \\boxed{D}", None, "Robot", 3, None, False),
    ("答案是 C", None, "Child", 2, None, False),
    # multi-line: the marker's line is the answer
    ("Let me think.\nThe answer is B.\nI am fairly sure.", None, "Woman", 1, None, False),
    # never guess
    ("", None, None, None, None, False),
    ("   \n", None, None, None, None, False),
    ("E", None, None, None, None, False),  # a label that names no option
    ("<think>hmm</think>", None, None, None, "hmm", False),
    # free text that is no option: kept, the official match decides
    ("It could be A or B", None, "It could be A or B", None, None, False),
    # a lone lower-case 'a' is an article, not option A
    ("a", None, "a", None, None, False),
]


@pytest.mark.parametrize("output,reasoning,answer,idx,chain,truncated", CASES)
def test_extraction_table(output, reasoning, answer, idx, chain, truncated):
    ext = extract(output, C, reasoning=reasoning)
    assert ext.answer_text == answer
    assert ext.matched_choice == idx
    assert ext.reasoning == chain
    assert ext.truncated is truncated
    assert ext.unparsed is (answer is None)


def test_duplicate_and_unicode_choices():
    dup = ["rising", "rising", "falling", "steady"]
    assert extract("B", dup).answer_text == "rising"
    assert extract("(C) falling", dup).matched_choice == 2
    emoji = ["😀 happy", "😢 sad"]
    assert extract("<think>x</think>😢 sad", emoji).matched_choice == 1
    cjk = ["一", "二", "三", "四"]
    assert extract("答案：二", cjk).matched_choice == 1


def test_eight_options_and_mmsu_labels():
    keys = ["C major", "A minor", "G major", "E minor", "D major", "B minor", "F major", "D minor"]
    assert extract("(H)", keys).answer_text == "D minor"
    assert extract("H", keys[:4]).unparsed  # H is no option of four
    assert extract("D", ["a", "b", "c", "d"], labels="ABCD").matched_choice == 3
