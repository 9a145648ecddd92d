"""`dt-eval demo`: the Gradio audio Q&A app (dt_eval/apps/demo), against a running server or a
local checkpoint it serves itself."""

from __future__ import annotations

import argparse

from dt_eval.cli.common import describe, echo, fail

DESCRIPTION = """\
Gradio audio Q&A app: ask about a clip and watch the reasoning stream, then the answer.

Against a running OpenAI-compatible server (e.g. `dt-eval serve`), or for a local checkpoint:
then dt-eval starts its transformers server for it (CPU is fine) and stops it on exit.
Needs the [demo] extra: pip install 'dt-eval[demo]'."""

EXAMPLES = """\
dt-eval demo --base-url http://127.0.0.1:8000/v1
dt-eval demo --model ./my-checkpoint --preset qwen3-omni-thinking
DT_EVAL_DEMO_AUTH=alice:secret dt-eval demo --base-url http://127.0.0.1:8000/v1 --host 0.0.0.0"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.add_argument("--base-url", metavar="URL",
                   help="A running OpenAI-compatible server (.../v1), e.g. from `dt-eval serve`.")
    p.add_argument("--model", "-m",
                   help="Local checkpoint: start dt_eval.serving.hfserver for it (transformers, CPU ok) and stop it on "
                        "exit. With --base-url: the served model name.")
    p.add_argument("--host", default="127.0.0.1", help="Bind address; 127.0.0.1 keeps the demo private.")
    p.add_argument("--port", type=int, default=7860, help="Port of the web app.")
    p.add_argument("--auth", metavar="USER:PASSWORD",
                   help="Require a login (or set $DT_EVAL_DEMO_AUTH, which keeps it out of `ps`).")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="Audio window in seconds; longer clips are trimmed with a note (default: the model family's "
                        "preset).")
    p.add_argument("--served-model-name", metavar="NAME",
                   help="Model name to request (default: the server's first model, or --model).")
    p.add_argument("--max-tokens", type=int, metavar="N",
                   help="Most tokens per answer (default: the preset's, else 2048).")
    p.add_argument("--no-examples", action="store_true", help="Do not generate or show the example clips.")
    p.add_argument("--preset", metavar="FAMILY",
                   help="Model family preset (as for `dt-eval run --preset`; `dt-eval serve --list-presets`): its "
                        "prompt, thinking switch, sampling and audio window. Detected from the model name when omitted.")
    p.add_argument("--share", action="store_true",
                   help="Also publish a public Gradio share link (needs internet); the app still binds --host. "
                        "Use with --auth.")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    try:
        from dt_eval.apps.demo.app import DemoError, run_demo
    except ImportError as e:
        fail(f"the demo needs gradio: pip install 'dt-eval[demo]' ({e})")
    try:
        run_demo(base_url=args.base_url, model=args.model, host=args.host, port=args.port, auth=args.auth,
                 window_s=args.window, served_model_name=args.served_model_name, max_tokens=args.max_tokens,
                 examples=not args.no_examples, preset=args.preset, share=args.share)
    except DemoError as e:
        fail(str(e))
    except KeyboardInterrupt:
        echo("stopped", err=True)
