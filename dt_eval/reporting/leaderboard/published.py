"""Published ("reported") numbers: `leaderboard/published.yaml`, loaded and validated.

Each entry is one system as one source reports it. Its numbers are anchors ranked beside the
runs dt-eval measured, always marked as reported: every entry carries the citation and URL it
comes from (and optionally a BibTeX key for the LaTeX table), the data version each number refers
to as far as the source states it, and whether each number was checked against that source
(`checked`: verified, or unverified; nothing else is said about how a number was obtained).

```yaml
schema: dt-eval-published/1
entries:
  - model: Audio-DeepThinker
    aliases: [audio-deepthinker-30b-a3b]
    citation: "He et al., Audio-DeepThinker, Interspeech 2026 (arXiv:2604.18187), Table 1"
    source: https://arxiv.org/abs/2604.18187
    cite_key: he2026audiodeepthinker   # \\cite key of the LaTeX table's footnote (optional)
    checked: verified            # every score of the entry, unless a score says otherwise
    scores:
      mmar: {value: 74.0, data_version: "not stated"}
      mmau: 78.5                 # a bare number is {value: 78.5}
      mmsu: {value: 77.26, checked: unverified}
```

Score keys are leaderboard column keys: a task family (`mmar`, `mmau`, `mmau-test`, `mmsu`, or
any task name) for accuracy, `<family>:rubrics` for the MMAR-Rubrics score (0-100) and
`<family>:hybrid` for the mean hybrid reasoning reward (0-1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dt_eval.errors import DtEvalError
from dt_eval.util.hashing import sha256_bytes

SCHEMA = "dt-eval-published/1"
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*(:(rubrics|hybrid))?$")


class PublishedError(DtEvalError, ValueError):
    pass


class PublishedScore(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float
    # What the number was computed on, as far as the source says: a label ("2025 release
    # (MMAR-meta.json)"), or "unknown". Numbers with different versions get different marks.
    data_version: str = "unknown"
    data_sha256: str | None = None
    # checked against the cited source: "verified" (the number is there as stated) or
    # "unverified"; None: the entry's status
    checked: Literal["verified", "unverified"] | None = None
    note: str | None = None

    @field_validator("data_sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("data_sha256 must be 64 lowercase hex digits")
        return v


class PublishedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    aliases: list[str] = Field(default_factory=list)
    citation: str
    source: str  # URL of the page / paper the numbers were read from
    cite_key: str | None = None  # BibTeX key of the source, for the LaTeX table's footnote
    checked: Literal["verified", "unverified"] = "unverified"  # default of its scores
    note: str | None = None
    scores: dict[str, PublishedScore]

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        """`alias: NAME` (or a list) is accepted as a synonym of `aliases`."""
        if isinstance(v, dict) and "alias" in v:
            v = dict(v)
            extra = v.pop("alias")
            v["aliases"] = list(v.get("aliases") or []) + ([extra] if isinstance(extra, str) else list(extra or []))
        return v

    @field_validator("source")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://\S+$", v):
            raise ValueError(f"source must be an http(s) URL, got {v!r}")
        return v

    @field_validator("cite_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_:.+/-]+", v):
            raise ValueError(f"cite_key must be a BibTeX key (letters, digits, _:.+/-), got {v!r}")
        return v

    @field_validator("citation", "model")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("scores", mode="before")
    @classmethod
    def _bare_numbers(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ({"value": x} if isinstance(x, (int, float)) and not isinstance(x, bool) else x)
                    for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _check_scores(self) -> PublishedEntry:
        if not self.scores:
            raise ValueError(f"{self.model}: no scores")
        for key, s in self.scores.items():
            if not _KEY.match(key):
                raise ValueError(f"{self.model}: bad score key {key!r} (a task family such as mmar, "
                                 "optionally with :rubrics or :hybrid)")
            hi = 1.0 if key.endswith(":hybrid") else 100.0
            if not 0.0 <= s.value <= hi:
                raise ValueError(f"{self.model}: {key} = {s.value} is outside [0, {hi:g}]")
        return self


class PublishedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: str = Field(alias="schema")
    description: str | None = None
    entries: list[PublishedEntry]

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        if v != SCHEMA:
            raise ValueError(f"schema must be {SCHEMA!r}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> PublishedFile:
        seen: dict[tuple[str, str], int] = {}
        for i, e in enumerate(self.entries):
            k = (normalise_model_name(e.model), e.citation)
            if k in seen:
                raise ValueError(f"entries {seen[k]} and {i} are the same model from the same citation ({e.model})")
            seen[k] = i
        return self


def normalise_model_name(name: str) -> str:
    """`Qwen/Qwen2-Audio-7B-Instruct`, `qwen2_audio 7b instruct` -> `qwen2audio7binstruct`.

    The hub organisation and a trailing slash are dropped; case, spaces, dashes, dots and
    underscores are ignored, so hub ids, local directory names and paper names can meet."""
    name = name.strip().rstrip("/")
    if "/" in name:
        name = name.rsplit("/", 1)[-1]
    return re.sub(r"[^0-9a-z]+", "", name.casefold())


def load_published(path: str | Path) -> tuple[PublishedFile, str]:
    """The validated file and its sha256. Errors name the entry and field."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise PublishedError(f"cannot read {p}: {e}") from None
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise PublishedError(f"{p}: not valid YAML: {e}") from None
    try:
        return PublishedFile.model_validate(raw), sha256_bytes(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            if err["loc"][:1] == ("entries",) and len(err["loc"]) > 1 and isinstance(raw, dict):
                try:
                    loc += f" ({raw['entries'][err['loc'][1]].get('model')})"
                except (KeyError, IndexError, TypeError, AttributeError):
                    pass
            lines.append(f"  {loc}: {err['msg']}")
        raise PublishedError(f"{p}: invalid published numbers:\n" + "\n".join(lines)) from None


def entry_to_json(e: PublishedEntry) -> dict[str, Any]:
    """The entry as the leaderboard JSON holds it: each score with its own check status."""
    out = e.model_dump(mode="json")
    for s in out["scores"].values():
        s["checked"] = s.get("checked") or e.checked
    return out


def check_summary(entry: dict[str, Any]) -> str:
    """'verified', 'unverified', or 'verified; unverified: mmsu' for an entry_to_json dict."""
    status = {k: s.get("checked") or entry.get("checked") or "unverified" for k, s in entry["scores"].items()}
    kinds = set(status.values())
    if len(kinds) == 1:
        return kinds.pop()
    return "verified; unverified: " + ", ".join(k for k, v in status.items() if v == "unverified")
