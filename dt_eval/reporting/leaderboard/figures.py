"""Analysis figures on a leaderboard page (e.g. a training run's): the figures that `dt-eval
analyze gating|tokens` list in gating.json / tokens.json (`figures`: [{file, caption}]), copied
into the site's `figures/` folder and shown in a "Figures" section of index.html.

    lb = build_leaderboard(runs, out)
    attach_figures(lb, out, ["analysis/tokens", "analysis/gating"])   # before write_all(lb, out)

`lb["figures"]` then lists each figure's path in the site, caption and source; the page is still
a function of leaderboard.json (render_html draws the section from it), so `verify` still holds.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

from dt_eval.errors import DtEvalError

FIGURES_DIR = "figures"
ANALYSIS_FILES = ("gating.json", "tokens.json")


class FiguresError(DtEvalError, ValueError):
    """An analysis output that cannot be read, or a figure it lists that is missing."""


def _analysis_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    found = [source / name for name in ANALYSIS_FILES if (source / name).is_file()]
    if not found:
        raise FiguresError(f"{source}: no {' or '.join(ANALYSIS_FILES)} (an output of `dt-eval analyze`)")
    return found


def collect_figures(sources: list[str | Path]) -> list[dict[str, Any]]:
    """The figures an analysis lists: each source is an output directory of `dt-eval analyze` or
    its gating.json / tokens.json. Returns [{"path": Path, "caption", "analysis", "source"}]."""
    out = []
    for src in sources:
        for f in _analysis_files(Path(src)):
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise FiguresError(f"cannot read {f}: {e}") from None
            listed = data.get("figures") if isinstance(data, dict) else None
            if not listed:
                continue  # an analysis run with --no-plots (or without matplotlib): nothing to show
            for fig in listed:
                name = Path(str(fig.get("file") or ""))
                path = f.parent / name
                if name.is_absolute() or ".." in name.parts or not path.is_file():
                    raise FiguresError(f"{f} lists a figure {str(fig.get('file'))!r} that is not a file beside it")
                out.append({"path": path, "caption": str(fig.get("caption") or ""), "analysis": f.stem,
                            "source": str(f)})
    return out


def attach_figures(lb: dict[str, Any], out_dir: str | Path, sources: list[str | Path]) -> list[dict[str, str]]:
    """Copy the analyses' figures into OUT/figures/<n>-<analysis>/ and list them in `lb["figures"]`
    ({"file": path in the site, "caption", "source"}), for the page's Figures section."""
    figs = collect_figures(sources)
    out = Path(out_dir)
    listed: list[dict[str, str]] = []
    folders: dict[str, str] = {}
    for fig in figs:
        folder = folders.setdefault(fig["source"], f"{len(folders) + 1}-{fig['analysis']}")
        dest = out / FIGURES_DIR / folder / fig["path"].name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fig["path"], dest)
        listed.append({"file": dest.relative_to(out).as_posix(), "caption": fig["caption"], "source": fig["source"]})
    lb["figures"] = listed
    return listed


def figures_html(figures: list[dict[str, Any]] | None) -> list[str]:
    """The page's Figures section (nothing without figures), in the layout of its Plots."""
    if not figures:
        return []
    e = html.escape
    out = ['<h2>Figures</h2><div class="plots">']
    for fig in figures:
        out.append(f'<figure><a href="{e(fig["file"])}"><img alt="{e(Path(fig["file"]).name)}" src="{e(fig["file"])}">'
                   f'</a><figcaption>{e(fig["caption"])} <span class="muted">({e(fig["source"])})</span>'
                   "</figcaption></figure>")
    out.append("</div>")
    return out
