"""`dt-eval view RUN [RUN ...]`: the trace viewer (dt_eval/reporting/viewer), served on 127.0.0.1
or written as one self-contained HTML file with --html."""

from __future__ import annotations

import argparse
from pathlib import Path

from dt_eval.cli.common import describe, echo, fail

DESCRIPTION = """\
Browse every sample of finished runs: question, options, audio, reasoning, raw output,
extracted and gold answers, status, tokens, latency and reasoning scores; filter by task,
category, status and repeat, search the text; with two runs, the items that flipped side by side.

Serves the page on 127.0.0.1 and prints its URL (Ctrl-C stops), or with --html writes it to a
file that opens in any browser without a server."""

EXAMPLES = """\
dt-eval view runs/Qwen3-Omni-30B-A3B-Thinking
dt-eval view runs/base runs/tuned --port 8765
dt-eval view runs/tuned --html tuned.html --embed-audio"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="Run directories made by `dt-eval run` (two or more: a side-by-side view of the items that "
                        "flipped).")
    p.add_argument("--html", type=Path, metavar="FILE",
                   help="Write the page to this file (self-contained: no server, no network) instead of serving it.")
    p.add_argument("--embed-audio", action="store_true",
                   help="Put the audio clips inside the page (base64) instead of pointing at the files; makes the page "
                        "larger.")
    p.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: any free port).")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    from dt_eval.reporting.viewer import ViewerError, build_page, load_runs_for_view
    from dt_eval.reporting.viewer.page import write_page

    try:
        loaded = load_runs_for_view(args.runs)
    except ViewerError as e:
        fail(str(e))
    n = sum(len(r.samples) for r in loaded)
    if args.html is not None:
        page = write_page(loaded, args.html, embed_audio=args.embed_audio)
        print(f"wrote {args.html} ({n} samples, {len(page.audio)} audio file(s)"
              f"{' embedded' if args.embed_audio else ''})")
        return
    from dt_eval.reporting.viewer.server import ViewServer

    try:
        server = ViewServer(build_page(loaded, "embed" if args.embed_audio else "served"), port=args.port)
    except OSError as e:
        fail(f"cannot listen on 127.0.0.1:{args.port}: {e}")
    echo(f"dt-eval view: {n} samples at {server.url}  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("stopped", err=True)
    finally:
        server.httpd.server_close()
