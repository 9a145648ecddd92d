"""`leaderboard.tex`: the ranked tables as booktabs LaTeX, ready to \\input into a paper.

One `table` per benchmark, rows as in the ranked Markdown/HTML tables. Measured accuracies carry
their 95% CI as `74.00 {\\scriptsize [71.20, 76.70]}`; reported rows are marked with a dagger and
cited (`\\cite{KEY}` with the published file's `cite_key`, else the citation text) in the notes
under the table; comparability marks become superscript letters, a significant difference from
the best measured row `$^{*}$`, a subset `$^{\\mathrm{s}}$`. Every name is escaped. Needs
`\\usepackage{booktabs}`; a pure function of the leaderboard JSON, so `verify` renders it again.
"""

from __future__ import annotations

import re
from typing import Any

from dt_eval.reporting.leaderboard.build import ALPHA, MARKERS
from dt_eval.reporting.leaderboard.cells import fmt, settings_text

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_UNICODE = {"–": "--", "—": "---", "−": "-", "…": r"\ldots{}", "·": r"\textperiodcentered{}",
            "±": r"\ensuremath{\pm}", "×": r"\ensuremath{\times}", "→": r"\ensuremath{\rightarrow}",
            "†": r"\ensuremath{^{\dagger}}", "‡": r"\ensuremath{^{\ddagger}}", "§": r"\S{}", "¶": r"\P{}",
            "Δ": r"\ensuremath{\Delta}", "’": "'", "‘": "`", "“": "``", "”": "''", "\u00a0": "~"}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tex_escape(text: Any) -> str:
    """Plain text as LaTeX: the ten special characters and common Unicode punctuation escaped."""
    return "".join(_SPECIAL.get(ch) or _UNICODE.get(ch) or ch for ch in str(text))


def _sup(text: str) -> str:
    return f"\\textsuperscript{{{text}}}"


def marker_letter(marker: str) -> str:
    """A comparability mark (‡, §, ...) as the letter the LaTeX tables use."""
    if marker in MARKERS:
        return _LETTERS[MARKERS.index(marker)]
    return marker.strip("[]")


def _p_text(vs: dict[str, Any]) -> str:
    if vs.get("status") == "best":
        return "best"
    if vs.get("status") != "tested":
        return "--"
    p = vs["p"]
    return r"${<}0.0001$" if p < 1e-4 else (f"{p:.2g}" if p < 0.001 else f"{round(p, 3):g}")


def _cite(r: dict[str, Any]) -> str:
    return f"\\cite{{{r['cite_key']}}}" if r.get("cite_key") else tex_escape(r["citation"])


def _table(lb: dict[str, Any], table: dict[str, Any]) -> list[str]:
    titles = {c["key"]: c["title"] for c in lb["columns"]}
    metrics = {c["key"]: c["metric"] for c in lb["columns"]}
    heads = ["Rank", "Model", f"{tex_escape(titles[table['primary']])} [95\\% CI]",
             *(tex_escape(titles[k]) for k in table["columns"][1:]), "$p$ vs best", "$n$"]
    lines = [r"\begin{table}[ht]", r"\centering", r"\small",
             f"\\caption{{{tex_escape(table['title'])}: measured and reported results, ranked}}",
             f"\\label{{tab:dt-eval-{re.sub(r'[^A-Za-z0-9]+', '-', table['key']).strip('-')}}}",
             f"\\begin{{tabular}}{{rl{'r' * len(table['columns'])}rr}}", r"\toprule",
             " & ".join(heads) + r" \\", r"\midrule"]
    marks: dict[str, str] = {}  # letter -> description
    reported: dict[str, list[str]] = {}  # citation -> models
    subsets: list[str] = []
    for row in table["rows"]:
        kind = row["kind"]
        cells = (lb["measured_cells"] if kind == "measured" else lb["reported_cells"])[row["row"]]
        if kind == "measured":
            m = lb["measured"][row["row"]]
            name = f"{tex_escape(m['name'])} {{\\scriptsize {tex_escape(m['run'])}}}"
        else:
            r = lb["reported"][row["row"]]
            name = f"{tex_escape(r['model'])}$^{{\\dagger}}$"
            reported.setdefault(_cite(r), []).append(tex_escape(r["model"]))
        values = []
        for key in table["columns"]:
            c = cells.get(key)
            if c is None:
                values.append("--")
                continue
            text = fmt(metrics[key], c["value"])
            if key == table["primary"] and c.get("ci_low") is not None:
                text += f" {{\\scriptsize [{c['ci_low']:.2f}, {c['ci_high']:.2f}]}}"
            if c.get("marker"):
                letter = marker_letter(c["marker"])
                marks.setdefault(letter, lb["groups"][c["group"]]["description"])
                text += _sup(letter)
            if key == table["primary"]:
                vs = row.get("vs_best") or {}
                if vs.get("status") == "tested" and vs.get("significant"):
                    text += "$^{*}$"
            values.append(text)
        primary = cells.get(table["primary"]) or {}
        n = "--"
        if kind == "measured" and primary.get("n") is not None:
            n = str(primary["n"])
            if primary.get("subset"):
                n += "$^{\\mathrm{s}}$"
                m = lb["measured"][row["row"]]
                subsets.append(f"{tex_escape(m['name'])} ({tex_escape(m['run'])}): {tex_escape(primary['subset'])}")
        rank = str(row["rank"]) if row["rank"] is not None else "--"
        lines.append(" & ".join([rank, name, *values, _p_text(row.get("vs_best") or {}), n]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", r"\parbox{\linewidth}{\footnotesize"]
    notes = []
    if reported:
        notes.append("$^{\\dagger}$~Reported by the source, not measured here: "
                     + "; ".join(f"{', '.join(models)}~{cite}" for cite, models in reported.items()) + ".")
    notes.append("Measured rows: accuracy (\\%) with its 95\\% CI {\\scriptsize [low, high]} (Wilson score "
                 "interval over the scored items; with repeats, at the effective sample size of the "
                 "repeat-averaged items); $n$: items. "
                 + (f"$^{{*}}$~Differs from the best measured row at $p<{ALPHA:g}$. " if any(
                     (r.get("vs_best") or {}).get("significant") for r in table["rows"]) else "")
                 + "$p$ vs best: McNemar's exact test on the items both runs scored (a paired bootstrap test with repeats), "
                 "not corrected for multiple comparisons; reported rows and runs on another data file are not "
                 "tested.")
    if subsets:
        notes.append("$^{\\mathrm{s}}$~Not the whole benchmark: " + "; ".join(subsets) + ".")
    for letter in sorted(marks):
        notes.append(f"{_sup(letter)}~{tex_escape(marks[letter])}.")
    lines += [" ".join(notes) + "}", r"\end{table}", ""]
    return lines


def render_latex(lb: dict[str, Any]) -> str:
    out = [f"% {tex_escape(lb['title'])}: written by `dt-eval leaderboard build` (dt-eval {lb['dt_eval_version']}).",
           "% Needs \\usepackage{booktabs}. Reported rows cite their sources with \\cite{KEY}: add those",
           "% entries to your bibliography, or edit the keys.", ""]
    for table in lb.get("main_tables") or []:
        out += _table(lb, table)
    measured_settings = {m["run"]: settings_text(m) for m in lb["measured"]}
    if measured_settings:
        out.append("% Measured runs: " + "; ".join(f"{run}: {text}" for run, text in measured_settings.items())
                   .replace("\n", " "))
    return "\n".join(out) + "\n"
