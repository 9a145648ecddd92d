"""How a leaderboard cell prints a number and a run's settings: shared by the Markdown/HTML
renderer and the LaTeX table, so the two never disagree."""

from __future__ import annotations

from typing import Any


def fmt(metric: str, value: float | None, std: float | None = None, k: int | None = None) -> str:
    if value is None:
        return "–"
    d = 3 if metric == "hybrid" else 2
    s = f"{value:.{d}f}"
    if k and k > 1 and std is not None:
        s += f" ± {std:.{d}f}"
    return s


def fmt_delta(metric: str, delta: float) -> str:
    d = 3 if metric == "hybrid" else 2
    return f"{delta:+.{d}f}"


def settings_text(m: dict[str, Any]) -> str:
    s = m.get("settings") or {}
    parts = []
    if s.get("thinking"):
        parts.append(f"thinking {s['thinking']}")
    if s.get("temperature") is not None:
        parts.append(f"T={s['temperature']:g}")
    if s.get("max_tokens"):
        parts.append(f"max {s['max_tokens']} tok")
    ks = sorted({t["repeats"] for t in m["tasks"].values()})
    if ks and ks != [1]:
        parts.append("k=" + "/".join(str(k) for k in ks))
    if s.get("backend"):
        parts.append(str(s["backend"]))
    tr = m.get("training") or {}
    for key in ("stage", "step"):
        if tr.get(key) is not None:
            parts.append(f"{key} {tr[key]}")
    return " · ".join(parts)
