"""Where the data files shipped beside the code live: the repository's top-level folders (`tasks/`,
`serve/`) in an editable install, or their copies bundled into the wheel (`dt_eval/_bundled/`)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def resource_paths(*parts: str) -> list[Path]:
    """Existing candidates for a shipped folder or file, repository copy first."""
    candidates = (PACKAGE_DIR.parent.joinpath(*parts), PACKAGE_DIR.joinpath("_bundled", *parts))
    return [p for p in candidates if p.exists()]


def cache_root() -> Path:
    """Where dt-eval caches what it builds (tiny test models, demo clips): ``$DT_EVAL_CACHE`` or
    ``~/.cache/dt-eval``."""
    return Path(os.environ.get("DT_EVAL_CACHE") or Path.home() / ".cache" / "dt-eval")
