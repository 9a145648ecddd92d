"""What the command modules share: the parser class and help layout, the error a command ends
with, and the option helpers. Standard library only: every command imports this."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from dt_eval.errors import EXIT_USAGE, DtEvalError


class CommandError(DtEvalError):
    """A command's own "error: MESSAGE" with its exit code (default 2: bad options or data)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise CommandError(message, code)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples keep their line breaks; an option shows its default when it has a
    meaningful one (not None, not a flag's False)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(110, _terminal_width()))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)"


def _terminal_width() -> int:
    """As shutil.get_terminal_size, without importing shutil (and its compression modules) for
    every command: argparse makes a formatter for each option it adds."""
    import os

    try:
        return int(os.environ["COLUMNS"]) - 2
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns - 2
    except (AttributeError, ValueError, OSError):
        return 98


class Parser(argparse.ArgumentParser):
    """argparse with dt-eval's help layout, and usage errors that never echo a credential."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        from dt_eval.util.redact import redact_text

        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redact_text(message)}\n")


def describe(parser: argparse.ArgumentParser, description: str, examples: str = "") -> None:
    """A command's help text: what it does, then examples (kept as written)."""
    parser.description = description.strip()
    if examples:
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" if line else "" for line in examples.strip().splitlines())


def show_help(parser: argparse.ArgumentParser):
    """The handler of a command group called without its subcommand: its help, exit 2."""

    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    return run


# ------------------------------------------------------------------------------------ options

TASKS_DIR_HELP = ("Also look for task YAMLs in this folder (repeatable; searched before $DT_EVAL_TASKS_PATH and "
                  "the built-in tasks).")


def add_tasks_dir(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("--tasks-dir", type=Path, action="append", metavar="DIR",
                        help=TASKS_DIR_HELP + (" " + extra if extra else ""))


def use_tasks_dirs(dirs: list[Path] | None) -> None:
    """Put the --tasks-dir folders first on the task search path (a missing folder: exit 2)."""
    if dirs:
        from dt_eval.tasks.config import add_task_dirs

        add_task_dirs(list(dirs))


def split_csv(values: list[str] | str | None) -> list[str]:
    """["a,b", "c"] or "a,b" -> ["a", "b", "c"] (repeatable, comma-separated options)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def echo(text: str = "", err: bool = False) -> None:
    """One line on stdout (or stderr), flushed: other processes read some lines as they come, and
    stdout's earlier lines stay before a note on stderr when both go to one file."""
    if err:
        sys.stdout.flush()
    print(text, file=sys.stderr if err else sys.stdout, flush=True)
