"""Render a built leaderboard: Markdown (README / paper appendix), LaTeX (booktabs tables for a
paper), CSV, JSON, a static HTML page with sortable tables (vanilla JS, no network), and PNG plots
(matplotlib, Agg backend).

Everything is a deterministic function of the leaderboard JSON (the plots for one matplotlib and
FreeType), so `verify` renders it again and compares. matplotlib is imported only by the plots.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path
from typing import Any

from dt_eval.reporting.leaderboard.build import (  # MARKERS: re-exported for callers
    ALPHA,
    MARKERS,
    REPORTED_MARK,
    SIGNIFICANT_MARK,
)
from dt_eval.reporting.leaderboard.cells import fmt, fmt_delta, settings_text  # noqa: F401  (re-exported)
from dt_eval.reporting.leaderboard.figures import figures_html
from dt_eval.reporting.leaderboard.published import check_summary

JSON_FILE = "leaderboard.json"
MD_FILE = "leaderboard.md"
TEX_FILE = "leaderboard.tex"
CSV_FILE = "leaderboard.csv"
HTML_FILE = "index.html"
PLOTS_DIR = "plots"


# ---------------------------------------------------------------------------------------------
# formatting


def ref_label(i: int) -> str:
    return f"R{i + 1}"


def ci_suffix(cell: dict[str, Any] | None) -> str:
    """' [71.20, 76.70]' for a measured accuracy cell with an interval, '' otherwise."""
    if not cell or cell.get("ci_low") is None or cell.get("ci_high") is None:
        return ""
    return f" [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"


def sig_mark(row: dict[str, Any]) -> str:
    vs = row.get("vs_best") or {}
    return SIGNIFICANT_MARK if vs.get("status") == "tested" and vs.get("significant") else ""


def vs_best_text(row: dict[str, Any]) -> str:
    """The 'vs best measured' cell: the paired difference, its CI and p, or why there is no test."""
    from dt_eval.scoring.stats import format_p

    vs = row.get("vs_best") or {}
    if row.get("kind") == "reported":
        return "–"  # no per-item outputs to test (the legend says so)
    if vs.get("status") == "best":
        return "best measured"
    if vs.get("status") == "tested":
        return (f"{vs['diff']:+.2f} [{vs['ci_low']:+.2f}, {vs['ci_high']:+.2f}], {format_p(vs['p'])}"
                f"{' ' + SIGNIFICANT_MARK if vs['significant'] else ''}")
    return f"not tested: {vs.get('why', '')}" if vs.get("why") else "–"


def main_cells(lb: dict[str, Any], table: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The plain-text cells of one row of a ranked table (every format renders these)."""
    measured = row["kind"] == "measured"
    cells = (lb["measured_cells"] if measured else lb["reported_cells"])[row["row"]]
    metrics = {c["key"]: c["metric"] for c in lb["columns"]}
    values = []
    for key in table["columns"]:
        c = cells.get(key)
        if c is None:
            values.append("–")
            continue
        text = fmt(metrics[key], c["value"])
        if key == table["primary"]:
            text += ci_suffix(c) + c.get("marker", "") + sig_mark(row)
        else:
            text += c.get("marker", "")
        values.append(text)
    primary = cells.get(table["primary"]) or {}
    if measured:
        m = lb["measured"][row["row"]]
        settings = settings_text(m)
        return {"model": m["name"], "source": f"measured: {m['run']}" + (f" ({settings})" if settings else ""),
                "values": values, "vs_best": vs_best_text(row),
                "items": primary.get("subset") or (str(primary["n"]) if primary.get("n") is not None else "–")}
    r = lb["reported"][row["row"]]
    score = r["scores"].get(table["primary"]) or {}
    checked = score.get("checked") or check_summary(r)
    return {"model": f"{r['model']} {REPORTED_MARK}", "source": f"reported: {r['citation']} [{ref_label(row['row'])}], "
            f"{checked}", "values": values, "vs_best": vs_best_text(row), "items": "–"}


def main_legend() -> str:
    return ("Rows are ranked by the table's first column; equal numbers share a rank. Measured rows: "
            "accuracy [95% CI, Wilson score interval over the scored items; with repeats, at the effective "
            f"sample size of the repeat-averaged items]. {REPORTED_MARK} reported by its source (citation and "
            "check status in the Source column and the references), not measured here: no CI, and no test, "
            "since no per-item outputs are published. vs best measured: the row's accuracy minus the best "
            "measured row's on the items both runs scored, with its 95% CI (paired bootstrap over items) and "
            f"p (McNemar's exact test; a paired bootstrap test with repeats); {SIGNIFICANT_MARK} p < {ALPHA:g}, "
            "not corrected for multiple comparisons; runs on another data file are not tested. Items: the "
            "scored items, or why the number is not one on the whole benchmark (a subset, or a file that is "
            "not a known release).")


def short_sha(s: str | None) -> str:
    return f"{s[:12]}…" if s else "–"


def _columns(lb: dict[str, Any], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in lb["columns"] if any(c["key"] in row for row in cells)]


def _metric(lb: dict[str, Any], key: str) -> str:
    return next(c["metric"] for c in lb["columns"] if c["key"] == key)


