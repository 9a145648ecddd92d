"""`dt-eval view RUN [RUN ...]`: the trace viewer (dt_eval/reporting/viewer), served on 127.0.0.1
or written as one self-contained HTML file with --html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def view_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories made by `dt-eval run` (two or more: a side-by-side view of the items that flipped).")],
    html: Annotated[Optional[Path], typer.Option("--html", help="Write the page to this file (self-contained: no server, no network) instead of serving it.")] = None,
    embed_audio: Annotated[bool, typer.Option("--embed-audio", help="Put the audio clips inside the page (base64) instead of pointing at the files; makes the page larger.")] = False,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = 0,
) -> None:
    """Browse every sample of finished runs: question, options, audio, reasoning, raw output,
    extracted and gold answers, status, tokens, latency and reasoning scores; filter by task,
    category, status and repeat, search the text; with two runs, the items that flipped side by side.

    Serves the page on 127.0.0.1 and prints its URL (Ctrl-C stops), or with --html writes it to a
    file that opens in any browser without a server."""
    from dt_eval.reporting.viewer import ViewerError, build_page, load_runs_for_view
    from dt_eval.reporting.viewer.page import write_page

    try:
        loaded = load_runs_for_view(runs)
    except ViewerError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    n = sum(len(r.samples) for r in loaded)
    if html is not None:
        page = write_page(loaded, html, embed_audio=embed_audio)
        typer.echo(f"wrote {html} ({n} samples, {len(page.audio)} audio file(s){' embedded' if embed_audio else ''})")
        return
    from dt_eval.reporting.viewer.server import ViewServer

    try:
        server = ViewServer(build_page(loaded, "embed" if embed_audio else "served"), port=port)
    except OSError as e:
        typer.echo(f"error: cannot listen on 127.0.0.1:{port}: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"dt-eval view: {n} samples at {server.url}  (Ctrl-C stops)", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
    finally:
        server.httpd.server_close()
