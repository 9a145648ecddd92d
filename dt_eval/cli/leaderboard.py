"""`dt-eval leaderboard build|verify` (a typer sub-app registered by dt_eval.cli).

Imports stay inside the commands: `dt-eval --help` loads neither matplotlib nor the scorers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="leaderboard",
    help="Publish comparison tables: measured runs beside published numbers (Markdown, CSV, JSON, "
         "a static HTML page with plots), and verify them against the runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(msg: str, code: int = 2) -> None:
    from dt_eval.util.redact import redact_text

    typer.echo(f"error: {redact_text(msg)}", err=True)
    raise typer.Exit(code)


@app.command("build")
def build_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories made by `dt-eval run` (one measured row each).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: leaderboard.{md,csv,json}, index.html, plots/.")],
    published: Annotated[Optional[Path], typer.Option("--published", help="Published numbers to show as reported anchor rows, e.g. leaderboard/published.yaml.")] = None,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="Display name of a run: RUN_DIR=NAME (repeatable). Default: dt_recipe.json's name, else the model's name.")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Page and table title.")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Render PNG plots (needs matplotlib: the `leaderboard` extra of dt-eval).")] = True,
) -> None:
    """Build the leaderboard from run directories (every number recomputed from samples.jsonl)."""
    from dt_eval.reporting.leaderboard.build import BuildError, build_leaderboard
    from dt_eval.reporting.leaderboard.published import PublishedError, load_published
    from dt_eval.reporting.leaderboard.render import write_all

    names: dict[str, str] = {}
    for v in name or []:
        run, sep, label = v.partition("=")
        if not sep or not run or not label:
            _fail(f"--name takes RUN_DIR=NAME, got {v!r}")
        names[run.rstrip("/")] = label
    pub = sha = None
    if published is not None:
        try:
            pub, sha = load_published(published)
        except PublishedError as e:
            _fail(str(e))
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            typer.echo("warning: matplotlib is not installed (pip install 'dt-eval[leaderboard]'); building without "
                       "plots", err=True)
            plots = False
    try:
        lb = build_leaderboard([str(d).rstrip("/") for d in run_dirs], out, published=pub, published_path=published,
                               published_sha256=sha, names=names, title=title)
    except BuildError as e:
        _fail(str(e))
        return
    written = write_all(lb, out, plots=plots)
    typer.echo(f"{len(lb['measured'])} measured row(s), {len(lb['reported'])} reported row(s), "
               f"{sum(1 for g in lb['groups'].values() if g['marker'])} comparability mark(s)")
    for key, path in written.items():
        typer.echo(f"  wrote {path}")


@app.command("verify")
def verify_cmd(
    directory: Annotated[Path, typer.Argument(help="A directory written by `dt-eval leaderboard build`.")],
    reextract: Annotated[bool, typer.Option("--reextract/--no-reextract", help="Also extract every answer again from the raw outputs (off for runs made by another dt-eval version whose extraction differs).")] = True,
    published: Annotated[Optional[Path], typer.Option("--published", help="The published file the reported rows were built from (default: the one the build recorded, looked for beside the output first).")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Render the plots again and compare them with the PNGs and the page's images (needs matplotlib; --no-plots leaves them unchecked).")] = True,
) -> None:
    """Recompute every measured number from the runs' samples.jsonl, check the reported rows against
    the published file and the plots against a fresh render; exit 1 on any difference."""
    from dt_eval.reporting.leaderboard.verify import verify

    rep = verify(directory, reextract=reextract, published=published, plots=plots)
    for n in rep.notes:
        typer.echo(f"note: {n}", err=True)
    if rep.ok:
        typer.echo(f"OK: {rep.runs} run(s), {rep.checked_numbers} numbers recomputed, {rep.plots_checked} plot(s) "
                   "rendered again, no differences")
        return
    typer.echo(f"FAILED: {len(rep.problems)} difference(s) in {directory}:", err=True)
    for p in rep.problems:
        typer.echo(f"  - {p}", err=True)
    raise typer.Exit(1)
