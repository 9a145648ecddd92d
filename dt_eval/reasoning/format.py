"""R_fmt: binary format check -- one reasoning block, then a non-empty answer.

Accepted shapes (`style`):
  "reasoning"     <reasoning>R</reasoning> A           (Audio-DeepThinker's rewarded format)
  "think"         <think>R</think> A  or  <think>R</think><answer>A</answer>
  "think_answer"  <think>R</think><answer>A</answer>   (R1-style, answer tags required)
  "split"         the server returned R separately (vLLM `reasoning` / `reasoning_content`) and
                  the content A holds no reasoning tags
  "any"           (default) any of the above
R and A must be non-empty after stripping; nothing but whitespace may precede the opening tag
or follow the closing answer tag; each tag appears exactly once. With `open_tag_in_prompt` the
opening <think>/<reasoning> is expected to be absent (chat templates that end the prompt with it).
Pure and deterministic: always scored (1.0 or 0.0), with the reason in `components`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dt_eval.reasoning.types import CotInput, CotScore

SCORER = "format"
VERSION = "dt-eval-format-v1"
STYLES = ("any", "reasoning", "think", "think_answer", "split")
_ANY_TAG = re.compile(r"</?(?:think|reasoning|answer)>", re.I)


def _count(text: str, tag: str) -> int:
    return len(re.findall(re.escape(tag), text, re.I))


def _block(text: str, tag: str, open_in_prompt: bool) -> tuple[str, str] | str:
    """(reasoning, rest) for a well-formed `<tag>R</tag>rest`, else the reason it is not."""
    o, c = f"<{tag}>", f"</{tag}>"
    n_open, n_close = _count(text, o), _count(text, c)
    if n_close != 1:
        return f"expected exactly one {c}, found {n_close}"
    if open_in_prompt:
        if n_open:
            return f"{o} found but the prompt already opened it"
        start = 0
    else:
        if n_open != 1:
            return f"expected exactly one {o}, found {n_open}"
        start = text.lower().find(o)
        if text[:start].strip():
            return f"text before {o}"
        start += len(o)
    end = text.lower().find(c)
    if end < start:
        return f"{c} before {o}"
    return text[start:end], text[end + len(c):]


def _answer_tags(rest: str, required: bool) -> tuple[str, str | None]:
    """(answer, failure reason or None) from the text after the reasoning block."""
    if _count(rest, "<answer>") or _count(rest, "</answer>"):
        m = re.fullmatch(r"\s*<answer>(.*)</answer>\s*", rest, re.S | re.I)
        if not m or _count(rest, "<answer>") != 1 or _count(rest, "</answer>") != 1:
            return "", "malformed <answer> block"
        return m.group(1), None
    if required:
        return "", "no <answer>...</answer> block"
    return rest, None


def check(output: str | None, server_reasoning: str | None = None, style: str = "any",
          open_tag_in_prompt: bool = False) -> tuple[bool, str | None, str]:
    """(ok, shape, reason)."""
    if style not in STYLES:
        raise ValueError(f"format style must be one of {', '.join(STYLES)}")
    text = output or ""
    reasons = []
    if style in ("any", "split"):
        if (server_reasoning or "").strip():
            if _ANY_TAG.search(re.sub(r"^\s*<think>\s*</think>", "", text, flags=re.I)):
                reasons.append("split: reasoning tags left in the content")
            elif not text.strip():
                reasons.append("split: empty answer")
            else:
                return True, "split", "ok"
        else:
            reasons.append("split: no separate reasoning")
    shapes = {"reasoning": [("reasoning", False)], "think": [("think", False)], "think_answer": [("think", True)],
              "split": [], "any": [("reasoning", False), ("think", False)]}[style]
    if (server_reasoning or "").strip() and style == "any":
        shapes = []  # a split reply was judged above
    for tag, answer_required in shapes:
        got = _block(text, tag, open_tag_in_prompt)
        if isinstance(got, str):
            reasons.append(f"{tag}: {got}")
            continue
        reasoning, rest = got
        if not reasoning.strip():
            reasons.append(f"{tag}: empty reasoning")
            continue
        other = "think" if tag == "reasoning" else "reasoning"
        if _count(rest, f"<{tag}>") or _count(rest, f"<{other}>") or _count(rest, f"</{other}>"):
            reasons.append(f"{tag}: reasoning tags after the reasoning block")
            continue
        answer, why = _answer_tags(rest, answer_required)
        if why:
            reasons.append(f"{tag}: {why}")
            continue
        if not answer.strip():
            reasons.append(f"{tag}: empty answer")
            continue
        shape = "think_answer" if (tag == "think" and "<answer>" in rest.lower()) else tag
        return True, shape, "ok"
    return False, None, "; ".join(reasons) or "no reasoning block"


def score(item: CotInput, style: str = "any", open_tag_in_prompt: bool = False) -> CotScore:
    ok, shape, reason = check(item.output, item.server_reasoning, style, open_tag_in_prompt)
    return CotScore(id=item.id, scorer=SCORER, version=VERSION, value=1.0 if ok else 0.0,
                    components={"shape": shape, "reason": reason, "style": style})


async def score_batch(items: Sequence[CotInput], style: str = "any", open_tag_in_prompt: bool = False) -> list[CotScore]:
    return [score(it, style, open_tag_in_prompt) for it in items]
