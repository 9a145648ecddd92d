"""sha256 digests (hex) of files, bytes, text and JSON-serialisable objects.

Stdlib only: `dt-eval score` hashes the predictions file through here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Digest of the UTF-8 encoding of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Digest of a file's bytes, read in 1 MiB blocks (a large checkpoint never sits in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """`obj` as JSON in one canonical form: sorted keys, no spaces, non-ASCII kept, str() for the rest."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object in canonical form (:func:`canonical_json`)."""
    return sha256_text(canonical_json(obj))
