"""The `dt-eval` command line (argparse).

One module per command (dt_eval/cli/<command>.py) with `add_arguments(parser)` and
`main(args) -> exit code`. Only the chosen command's module is imported and its options built,
and command modules import nothing beyond the standard library at the top: the libraries a
command needs (numpy, aiohttp, pydantic, torch ...) load inside its `main`. So `dt-eval --help`
and `dt-eval score` start fast.

Errors end here, in one place: a DtEvalError (bad options, data, run directory) prints
"error: MESSAGE" and exits with its code (dt_eval.errors), Ctrl-C exits 130, a closed pipe
(`dt-eval score ... | head`) ends quietly.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from dt_eval import __version__
from dt_eval.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SAMPLE_ERRORS, EXIT_USAGE, DtEvalError, exit_code

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "EXIT_SAMPLE_ERRORS", "EXIT_USAGE", "build_parser", "main"]

# name -> one line for the command list; the command lives in dt_eval/cli/<name>.py
COMMANDS: dict[str, str] = {
    "run": "Run a model over tasks with thinking-aware prompting; resumable; scores as it goes.",
    "score": "Score a prediction file exactly like the benchmark's official script.",
    "report": "Print a run's tables again (recomputed from samples.jsonl), or compare runs.",
    "export": "Write an official submission file from a run's per-sample records.",
    "tasks": "List the tasks: item count, data source, metric and scorer.",
    "backends": "List the inference backends (built-in and installed plugins).",
    "serve": "Start vLLM's OpenAI-compatible server with the flags the model family needs.",
    "demo": "Gradio audio Q&A app: ask about a clip, watch the reasoning stream, then the answer.",
    "view": "Browse every sample of finished runs in a web page (served, or one HTML file).",
    "rescore": "Score the reasoning of a finished run (no re-inference): hybrid reward, MMAR-Rubrics, ...",
    "refs": "Reference reasoning chains for the hybrid reward (refs build).",
    "leaderboard": "Publish comparison tables from runs and published numbers (build), and check them (verify).",
    "analyze": "What training changed in a checkpoint: MoE gating shift (gating), reasoning tokens (tokens).",
}

DESCRIPTION = """\
Evaluate audio reasoning LMs on MMAU, MMAR and MMSU: official-faithful scores, thinking-aware
inference, resumable runs, reasoning-quality scores."""

EPILOG = """\
typical use:
  dt-eval serve --model Qwen/Qwen3-Omni-30B-A3B-Thinking
  dt-eval run --tasks mmau,mmar --model Qwen/Qwen3-Omni-30B-A3B-Thinking --base-url http://127.0.0.1:8000/v1
  dt-eval score --task mmau -p predictions.json

`dt-eval COMMAND --help` explains a command and its options.

exit codes:
  0    done (for `run`: every sample got an answer)
  1    the run finished, but some samples failed (or a check found differences)
  2    bad options, data or run directory (nothing more was run)
  130  interrupted (a run's finished samples are saved; rerun the same command to resume)"""


def _command_module(name: str):
    return importlib.import_module(f"dt_eval.cli.{name}")


def build_parser(command: str | None = None):
    """The `dt-eval` parser. Only `command`'s options are built (all commands are listed); with
    command=None none are: enough for the top-level help."""
    from dt_eval.cli.common import HelpFormatter, Parser

    parser = Parser(prog="dt-eval", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"dt-eval {__version__}",
                        help="Print the version and exit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=Parser)
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        if name == command:
            _command_module(name).add_arguments(p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    first = next(iter(argv), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run `dt-eval ARGV` (default: sys.argv[1:]) and return its exit code."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), list(sys.argv) if argv is None else None)
    except BrokenPipeError:  # `dt-eval score ... | head`: the reader is gone; say nothing more
        import os

        try:  # what is still buffered goes nowhere, instead of a second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (redirected in-process)
            pass
        return EXIT_OK


def _main(args_list: list[str], process_argv: list[str] | None) -> int:
    command = _command_in(args_list)
    passthrough: list[str] = []
    if command == "serve" and "--" in args_list:  # vLLM's own flags, handed over untouched
        cut = args_list.index("--")
        args_list, passthrough = args_list[:cut], args_list[cut + 1:]
    parser = build_parser(command)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    args.passthrough = passthrough
    # the command line a run records in config.json (credentials are masked there)
    args.argv = process_argv or ["dt-eval", *args_list, *(["--", *passthrough] if passthrough else [])]
    try:
        code = args.run(args)
        sys.stdout.flush()
        return EXIT_OK if code is None else int(code)
    except DtEvalError as e:
        _error(str(e))
        return exit_code(e)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _error(message: str) -> None:
    from dt_eval.util.redact import redact_text

    print(f"error: {redact_text(message)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
