"""Build the chat messages for one item from the task config and the model family's preset.

The one place where answer options become prompt text (`format_options`): the judge prompts, the
demo and the recipe render them here too. Imports nothing at run time beyond the standard library
(and dt_eval.errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dt_eval.errors import DtEvalError

if TYPE_CHECKING:
    from dt_eval.tasks.config import TaskConfig
    from dt_eval.types import Item

DEFAULT_LABELS = "ABCDEFGHIJ"
DEFAULT_OPTION_FORMAT = "({label}) {text}"

ThinkingMode = Literal["on", "off"]

# Used when the model family has no native thinking switch and no preset instruction.
GENERIC_THINK_INSTRUCTION = (
    "First reason about the audio step by step inside <think></think> tags, then state the final answer."
)


@dataclass
class PromptSettings:
    """Prompt-level choices that are not part of the task: family quirks and user overrides."""

    thinking: ThinkingMode = "on"
    system_prompt: str | None = None  # overrides the task's and the preset's
    native_thinking: bool = False  # the chat template has an on/off switch
    chat_template_kwargs_on: dict[str, Any] = field(default_factory=dict)
    chat_template_kwargs_off: dict[str, Any] = field(default_factory=dict)
    think_instruction: str | None = GENERIC_THINK_INSTRUCTION  # for prompted thinking

    def to_dict(self) -> dict[str, Any]:
        return {
            "thinking": self.thinking,
            "system_prompt": self.system_prompt,
            "native_thinking": self.native_thinking,
            "chat_template_kwargs_on": self.chat_template_kwargs_on,
            "chat_template_kwargs_off": self.chat_template_kwargs_off,
            "think_instruction": self.think_instruction,
        }


class PromptError(DtEvalError, ValueError):
    pass


def format_options(choices: Sequence[str], labels: Sequence[str] = DEFAULT_LABELS,
                   option_format: str = DEFAULT_OPTION_FORMAT) -> str:
    """One line per option, ``(A) text`` by default; `labels` is a string of letters or a list of
    labels. PromptError when there are more options than labels."""
    if len(choices) > len(labels):
        raise PromptError(f"{len(choices)} options but only {len(labels)} labels ({labels})")
    return "\n".join(option_format.format(label=labels[i], text=c) for i, c in enumerate(choices))


def render_options(cfg: TaskConfig, choices: list[str]) -> str:
    return format_options(choices, cfg.prompt.labels, cfg.prompt.option_format)


def task_text(cfg: TaskConfig, item: Item) -> str:
    """The task's own question text for one item (no model-family additions)."""
    if not item.choices:
        raise PromptError("the metadata record has no answer options")
    spec = cfg.prompt
    fields = {k: v for k, v in item.raw.items() if isinstance(v, (str, int, float))}
    fields.update(question=item.question, options=render_options(cfg, item.choices), instruction=spec.instruction)
    try:
        return spec.template.format(**fields)
    except (KeyError, IndexError) as e:
        raise PromptError(f"prompt template of {cfg.name} uses an unknown field {e}") from None


def compose_messages(text: str, settings: PromptSettings, task_system: str | None = None,
                     n_audio: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chat messages (audio placeholders first, then the text) and the chat-template kwargs,
    with the model family's thinking switch or instruction and system prompt applied."""
    # The chat-template switch goes out in every mode: vLLM's reasoning parsers read it too
    # (with enable_thinking=false an answer without </think> is content, not reasoning).
    kwargs = dict(settings.chat_template_kwargs_on if settings.thinking == "on" else settings.chat_template_kwargs_off)
    if not settings.native_thinking and settings.thinking == "on" and settings.think_instruction:
        text = f"{text}\n\n{settings.think_instruction}"
    messages: list[dict[str, Any]] = []
    system = settings.system_prompt if settings.system_prompt is not None else task_system
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": [{"type": "audio"} for _ in range(n_audio)] + [{"type": "text", "text": text}]})
    return messages, kwargs


def build_messages(cfg: TaskConfig, item: Item, settings: PromptSettings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chat messages with one audio placeholder, and the chat-template kwargs to send."""
    return compose_messages(task_text(cfg, item), settings, cfg.prompt.system)


def prompt_text(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The text part of a prompt, for the run log (audio stays out of logs)."""
    out: dict[str, Any] = {}
    for m in messages:
        if isinstance(m["content"], str):
            out[m["role"]] = m["content"]
        else:
            out[m["role"]] = "".join(p.get("text", "") if p["type"] == "text" else "<audio>" for p in m["content"])
    return out
