"""Writing an analysis's output folder: NAME.md (tables), its figures (when asked and matplotlib is
installed; otherwise a note says why not) and NAME.json (everything, with the figures listed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_outputs(result: dict[str, Any], out: Path, name: str, markdown: Callable[[dict[str, Any]], str],
                  figures: Callable[[dict[str, Any], Path], list[dict[str, str]]], plots: bool) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown(result), encoding="utf-8")
    if plots:
        try:
            result["figures"] = figures(result, out)
        except ImportError as e:  # matplotlib is an extra
            result["notes"].append(f"no plots: {e} (pip install 'dt-eval[leaderboard]')")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
