"""Typed config schemas (task YAMLs, model-family presets) as msgspec Structs: validation with
the failing field's path, at a fraction of pydantic's import and class-building cost (both
schemas are read before `dt-eval score` prints or `dt-eval run` sends its first request).

A schema class validates with `Schema.model_validate(data)` and gives its JSON form with
`model_dump()` and a changed copy with `model_copy(update=...)`: the names the pydantic records
use, so callers treat both kinds alike. Unknown keys are refused; `__post_init__` checks what
types cannot (a ValueError there is reported with the path of the object it checked).
Subclasses pass `kw_only=True` themselves (msgspec does not inherit it), so that a required
field may follow one with a default, as in the YAML files.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound="Schema")


class SchemaError(ValueError):
    """Data that does not fit a schema; the message names the field (`data.local.metadata: ...`)."""


class Schema(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    @classmethod
    def model_validate(cls: type[S], data: Any) -> S:
        """`data` (plain dicts and lists, as YAML or JSON gives them) as this schema; SchemaError if
        it does not fit. Numbers and booleans written as strings are accepted, as YAML users write them."""
        try:
            return msgspec.convert(data, cls, strict=False)
        except msgspec.ValidationError as e:
            raise SchemaError(explain(e)) from None

    def model_dump(self, mode: str = "json") -> dict[str, Any]:
        """Plain JSON-ready dicts and lists, every field included, in declaration order."""
        return msgspec.to_builtins(self)

    def model_copy(self: S, update: dict[str, Any] | None = None) -> S:
        """A shallow copy with `update`'s fields replaced (not validated again)."""
        return msgspec.structs.replace(self, **(update or {}))


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def explain(error: msgspec.ValidationError) -> str:
    """msgspec's message, led by the field path: 'thinking.mode: Invalid enum value 'maybe''."""
    m = _AT.match(str(error))
    msg, path = (m.group("msg"), (m.group("path") or "").lstrip(".")) if m else (str(error), "")
    unknown = _UNKNOWN.match(msg)
    if unknown:  # name the field where it is, as the other messages do
        name = unknown.group("name")
        path = f"{path}.{name}" if path else name
        msg = "unknown field (extra fields are not allowed; check its spelling and indentation)"
    return f"{path}: {msg}" if path else msg
