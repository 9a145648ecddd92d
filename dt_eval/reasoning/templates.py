"""Versioned prompt templates shipped as package data (dt_eval/reasoning/prompts/*.yaml).

Each file has `name`, `version`, `source`, `system`, `user` and optional named `parts`;
placeholders are `string.Template` `$names` (no brace escaping, so JSON examples stay
readable). `PromptTemplate.key` is the version plus a hash of the file's bytes: the judge cache
keys on it, so editing a prompt without bumping its version still never reuses stale verdicts.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import yaml

from dt_eval.errors import DtEvalError
from dt_eval.util.hashing import sha256_bytes


class TemplateError(DtEvalError, ValueError):
    pass


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    source: str
    system: str | None
    user: str
    parts: dict[str, str] = field(default_factory=dict)
    sha256: str = ""

    @property
    def key(self) -> str:
        return f"{self.version}@{self.sha256[:12]}"

    def render(self, text: str, /, **values: object) -> str:
        try:
            return string.Template(text).substitute({k: "" if v is None else str(v) for k, v in values.items()})
        except (KeyError, ValueError) as e:
            raise TemplateError(f"prompt {self.name}: missing or bad placeholder: {e}") from None

    def user_text(self, **values: object) -> str:
        return self.render(self.user, **values)

    def part(self, part_name: str, /, **values: object) -> str:
        if part_name not in self.parts:
            raise TemplateError(f"prompt {self.name} has no part {part_name!r}")
        return self.render(self.parts[part_name], **values)

    def messages(self, user: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": user}]


@lru_cache(maxsize=None)
def load_prompt(name: str) -> PromptTemplate:
    """Load dt_eval/reasoning/prompts/<name>.yaml."""
    res = resources.files("dt_eval.reasoning").joinpath("prompts", f"{name}.yaml")
    try:
        data = res.read_bytes()
    except FileNotFoundError:
        raise TemplateError(f"no prompt template {name!r} in dt_eval/reasoning/prompts") from None
    raw = yaml.safe_load(data.decode("utf-8"))
    for k in ("name", "version", "user"):
        if not raw.get(k):
            raise TemplateError(f"prompt {name}: field {k!r} is required")
    return PromptTemplate(
        name=raw["name"], version=str(raw["version"]), source=str(raw.get("source") or ""),
        system=raw.get("system"), user=raw["user"], parts=dict(raw.get("parts") or {}),
        sha256=sha256_bytes(data),
    )
