"""Answer options become prompt text in one place (dt_eval.tasks.prompts.format_options): the task
prompts, the judge prompts, the demo and the recipe show a model the same "(A) text" lines."""

from __future__ import annotations

import pytest

from dt_eval.tasks.config import load_task
from dt_eval.tasks.prompts import PromptError, format_options, render_options

CHOICES = ["rising", "falling", "steady"]
LINES = "(A) rising\n(B) falling\n(C) steady"


def test_every_renderer_gives_the_task_prompts_lines():
    from dt_eval.apps.demo.app import render_question
    from dt_eval.reasoning.types import render_options as judge_options
    from trained_recipe.config import PromptConfig
    from trained_recipe.data import render_options as recipe_options

    assert format_options(CHOICES) == LINES
    for task in ("mmau", "mmar"):
        assert render_options(load_task(task), CHOICES) == LINES
    assert render_options(load_task("mmsu"), CHOICES) == "A. rising\nB. falling\nC. steady"  # its own format
    assert judge_options(CHOICES) == LINES
    assert recipe_options(CHOICES, PromptConfig()) == LINES
    assert render_question("Which way?", CHOICES) == "Which way?\nChoices:\n" + LINES


def test_labels_formats_and_limits():
    from trained_recipe.config import PromptConfig
    from trained_recipe.data import DataError
    from trained_recipe.data import render_options as recipe_options

    from dt_eval.reasoning.types import render_options as judge_options

    assert format_options(["x", "y"], "12", "{label}. {text}") == "1. x\n2. y"
    with pytest.raises(PromptError, match="3 options but only 2 labels"):
        format_options(CHOICES, "AB")
    with pytest.raises(DataError, match="^3 options but only 2 labels$"):
        recipe_options(CHOICES, PromptConfig(labels="AB"))
    # the judge prompts number options past the labels and name an empty list
    assert judge_options(CHOICES, labels="AB") == "(A) rising\n(B) falling\n(3) steady"
    assert judge_options([]) == "(none)"
