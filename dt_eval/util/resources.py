"""Where the data files shipped beside the code live: the repository's top-level folders (`tasks/`,
`serve/`) in an editable install, or their copies bundled into the wheel (`dt_eval/_bundled/`)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def resource_paths(*parts: str) -> list[Path]:
    """Existing candidates for a shipped folder or file, repository copy first."""
    candidates = (PACKAGE_DIR.parent.joinpath(*parts), PACKAGE_DIR.joinpath("_bundled", *parts))
    return [p for p in candidates if p.exists()]
