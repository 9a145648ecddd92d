"""Reading the YAML files dt-eval ships and users write (task configs, model-family presets).

Importing PyYAML and parsing costs more than the scoring of a whole benchmark file, and these
files are read by every `dt-eval score` and `run`. So a parsed file is kept as JSON in
`<cache root>/yaml/` together with the text it was parsed from, and used again only while the
file still holds exactly that text: an edited file is parsed again, never read stale. A cache
that cannot be read or written is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_FORMAT = 1  # bump when the cache layout or what it holds changes


def load_yaml(path: str | Path) -> Any:
    """The file's YAML document (safe types only); ValueError with the line when it is not YAML."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    cache = _cache_file(path)
    if cache is not None:
        try:
            stored = json.loads(cache.read_text(encoding="utf-8"))
            if stored.get("format") == _FORMAT and stored.get("source") == text:
                return stored["data"]
        except (OSError, ValueError, AttributeError):
            pass
    data = parse_yaml(text)
    if cache is not None:
        _store(cache, text, data)
    return data


def parse_yaml(text: str) -> Any:
    """YAML text -> data, with libyaml's parser when PyYAML has it (several times faster)."""
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loaders
    except yaml.YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from None


def _cache_file(path: Path) -> Path | None:
    import zlib

    from dt_eval.util.resources import cache_root

    try:
        where = str(path.resolve())
    except OSError:
        return None
    return cache_root() / "yaml" / f"{path.stem}-{zlib.crc32(where.encode('utf-8', 'surrogatepass')):08x}.json"


def _store(cache: Path, text: str, data: Any) -> None:
    try:
        encoded = json.dumps({"format": _FORMAT, "source": text, "data": data}, ensure_ascii=False)
        if json.loads(encoded)["data"] != data:  # e.g. integer keys, which JSON turns into strings
            return
    except (TypeError, ValueError):  # a YAML date or set: not JSON, so not cached
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(encoded, encoding="utf-8")
        os.replace(tmp, cache)  # whole or not at all, whoever else writes it at the same time
    except OSError:
        pass
