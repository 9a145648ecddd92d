"""dt-eval's exceptions, and the exit codes the command line maps them to.

Every error dt-eval raises for a problem the user can fix (bad options, missing data, a broken
run directory) derives from `DtEvalError`, so library callers can catch one class and the CLI
turns all of them into "error: MESSAGE" and exit code 2 in one place. The specific classes
(RunError, DataError, SubmissionError, ...) live beside the code that raises them and keep
their historical bases too (ValueError, RuntimeError, KeyError), so existing `except` clauses
still match.
"""

from __future__ import annotations

# Exit codes of the command line (README, "Exit codes").
EXIT_OK = 0  # every sample got an answer
EXIT_SAMPLE_ERRORS = 1  # the run finished, but some samples failed (error records; --retry-errors)
EXIT_USAGE = 2  # bad options, data or run directory: the run could not start or continue
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT; finished samples are saved


class DtEvalError(Exception):
    """Base of dt-eval's errors: a problem with the input, shown to the user as its message."""

    exit_code = EXIT_USAGE


class UsageError(DtEvalError, ValueError):
    """Bad arguments to a command or an API call (an unknown option, a value out of range)."""


class BackendStartError(DtEvalError):
    """The inference backend could not be created (a missing extra, a bad URL, no such model)."""


def exit_code(exc: BaseException) -> int:
    """The command line's exit code for an exception that ends a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, DtEvalError):
        return exc.exit_code
    return 1
