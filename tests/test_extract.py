"""Answer extraction on realistic thinking-model outputs."""

import pytest

from dt_eval.pipeline.extract import extract

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
    # non-ASCII text before the closing tag ('İ'.lower() is two characters long)
    ("Ses İnce.</think>\n\nB", None, "Woman", 1, "Ses İnce.", False),
    ("<answer>İ</answer><ANSWER>(C)</ANSWER>", None, "Child", 2, None, False),
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


CHORDS = ["C", "Gm", "Cm7b5", "Eb/G"]  # an MMAU chord item: option texts that look like labels

# (output, expected answer text, expected option index, ambiguous)
CHORD_CASES = [
    # a bare letter: the chord C (option A) or label C (Cm7b5)? Neither is guessed.
    ("C", None, None, True),
    ("**C**", None, None, True),
    ('"C".', None, None, True),
    ("Answer: C", None, None, True),
    ("The answer is C.", None, None, True),  # the period ends the sentence
    ("The answer is **C**.", None, None, True),
    ("<answer>C</answer>", None, None, True),
    ("C, because the bass note is C", None, None, True),
    # marked as a label: the label
    ("Option C", "Cm7b5", 2, False),
    ("The answer is option C", "Cm7b5", 2, False),
    ("(C)", "Cm7b5", 2, False),
    ("[C]", "Cm7b5", 2, False),
    ("C.", "Cm7b5", 2, False),
    ("C)", "Cm7b5", 2, False),
    ("**C.**", "Cm7b5", 2, False),
    ("The answer is (C).", "Cm7b5", 2, False),
    ("<answer>C.</answer>", "Cm7b5", 2, False),
    # the text says which
    ("(A) C", "C", 0, False),
    ("C. Cm7b5", "Cm7b5", 2, False),
    ("Gm", "Gm", 1, False),
    ("c", "C", 0, False),  # lower case: a chord, never a label
    # only one reading exists
    ("D", "Eb/G", 3, False),
    ("A", "C", 0, False),
]


@pytest.mark.parametrize("output,answer,idx,ambiguous", CHORD_CASES)
def test_letters_that_are_also_option_texts(output, answer, idx, ambiguous):
    ext = extract(output, CHORDS)
    assert (ext.answer_text, ext.matched_choice, ext.ambiguous) == (answer, idx, ambiguous)
    assert not ext.unparsed  # ambiguous is counted on its own


def test_ambiguity_needs_two_different_readings():
    assert extract("C", ["A", "B", "C", "D"]).matched_choice == 2  # label C is the text 'C'
    assert extract("C", ["A", "B", "C", "C"]).matched_choice == 2  # the text's first copy, same text
    assert extract("A", ["twenty-one", "Berman's", "said", "a"]).ambiguous  # text 'a' vs label A
    assert extract("a", ["twenty-one", "Berman's", "said", "a"]).matched_choice == 3
    # MMSU asks for a letter alone: a bare letter is a label
    assert extract("C", CHORDS, labels="ABCD", letters_only=True).matched_choice == 2