def _cell_text(col: dict[str, Any], cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    return fmt(col["metric"], cell["value"], cell.get("std"), cell.get("k")) + cell.get("marker", "")


def _marker_rank(marker: str) -> tuple[int, int]:
    if not marker:
        return (0, 0)
    if marker in MARKERS:
        return (1, MARKERS.index(marker))
    return (2, int(marker.strip("[]")) if marker.strip("[]").isdigit() else 0)


def _legend(lb: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per column: [(marker or '' for the reference, description)] for groups present."""
    out = []
    for col in lb["columns"]:
        present = []
        for cells in lb["measured_cells"] + lb["reported_cells"]:
            c = cells.get(col["key"])
            if c and c["group"] not in present:
                present.append(c["group"])
        items = []
        for g in sorted(present, key=lambda g: _marker_rank(lb["groups"][g]["marker"])):
            grp = lb["groups"][g]
            items.append((grp["marker"], grp["description"]))
        out.append((col["title"], items))
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_escape(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return lines


def render_markdown(lb: dict[str, Any], heading_level: int = 2) -> str:
    h = "#" * heading_level
    L: list[str] = []
    L.append(f"{h} {lb['title']}")
    L.append("")
    L.append(f"Built with dt-eval {lb['dt_eval_version']} ({lb['built_at']}). Measured rows are recomputed from "
             "each run's `samples.jsonl`; `dt-eval leaderboard verify` recomputes them again. Reported rows "
             f"({REPORTED_MARK}) are published numbers, ranked beside the measured ones and always marked, with "
             "their sources. Accuracy in %, with its 95% CI on measured rows; MMAR-Rubrics on the challenge's "
             "0-100 scale; hybrid = mean gated hybrid reasoning reward (0-1). Marked numbers (‡, §, ...) were "
             "computed on other data, items, extraction or judges than the unmarked numbers of their column: "
             "see the comparability notes.")
    L.append("")
    if lb.get("warnings"):
        L.append("**Not the whole benchmark:** " + "; ".join(lb["warnings"]) + ".")
        L.append("")

    for table in lb.get("main_tables") or []:
        L.append(f"{h}# {table['title']}")
        L.append("")
        titles = {c["key"]: c["title"] for c in lb["columns"]}
        heads = [f"{titles[table['primary']]} (95% CI)"] + [titles[k] for k in table["columns"][1:]]
        rows = []
        for row in table["rows"]:
            c = main_cells(lb, table, row)
            rank = str(row["rank"]) if row["rank"] is not None else "–"
            rows.append([rank, c["model"], c["source"], *c["values"], c["vs_best"], c["items"]])
        L += _md_table(["Rank", "Model", "Source", *heads, "vs best measured", "Items"], rows,
                       ["r", "l", "l"] + ["r"] * len(heads) + ["l", "l"])
        L.append("")
    if lb.get("main_tables"):
        L.append(main_legend())
        L.append("")

    if lb["diffs"]:
        L.append(f"{h}# Measured − reported (same model)")
        L.append("")
        rows = []
        titles = {c["key"]: c["title"] for c in lb["columns"]}
        for d in lb["diffs"]:
            m, r = lb["measured"][d["measured"]], lb["reported"][d["reported"]]
            metric = _metric(lb, d["column"])
            rows.append([m["name"], f"`{m['run']}`", titles[d["column"]],
                         fmt(metric, d["measured_value"]) + d["measured_marker"],
                         fmt(metric, d["reported_value"]) + d["reported_marker"],
                         fmt_delta(metric, d["delta"]) + ("" if d["same_group"] else " (not like for like)"),
                         ref_label(d["reported"])])
        L += _md_table(["Model", "Run", "Column", "Measured", "Reported", "Δ", "Source"], rows,
                       ["l", "l", "l", "r", "r", "r", "l"])
        L.append("")

    if lb["category_tables"]:
        L.append(f"{h}# Per-category accuracy (measured)")
        L.append("")
        for tab in lb["category_tables"]:
            L.append(f"**{tab['title']}**")
            L.append("")
            rows = []
            for row in tab["rows"]:
                m = lb["measured"][row["measured"]]
                mark = _main_marker(lb, row)
                t = m["tasks"][row["task"]]
                rows.append([m["name"], f"`{m['run']}`{mark}"]
                            + [_cat_text(row["values"].get(k), t["repeats"]) for k in tab["keys"]])
            L += _md_table(["Model", "Run"] + tab["keys"], rows, ["l", "l"] + ["r"] * len(tab["keys"]))
            L.append("")

    if lb["measured"]:
        L.append(f"{h}# Run details")
        L.append("")
        rows = []
        for m in lb["measured"]:
            for name, t in m["tasks"].items():
                k = t["repeats"]
                acc = t.get("accuracy") or {}
                raw = t.get("official_raw") or {}
                ci = t.get("accuracy_ci") or {}
                rows.append([m["name"], f"`{m['run']}`", name, str(t["items"]), str(k),
                             fmt("accuracy", acc.get("mean"), acc.get("std"), k),
                             ci_suffix({"ci_low": ci.get("low"), "ci_high": ci.get("high")}).strip() or "–",
                             f"{ci['stderr']:.2f}" if ci.get("stderr") is not None else "–",
                             fmt("accuracy", raw.get("mean"), raw.get("std"), k),
                             str(t["unparsed"]), str(t["errors"]),
                             fmt("accuracy", t.get("pass_at_k")) if k > 1 else "–",
                             fmt("accuracy", t.get("majority_vote")) if k > 1 else "–",
                             f"`{short_sha(t['data_sha256'])}`", f"`{short_sha(m['samples_sha256'])}`"])
        L += _md_table(["Model", "Run", "Task", "Items", "Repeats", "Accuracy", "95% CI", "Stderr", "Official raw",
                        "Unparsed", "Errors", "pass@k", "maj@k", "Data sha256", "samples.jsonl sha256"], rows,
                       ["l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l", "l"])
        L.append("")
        L.append("Accuracy: the official match on the final answer dt-eval extracted (mean ± std over repeats); "
                 "95% CI: Wilson score interval (at the effective sample size with repeats); stderr: the standard "
                 "error of the mean over items (lm-eval's definition); official raw: the official script's match on "
                 "the whole post-reasoning output (no extraction).")
        L.append("")

    L.append(f"{h}# Comparability notes")
    L.append("")
    for title, items in _legend(lb):
        if not items:
            continue
        L.append(f"- **{title}**")
        for marker, desc in items:
            L.append(f"  - {marker or 'unmarked'}: {desc}")
    L.append("")

    if lb["reported"]:
        L.append(f"{h}# References")
        L.append("")
        for i, r in enumerate(lb["reported"]):
            note = f" Checked against the source: {check_summary(r)}."
            if r.get("note"):
                note += f" Note: {r['note']}."
            L.append(f"- {ref_label(i)} {r['model']}: {r['citation']}. <{r['source']}>.{note}")
        L.append("")
    return "\n".join(L)


def _main_marker(lb: dict[str, Any], row: dict[str, Any]) -> str:
    cells = lb["measured_cells"][row["measured"]]
    for c in cells.values():
        if c.get("task") == row["task"] and ":" not in _col_of(cells, c):
            return c.get("marker", "")
    return ""


def _col_of(cells: dict[str, Any], cell: dict[str, Any]) -> str:
    return next(k for k, v in cells.items() if v is cell)


def _cat_text(v: dict[str, Any] | None, k: int) -> str:
    """A category's accuracy (mean ± std over repeats) and its 95% CI."""
    if not v or v.get("mean") is None:
        return "–"
    return fmt("accuracy", v["mean"], v.get("std"), k) + ci_suffix(v)


# ---------------------------------------------------------------------------------------------
# CSV (long format: one row per number)

CSV_HEADER = ["kind", "model", "run", "column", "column_title", "metric", "value", "std", "repeats", "items",
              "marker", "comparability", "reference", "citation", "source", "checked",
              "ci_low", "ci_high", "ci_method", "rank", "p_vs_best", "test_vs_best", "subset"]


def _ranks(lb: dict[str, Any]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """(kind, row, column key) -> its row of a ranked table (the table's first column only)."""
    return {(r["kind"], r["row"], t["primary"]): r for t in lb.get("main_tables") or [] for r in t["rows"]}


def render_csv(lb: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    cols = {c["key"]: c for c in lb["columns"]}
    ranks = _ranks(lb)

    def num(x: float | None, metric: str = "accuracy") -> str:
        if x is None:
            return ""
        return f"{x:.6f}".rstrip("0").rstrip(".") if metric == "hybrid" else f"{x:.4f}".rstrip("0").rstrip(".")

    def rank_cols(kind: str, i: int, key: str) -> list[Any]:
        r = ranks.get((kind, i, key))
        if r is None:
            return ["", "", ""]
        vs = r.get("vs_best") or {}
        if vs.get("status") == "tested":
            return [r["rank"] or "", f"{vs['p']:.6g}", vs["method"]]
        return [r["rank"] or "", "", vs.get("status", "")]

    for i, (m, cells) in enumerate(zip(lb["measured"], lb["measured_cells"])):
        for key, c in cells.items():
            col = cols[key]
            w.writerow(["measured", m["name"], m["run"], key, col["title"], col["metric"],
                        num(c["value"], col["metric"]),
                        num(c.get("std"), col["metric"]) if (c.get("k") or 0) > 1 else "", c.get("k") or "",
                        c.get("n") or "", c["marker"], lb["groups"][c["group"]]["description"], "", "", "", "",
                        num(c.get("ci_low")), num(c.get("ci_high")), c.get("ci_method") or "",
                        *rank_cols("measured", i, key), c.get("subset") or ""])
    for tab in lb["category_tables"]:
        for row in tab["rows"]:
            m = lb["measured"][row["measured"]]
            t = m["tasks"][row["task"]]
            method = (t.get("accuracy_ci") or {}).get("method") or ""
            for k in tab["keys"]:
                v = row["values"].get(k)
                if not v:
                    continue
                w.writerow(["measured", m["name"], m["run"], f"{row['task']}[{tab['field']}={k}]",
                            f"{tab['title']}: {k}", "accuracy", num(v.get("mean")),
                            num(v.get("std")) if t["repeats"] > 1 else "", t["repeats"], v.get("total") or "",
                            _main_marker(lb, row), "", "", "", "", "",
                            num(v.get("ci_low")), num(v.get("ci_high")), method if v.get("ci_low") is not None else "",
                            "", "", "", ""])
    for i, (r, cells) in enumerate(zip(lb["reported"], lb["reported_cells"])):
        for key, c in cells.items():
            col = cols[key]
            w.writerow(["reported", r["model"], "", key, col["title"], col["metric"],
                        num(c["value"], col["metric"]), "", "", "", c["marker"],
                        lb["groups"][c["group"]]["description"], ref_label(i), r["citation"], r["source"],
                        (r["scores"].get(key) or {}).get("checked") or check_summary(r),
                        "", "", "", *rank_cols("reported", i, key), ""])
    for d in lb["diffs"]:
        m, r = lb["measured"][d["measured"]], lb["reported"][d["reported"]]
        col = cols[d["column"]]
        w.writerow(["delta", m["name"], m["run"], d["column"], col["title"], col["metric"],
                    num(d["delta"], col["metric"]), "", "", "", "",
                    "measured minus reported" + ("" if d["same_group"] else " (not like for like)"),
                    ref_label(d["reported"]), r["citation"], r["source"],
                    (r["scores"].get(d["column"]) or {}).get("checked") or check_summary(r),
                    "", "", "", "", "", "", ""])
    return buf.getvalue()


def render_json(lb: dict[str, Any]) -> str:
    return json.dumps(lb, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d8dee4; --head:#f3f5f7; --rep:#fbf7ee; --accent:#0b5cad; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1400px; }
h1 { font-size: 24px; margin: 0 0 6px; } h2 { font-size: 18px; margin: 32px 0 8px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
p.lead { color: var(--muted); max-width: 980px; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 10px; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; }
td.src, th.src { white-space: normal; min-width: 18em; max-width: 30em; overflow-wrap: anywhere; }
td.note, th.note { white-space: normal; min-width: 9em; max-width: 16em; }
table.ranked tbody tr.reported { background: var(--rep); }
p.warn { background: #fff4e5; border-left: 4px solid #e08a00; padding: 6px 10px; max-width: 980px; }
p.legend-main { color: var(--muted); font-size: 12px; max-width: 980px; }
thead th { background: var(--head); position: sticky; top: 0; font-weight: 600; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\2195"; color: #a0a8b0; font-size: 11px; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--accent); }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--accent); }
tbody tr:hover { background: #f7fafc; }
table.reported tbody tr { background: var(--rep); }
.badge { display: inline-block; font-size: 11px; padding: 1px 6px; border-radius: 9px; margin-left: 6px;
         vertical-align: 1px; }
.badge.reported { background: #f0e2c0; color: #6b4e00; }
.badge.measured { background: #d7ecff; color: #0b4a8a; }
.mark { color: #b3261e; font-weight: 600; }
.muted { color: var(--muted); }
code { font-size: 12px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure { margin: 0; border: 1px solid var(--line); padding: 8px; background: #fff;
                flex: 1 1 560px; max-width: 820px; }
.plots img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
ul.legend li { margin: 2px 0; }
"""

_JS = """
(function () {
  function cellValue(row, idx, type) {
    var td = row.cells[idx];
    if (!td) return null;
    var v = td.getAttribute('data-v');
    if (v === null || v === '') return null;
    return type === 'num' ? parseFloat(v) : v.toLowerCase();
  }
  function sortTable(table, idx, th) {
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var type = th.getAttribute('data-type') || 'text';
    var cur = th.getAttribute('aria-sort');
    var dir;
    if (cur === 'descending') dir = 'ascending';
    else if (cur === 'ascending') dir = 'descending';
    else dir = type === 'num' ? 'descending' : 'ascending';
    var sign = dir === 'ascending' ? 1 : -1;
    rows.sort(function (a, b) {
      var x = cellValue(a, idx, type), y = cellValue(b, idx, type);
      if (x === null && y === null) return a.getAttribute('data-i') - b.getAttribute('data-i');
      if (x === null) return 1;
      if (y === null) return -1;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a.getAttribute('data-i') - b.getAttribute('data-i');
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', dir);
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
      th.tabIndex = 0;
      th.title = 'Sort by ' + th.textContent.trim();
      th.addEventListener('click', function () { sortTable(table, idx, th); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortTable(table, idx, th); }
      });
    });
  });
})();
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _num_td(text: str, value: float | None, marker: str = "", title: str | None = None,
            cls: str | None = None) -> str:
    v = "" if value is None else repr(float(value))
    t = f' title="{_e(title)}"' if title else ""
    mk = f'<span class="mark">{_e(marker)}</span>' if marker else ""
    return f'<td class="num{" " + cls if cls else ""}" data-v="{v}"{t}>{_e(text)}{mk}</td>'


def _txt_td(text: str, sort: str | None = None, raw_html: str | None = None, cls: str | None = None) -> str:
    body = raw_html if raw_html is not None else _e(text)
    c = f' class="{cls}"' if cls else ""
    return f'<td{c} data-v="{_e(sort if sort is not None else text)}">{body}</td>'


def _thead(cols: list[tuple[str, str]], wrap: dict[int, str] | None = None) -> str:
    """Header cells; `wrap` maps a column to the class of its long text (a citation: "src", a note:
    "note") that wraps instead of widening the table."""
    wrap = wrap or {}
    ths = "".join(f'<th data-type="{t}" class="{" ".join(x for x in ("num" if t == "num" else "", wrap.get(i, "")) if x)}" '
                  f'scope="col">{_e(name)}</th>' for i, (name, t) in enumerate(cols))
    return f"<thead><tr>{ths}</tr></thead>"


def render_html(lb: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The page; `plots` maps a plot name to its PNG as a data: URI (embedded, no external files)."""
    plots = plots or {}
    groups = lb["groups"]
    out: list[str] = []
    out.append("<!DOCTYPE html>")
    out.append('<html lang="en"><head><meta charset="utf-8">')
    out.append('<meta name="viewport" content="width=device-width, initial-scale=1">')
    out.append(f"<title>{_e(lb['title'])}</title><style>{_CSS}</style></head><body>")
    out.append(f"<h1>{_e(lb['title'])}</h1>")
    out.append(f'<p class="lead">Built with dt-eval {_e(lb["dt_eval_version"])} ({_e(lb["built_at"])}). '
               "<b>Measured</b> rows were recomputed from each run's <code>samples.jsonl</code> "
               "(check with <code>dt-eval leaderboard verify</code>); <b>reported</b> rows "
               f"({_e(REPORTED_MARK)}) are published numbers with their sources, ranked in the same tables and "
               "always marked. Accuracy in %, with its 95% CI on measured rows. Numbers with a "
               "<span class=\"mark\">red mark</span> were computed on other data, items, extraction or judges "
               "than the unmarked numbers of their column (see comparability notes). Click a column header to "
               "sort.</p>")
    if lb.get("warnings"):
        out.append('<p class="warn" id="subset-warning"><b>Not the whole benchmark:</b> '
                   + "; ".join(_e(w) for w in lb["warnings"]) + ".</p>")

    titles = {c["key"]: c["title"] for c in lb["columns"]}
    for ti, table in enumerate(lb.get("main_tables") or []):
        out.append(f"<h2>{_e(table['title'])}</h2>")
        out.append(f'<div class="wrap"><table class="sortable ranked" id="main-{ti}" data-key="{_e(table["key"])}">')
        heads = [(f"{titles[table['primary']]} (95% CI)", "num")] + [(titles[k], "num") for k in table["columns"][1:]]
        n = 3 + len(heads)
        out.append(_thead([("Rank", "num"), ("Model", "text"), ("Source", "text"), *heads,
                           ("vs best measured", "num"), ("Items", "text")], wrap={2: "src", n: "note", n + 1: "note"}))
        out.append("<tbody>")
        for i, row in enumerate(table["rows"]):
            c = main_cells(lb, table, row)
            kind = row["kind"]
            src_cells = (lb["measured_cells"] if kind == "measured" else lb["reported_cells"])[row["row"]]
            badge = f'<span class="badge {kind}">{kind}</span>'
            name = c["model"]
            tds = [_num_td(str(row["rank"]) if row["rank"] is not None else "–", row["rank"]),
                   _txt_td(name, raw_html=_e(name) + badge), _txt_td(c["source"], cls="src")]
            for key, text in zip(table["columns"], c["values"]):
                cell = src_cells.get(key)
                tds.append(_num_td(text, cell["value"] if cell else None,
                                   title=groups[cell["group"]]["description"] if cell else None))
            vs = row.get("vs_best") or {}
            tds.append(_num_td(c["vs_best"], vs.get("diff") if vs.get("status") == "tested" else
                               (0.0 if vs.get("status") == "best" else None), cls="note"))
            tds.append(_txt_td(c["items"], cls="note"))
            out.append(f'<tr class="{kind}" data-i="{i}">' + "".join(tds) + "</tr>")
        out.append("</tbody></table></div>")
    if lb.get("main_tables"):
        out.append(f'<p class="legend-main">{_e(main_legend())}</p>')

    if lb["diffs"]:
        titles = {c["key"]: c["title"] for c in lb["columns"]}
        out.append("<h2>Measured − reported (same model)</h2>")
        out.append('<div class="wrap"><table class="sortable" id="diffs">')
        out.append(_thead([("Model", "text"), ("Run", "text"), ("Column", "text"), ("Measured", "num"),
                           ("Reported", "num"), ("Δ", "num"), ("Source", "text")]))
        out.append("<tbody>")
        for i, d in enumerate(lb["diffs"]):
            m, r = lb["measured"][d["measured"]], lb["reported"][d["reported"]]
            metric = _metric(lb, d["column"])
            out.append(f'<tr data-i="{i}">' + "".join([
                _txt_td(m["name"]), _txt_td(m["run"], raw_html=f"<code>{_e(m['run'])}</code>"),
                _txt_td(titles[d["column"]]),
                _num_td(fmt(metric, d["measured_value"]), d["measured_value"], d["measured_marker"]),
                _num_td(fmt(metric, d["reported_value"]), d["reported_value"], d["reported_marker"]),
                _num_td(fmt_delta(metric, d["delta"]) + ("" if d["same_group"] else " (not like for like)"),
                        d["delta"]),
                _txt_td(r["citation"], raw_html=f'<a href="{_e(r["source"])}">{_e(ref_label(d["reported"]))}</a>'),
            ]) + "</tr>")
        out.append("</tbody></table></div>")

    if lb["category_tables"]:
        out.append("<h2>Per-category accuracy (measured)</h2>")
        for ti, tab in enumerate(lb["category_tables"]):
            out.append(f"<h3>{_e(tab['title'])}</h3>")
            out.append(f'<div class="wrap"><table class="sortable" id="cat-{ti}">')
            out.append(_thead([("Model", "text"), ("Run", "text")] + [(k, "num") for k in tab["keys"]]))
            out.append("<tbody>")
            for i, row in enumerate(tab["rows"]):
                m = lb["measured"][row["measured"]]
                mark = _main_marker(lb, row)
                k = m["tasks"][row["task"]]["repeats"]
                tds = [_txt_td(m["name"]), _txt_td(m["run"], raw_html=f"<code>{_e(m['run'])}</code>"
                                                   + (f'<span class="mark">{_e(mark)}</span>' if mark else ""))]
                for key in tab["keys"]:
                    v = row["values"].get(key)
                    tds.append(_num_td(_cat_text(v, k), v.get("mean") if v else None))
                out.append(f'<tr data-i="{i}">' + "".join(tds) + "</tr>")
            out.append("</tbody></table></div>")

    if plots:
        out.append("<h2>Plots</h2><div class=\"plots\">")
        for name, uri in plots.items():
            out.append(f'<figure><img alt="{_e(name)}" src="{uri}"><figcaption>{_e(plot_caption(lb, name))}'
                       "</figcaption></figure>")
        out.append("</div>")
    out.extend(figures_html(lb.get("figures")))  # analysis figures (dt-eval analyze), when attached

    if lb["measured"]:
        out.append("<h2>Run details</h2>")
        out.append('<div class="wrap"><table class="sortable" id="details">')
        out.append(_thead([("Model", "text"), ("Run", "text"), ("Task", "text"), ("Items", "num"), ("Repeats", "num"),
                           ("Accuracy", "num"), ("95% CI", "text"), ("Official raw", "num"), ("Unparsed", "num"),
                           ("Errors", "num"), ("Data sha256", "text"), ("samples.jsonl sha256", "text"),
                           ("Training", "text")]))
        out.append("<tbody>")
        i = 0
        for m in lb["measured"]:
            tr = m.get("training")
            tr_text = json.dumps(tr, ensure_ascii=False, sort_keys=True) if tr else "–"
            for name, t in m["tasks"].items():
                acc = t.get("accuracy") or {}
                raw = t.get("official_raw") or {}
                k = t["repeats"]
                out.append(f'<tr data-i="{i}">' + "".join([
                    _txt_td(m["name"]), _txt_td(m["run"], raw_html=f"<code>{_e(m['run'])}</code>"), _txt_td(name),
                    _num_td(str(t["items"]), t["items"]), _num_td(str(k), k),
                    _num_td(fmt("accuracy", acc.get("mean"), acc.get("std"), k), acc.get("mean")),
                    _txt_td(ci_suffix({"ci_low": (t.get("accuracy_ci") or {}).get("low"),
                                       "ci_high": (t.get("accuracy_ci") or {}).get("high")}).strip() or "–"),
                    _num_td(fmt("accuracy", raw.get("mean"), raw.get("std"), k), raw.get("mean")),
                    _num_td(str(t["unparsed"]), t["unparsed"]), _num_td(str(t["errors"]), t["errors"]),
                    _txt_td(t["data_sha256"] or "", raw_html=f"<code>{_e(short_sha(t['data_sha256']))}</code>"),
                    _txt_td(m["samples_sha256"], raw_html=f"<code>{_e(short_sha(m['samples_sha256']))}</code>"),
                    _txt_td(tr_text, raw_html=f'<code>{_e(tr_text[:80])}</code>'),
                ]) + "</tr>")
                i += 1
        out.append("</tbody></table></div>")

    out.append("<h2>Comparability notes</h2><ul class=\"legend\">")
    for title, items in _legend(lb):
        if not items:
            continue
        lis = "".join("<li>" + (f'<span class="mark">{_e(mk)}</span>' if mk else "unmarked") + f": {_e(desc)}</li>"
                      for mk, desc in items)
        out.append(f"<li><b>{_e(title)}</b><ul>{lis}</ul></li>")
    out.append("</ul>")

    if lb["reported"]:
        out.append("<h2>References</h2><ol>")
        for r in lb["reported"]:
            note = f" — checked against the source: {_e(check_summary(r))}"
            if r.get("note"):
                note += f". Note: {_e(r['note'])}"
            out.append(f'<li>{_e(r["model"])}: {_e(r["citation"])}. <a href="{_e(r["source"])}">{_e(r["source"])}</a>'
                       f"{note}</li>")
        out.append("</ol>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"


_IMG = re.compile(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"')
_NAMED_IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]*)"')


def strip_images(page: str) -> str:
    """The page without its embedded PNGs (compared apart: see `embedded_images`)."""
    return _IMG.sub('src="data:image/png;base64,"', page)


def embedded_images(page: str) -> dict[str, list[bytes]]:
    """The PNGs the page embeds, by plot name (the img alt text)."""
    out: dict[str, list[bytes]] = {}
    for alt, b64 in _NAMED_IMG.findall(page):
        try:
            data = base64.b64decode(b64, validate=True)
        except ValueError:
            data = b""
        out.setdefault(html.unescape(alt), []).append(data)
    return out


# ---------------------------------------------------------------------------------------------
# Plots

def plot_caption(lb: dict[str, Any], name: str) -> str:
    if name == "accuracy-vs-reasoning":
        return ("Accuracy vs reasoning quality (MMAR-Rubrics score, mean hybrid reward; a panel per score that "
                "the runs or sources have). Filled: measured with dt-eval; hollow: reported.")
    for tab in lb["category_tables"]:
        if name == f"categories-{tab['family']}-{tab['field']}":
            return (f"{tab['title']}: accuracy per category, one bar per run (error bars: 95% CI, Wilson score "
                    "interval).")
    return name


def _plot_points(lb: dict[str, Any]) -> tuple[list[tuple], list[tuple]]:
    """(label, x, y, kind) points for the rubrics and the hybrid panel."""
    rub, hyb = [], []
    titles = {c["key"]: c["title"] for c in lb["columns"]}
    for kind, rows, cells_list in (("measured", lb["measured"], lb["measured_cells"]),
                                   ("reported", lb["reported"], lb["reported_cells"])):
        for row, cells in zip(rows, cells_list):
            label = row.get("name") or row.get("model")
            if kind == "measured":
                label = f"{label} ({row['run']})"
            for key, c in cells.items():
                base, _, metric = key.partition(":")
                acc = cells.get(base)
                if acc is None or metric not in ("rubrics", "hybrid"):
                    continue
                title = titles.get(base, base)
                point = (f"{label} · {title}", c["value"], acc["value"], kind)
                (rub if metric == "rubrics" else hyb).append(point)
    return rub, hyb


def plot_renderer() -> dict[str, str]:
    """What the plot pixels depend on besides the JSON: verify names it when a fresh render differs."""
    import matplotlib
    from matplotlib import ft2font

    return {"matplotlib": matplotlib.__version__, "freetype": ft2font.__freetype_version__}


def render_plots(lb: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write PNGs under out_dir/plots; returns {name: path}.

    A pure function of `lb` for one matplotlib/FreeType: matplotlib's own defaults (no user
    matplotlibrc or style) and only its bundled font, so `verify` can render the plots again and
    compare them with the files."""
    plots_dir = out_dir / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with plot_figures(lb) as figures:
        for name, fig in figures.items():
            path = plots_dir / f"{name}.png"
            fig.savefig(path, dpi=110, metadata={"Software": None})
            written[name] = path
    return written


class plot_figures:  # a context manager used like a function, hence the name
    """`with plot_figures(lb) as figs:` the plots as matplotlib figures ({name: Figure}), drawn with
    matplotlib's defaults and its bundled font; closed on exit."""

    def __init__(self, lb: dict[str, Any]):
        self.lb = lb

    def __enter__(self) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self._plt = plt
        self._rc = matplotlib.rc_context()
        self._rc.__enter__()
        matplotlib.rcdefaults()
        # one bundled font, no fallback to whatever fonts the machine has
        matplotlib.rcParams["font.family"] = ["DejaVu Sans"]
        self.figures = _draw_plots(self.lb, plt)
        return self.figures

    def __exit__(self, *exc: object) -> None:
        for fig in self.figures.values():
            self._plt.close(fig)
        self._rc.__exit__(*exc)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=True)) or text


def _draw_plots(lb: dict[str, Any], plt: Any) -> dict[str, Any]:
    """The figures. No point labels on the axes (they collide): numbers and names are in legends
    outside the axes (layout="constrained" keeps every text inside the figure), long labels are
    wrapped, and a panel is drawn only for a score some row has."""
    figures: dict[str, Any] = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shapes = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]

    rub, hyb = _plot_points(lb)
    panels = [(pts, xlabel, title) for pts, xlabel, title in (
        (rub, "MMAR-Rubrics score (0-100)", "Accuracy vs MMAR-Rubrics"),
        (hyb, "mean hybrid reasoning reward (0-1)", "Accuracy vs hybrid reasoning reward")) if pts]
    if panels:
        n_leg = max(len(p[0]) for p in panels)
        fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2 + 0.32 * n_leg),
                                 layout="constrained", squeeze=False)
        for ax, (pts, xlabel, title) in zip(axes[0], panels):
            for i, (label, x, y, kind) in enumerate(pts):
                color, shape = colors[i % len(colors)], shapes[i % len(shapes)]  # coinciding points stay apart
                style = {"s": 60, "marker": shape, "linewidth": 0.8, "zorder": 3}
                if kind == "measured":
                    ax.scatter([x], [y], color=color, edgecolor="black", label=_wrap(label, 48), **style)
                else:
                    ax.scatter([x], [y], facecolor="none", edgecolor=color, label=_wrap(f"{label} (reported)", 48),
                               **(style | {"linewidth": 1.6}))
            xs, ys = [p[1] for p in pts], [p[2] for p in pts]
            padx = max(0.05 * (max(xs) - min(xs)), 0.02 if max(xs) <= 1.0 else 1.0)
            pady = max(0.08 * (max(ys) - min(ys)), 1.0)
            ax.set_xlim(min(xs) - padx, max(xs) + padx)
            ax.set_ylim(min(ys) - pady, max(ys) + pady)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("accuracy (%)")
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
        figures["accuracy-vs-reasoning"] = fig

    for tab in lb["category_tables"]:
        keys, rows = tab["keys"], tab["rows"]
        labels = [_wrap(k, 14) for k in keys]
        widest = max((len(line) for lab in labels for line in lab.split("\n")), default=4)
        slot = max(0.8, 0.085 * widest) * (1 + 0.12 * max(0, len(rows) - 2))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.4 + slot * len(keys)), 4.6 + 0.3 * ((len(rows) + 1) // 2)),
                               layout="constrained")
        width = 0.8 / max(1, len(rows))
        for j, row in enumerate(rows):
            m = lb["measured"][row["measured"]]
            xs, vals, lo, hi = [], [], [], []
            for i, c in enumerate(keys):
                v = row["values"].get(c) or {}
                if v.get("mean") is None:
                    continue
                xs.append(i + (j - (len(rows) - 1) / 2) * width)
                vals.append(v["mean"])
                low, high = v.get("ci_low"), v.get("ci_high")
                lo.append(max(0.0, v["mean"] - low) if low is not None else 0.0)
                hi.append(max(0.0, high - v["mean"]) if high is not None else 0.0)
            ax.bar(xs, vals, width, yerr=[lo, hi], capsize=3, color=colors[j % len(colors)], edgecolor="black",
                   linewidth=0.4, error_kw={"elinewidth": 0.8},
                   label=_wrap(f"{m['name']} ({m['run']}){_main_marker(lb, row)}", 60))
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylim(0, 104)  # room for a cap at 100
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{tab['title']} (measured)")
        ax.grid(True, axis="y", alpha=0.3)
        fig.legend(fontsize=7, loc="outside lower center", ncol=min(2, len(rows)), frameon=False)
        figures[f"categories-{tab['family']}-{tab['field']}"] = fig
    return figures


def text_overlaps(fig: Any) -> list[str]:
    """Texts of a drawn figure that overlap one another or stick out of the figure (tick labels,
    titles, axis labels, legend entries), as readable lines; [] when the layout is clean. The
    legend of an axes must not cover its plotting area either."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    fb = fig.bbox
    hidden = set()  # labels of ticks outside the view limits: matplotlib does not draw them
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * (abs(lo) + 1) <= tick.get_loc() <= hi + 1e-9 * (abs(hi) + 1):
                    hidden.update({id(tick.label1), id(tick.label2)})
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    problems = []
    for t, b in boxes:
        if b.x0 < fb.x0 - 0.5 or b.y0 < fb.y0 - 0.5 or b.x1 > fb.x1 + 0.5 or b.y1 > fb.y1 + 0.5:
            problems.append(f"{t.get_text()!r} sticks out of the figure")
    for i, (t1, b1) in enumerate(boxes):
        for t2, b2 in boxes[i + 1:]:
            if b1.overlaps(b2) and min(b1.x1, b2.x1) - max(b1.x0, b2.x0) > 0.5 \
                    and min(b1.y1, b2.y1) - max(b1.y0, b2.y0) > 0.5:
                problems.append(f"{t1.get_text()!r} overlaps {t2.get_text()!r}")
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None and leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
            lb_, ab = leg.get_window_extent(renderer), ax.get_window_extent(renderer)
            if min(lb_.y1, ab.y1) - max(lb_.y0, ab.y0) > 0.5 and min(lb_.x1, ab.x1) - max(lb_.x0, ab.x0) > 0.5:
                problems.append(f"the legend covers the plot {ax.get_title()!r}")
    return problems


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Write everything


def write_all(lb: dict[str, Any], out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    pngs: dict[str, Path] = {}
    if plots:
        pngs = render_plots(lb, out)
        written.update({f"plot:{k}": v for k, v in pngs.items()})
    lb["plots"] = {k: f"{PLOTS_DIR}/{v.name}" for k, v in pngs.items()}
    lb["plot_renderer"] = plot_renderer() if pngs else None
    from dt_eval.reporting.leaderboard.latex import render_latex

    for name, text in ((JSON_FILE, render_json(lb)), (MD_FILE, render_markdown(lb)), (TEX_FILE, render_latex(lb)),
                       (CSV_FILE, render_csv(lb)), (HTML_FILE, render_html(lb, {k: data_uri(v) for k, v in pngs.items()}))):
        p = out / name
        p.write_text(text, encoding="utf-8")
        written[name] = p
    return written
