"""The viewer page: one HTML file with its CSS, script and data inline; it loads nothing from the
network (a Content-Security-Policy says so to the browser too).

Model outputs are adversarial text: the data travels as JSON in a non-executed script element
with `<`, `>` and `&` escaped, and the script puts every string on the page as text
(`textContent`), never as markup.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dt_eval.reporting.viewer.load import ViewRun
from dt_eval.reporting.viewer.rows import AudioTable, view_data
from dt_eval.storage.rundir import json_text

AudioMode = Literal["file", "served", "embed"]
_HERE = Path(__file__).parent

# media: the runs' audio as file:// (a saved page), from this server ('self'), or embedded (data:)
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "media-src 'self' file: data:; img-src data:; base-uri 'none'; form-action 'none'")


@dataclass
class Page:
    html: str
    audio: list[Path]  # the files the page may play, by index (what the server may send)


# Fixed types for the usual clip formats: `mimetypes` answers wav as audio/x-wav or audio/wav
# depending on what other libraries registered in this process.
_AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
                ".opus": "audio/ogg", ".m4a": "audio/mp4", ".webm": "audio/webm"}


def audio_mime(path: Path) -> str:
    return (_AUDIO_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream")


def _audio_sources(paths: list[Path], mode: AudioMode) -> list[str]:
    if mode == "served":
        return [f"audio/{i}" for i in range(len(paths))]
    if mode == "embed":
        return [f"data:{audio_mime(p)};base64,{base64.b64encode(p.read_bytes()).decode('ascii')}" for p in paths]
    return [p.resolve().as_uri() for p in paths]


def script_json(data: object) -> str:
    """JSON safe inside <script>: no `</script>`, `<!--` or `&` sequences survive."""
    text = json_text(data, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def build_page(runs: list[ViewRun], audio: AudioMode = "file") -> Page:
    """The page for `runs`. audio="file": players point at the files (file://, for a saved page);
    "served": at /audio/N of `dt-eval view`'s server; "embed": the clips inside the page (base64)."""
    table = AudioTable()
    data = view_data(runs, table)
    data["audio"] = _audio_sources(table.paths, audio)
    data["audio_names"] = [p.name for p in table.paths]
    title = "dt-eval view: " + ", ".join(r["label"] for r in data["runs"])
    css = (_HERE / "viewer.css").read_text(encoding="utf-8")
    js = (_HERE / "viewer.js").read_text(encoding="utf-8")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP, quote=False)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{css}</style>
</head>
<body>
<header id="top">
  <h1>dt-eval view</h1>
  <div id="runs"></div>
</header>
<nav id="tabs" role="tablist">
  <button id="tab-samples" role="tab" aria-selected="true">Samples</button>
  <button id="tab-flips" role="tab" aria-selected="false" hidden>Flipped items</button>
</nav>
<main>
<section id="view-samples">
  <div class="filters">
    <label>Run <select id="f-run"></select></label>
    <label>Task <select id="f-task"></select></label>
    <label>Category <select id="f-cat"></select></label>
    <label>Show <select id="f-status"></select></label>
    <label>Repeat <select id="f-repeat"></select></label>
    <label class="grow">Search <input id="f-search" type="search" placeholder="question, output, reasoning, id ..."></label>
  </div>
  <div class="bar"><span id="count" aria-live="polite"></span><span class="pager" id="pager"></span></div>
  <div id="list"></div>
  <div class="bar"><span></span><span class="pager" id="pager-bottom"></span></div>
</section>
<section id="view-flips" hidden>
  <div class="filters">
    <label>A <select id="flip-a"></select></label>
    <label>B <select id="flip-b"></select></label>
    <label>Task <select id="flip-task"></select></label>
    <label>Direction <select id="flip-dir"></select></label>
  </div>
  <div id="flip-stats"></div>
  <div class="bar"><span id="flip-count" aria-live="polite"></span><span class="pager" id="flip-pager"></span></div>
  <div id="flip-list"></div>
</section>
</main>
<footer>dt-eval {html.escape(str(data["dt_eval_version"]))} · statuses: correct; wrong (a parsed wrong answer);
unparsed (no answer could be read); truncated (reasoning cut off); error (the request failed): these four are scored wrong;
data error (metadata the official scorer cannot score: outside the accuracy); ungraded (answers hidden).</footer>
<script type="application/json" id="dt-data">{script_json(data)}</script>
<script>{js}</script>
</body>
</html>
"""
    return Page(page, list(table.paths))


def write_page(runs: list[ViewRun], out: Path, embed_audio: bool = False) -> Page:
    page = build_page(runs, "embed" if embed_audio else "file")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page.html, encoding="utf-8")
    return page
