"""`dt-eval leaderboard build|verify`: comparison tables from run directories and published
numbers, and their check against the runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import Parser, describe, echo, fail, show_help

DESCRIPTION = """\
Publish comparison tables: measured runs beside published numbers (Markdown, CSV, JSON, a
static HTML page with plots), and verify them against the runs."""

BUILD_DESCRIPTION = """\
Build the leaderboard from run directories (every number recomputed from samples.jsonl).

Writes leaderboard.md, leaderboard.tex (booktabs), leaderboard.csv, leaderboard.json, index.html
and plots/ into --out: one ranked table per benchmark with measured rows (95% CI, a paired test
against the best measured row) and reported rows (marked, with their citation). Subset runs
(--limit, or an unknown data file) are marked in the table and named in a warning."""

BUILD_EXAMPLES = """\
dt-eval leaderboard build runs/base runs/tuned --out site --published leaderboard/published.yaml
dt-eval leaderboard build runs/tuned --out site --name runs/tuned="Qwen3-Omni + GRPO" --no-plots"""

VERIFY_DESCRIPTION = """\
Recompute every measured number from the runs' samples.jsonl, check the reported rows against
the published file and the plots against a fresh render; exit 1 on any difference."""

VERIFY_EXAMPLES = """\
dt-eval leaderboard verify site"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, "dt-eval leaderboard build --help\ndt-eval leaderboard verify --help")
    sub = p.add_subparsers(dest="leaderboard_command", metavar="COMMAND", title="commands", parser_class=Parser)

    b = sub.add_parser("build", help="Build the leaderboard from run directories.")
    describe(b, BUILD_DESCRIPTION, BUILD_EXAMPLES)
    b.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="Run directories made by `dt-eval run` (one measured row each).")
    b.add_argument("--out", "-o", required=True, type=Path, metavar="DIR",
                   help="Output directory: leaderboard.{md,csv,json}, index.html, plots/.")
    b.add_argument("--published", type=Path, metavar="FILE",
                   help="Published numbers to show as reported anchor rows, e.g. leaderboard/published.yaml.")
    b.add_argument("--name", action="append", metavar="RUN_DIR=NAME",
                   help="Display name of a run (repeatable). Default: dt_recipe.json's name, else the model's name.")
    b.add_argument("--title", help="Page and table title.")
    b.add_argument("--figures", nargs="+", type=Path, metavar="DIR",
                   help="Analysis outputs to show on the page (folders or gating.json/tokens.json written by "
                        "`dt-eval analyze`): their figures are copied in and captioned.")
    b.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="Render PNG plots (needs matplotlib: the [leaderboard] extra of dt-eval).")
    b.set_defaults(run=build)

    v = sub.add_parser("verify", help="Check a built leaderboard against its runs and published file.")
    describe(v, VERIFY_DESCRIPTION, VERIFY_EXAMPLES)
    v.add_argument("directory", type=Path, metavar="DIR", help="A directory written by `dt-eval leaderboard build`.")
    v.add_argument("--reextract", action=argparse.BooleanOptionalAction, default=True,
                   help="Also extract every answer again from the raw outputs (off for runs made by another dt-eval "
                        "version whose extraction differs).")
    v.add_argument("--published", type=Path, metavar="FILE",
                   help="The published file the reported rows were built from (default: the one the build recorded, "
                        "looked for beside the output first).")
    v.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="Render the plots again and compare them with the PNGs and the page's images (needs "
                        "matplotlib; --no-plots leaves them unchecked).")
    v.set_defaults(run=verify)
    p.set_defaults(run=show_help(p))


def build(args: argparse.Namespace) -> None:
    from dt_eval.reporting.leaderboard.build import BuildError, build_leaderboard
    from dt_eval.reporting.leaderboard.published import PublishedError, load_published
    from dt_eval.reporting.leaderboard.render import write_all

    names: dict[str, str] = {}
    for v in args.name or []:
        run, sep, label = v.partition("=")
        if not sep or not run or not label:
            fail(f"--name takes RUN_DIR=NAME, got {v!r}")
        names[run.rstrip("/")] = label
    pub = sha = None
    if args.published is not None:
        try:
            pub, sha = load_published(args.published)
        except PublishedError as e:
            fail(str(e))
    plots = args.plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            echo("warning: matplotlib is not installed (pip install 'dt-eval[leaderboard]'); building without plots",
                 err=True)
            plots = False
    try:
        lb = build_leaderboard([str(d).rstrip("/") for d in args.run_dirs], args.out, published=pub,
                               published_path=args.published, published_sha256=sha, names=names, title=args.title)
    except BuildError as e:
        fail(str(e))
    for w in lb.get("warnings") or []:
        echo(f"warning: {w}", err=True)
    if args.figures:
        from dt_eval.reporting.leaderboard.figures import FiguresError, attach_figures

        try:
            attach_figures(lb, args.out, [str(f) for f in args.figures])
        except FiguresError as e:
            fail(str(e))
    written = write_all(lb, args.out, plots=plots)
    print(f"{len(lb['measured'])} measured row(s), {len(lb['reported'])} reported row(s), "
          f"{sum(1 for g in lb['groups'].values() if g['marker'])} comparability mark(s)")
    for path in written.values():
        print(f"  wrote {path}")


def verify(args: argparse.Namespace) -> int | None:
    from dt_eval.reporting.leaderboard.verify import verify as verify_dir

    rep = verify_dir(args.directory, reextract=args.reextract, published=args.published, plots=args.plots)
    for n in rep.notes:
        echo(f"note: {n}", err=True)
    if rep.ok:
        print(f"OK: {rep.runs} run(s), {rep.checked_numbers} numbers recomputed, {rep.plots_checked} plot(s) "
              "rendered again, no differences")
        return None
    echo(f"FAILED: {len(rep.problems)} difference(s) in {args.directory}:", err=True)
    for problem in rep.problems:
        echo(f"  - {problem}", err=True)
    return 1
