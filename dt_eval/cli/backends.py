"""`dt-eval backends`: the inference backends `dt-eval run --backend` takes."""

from __future__ import annotations

import argparse

from dt_eval.cli.common import describe

DESCRIPTION = """\
List the inference backends: built-in (hf, openai, vllm), and those installed packages add
through the entry-point group `dt_eval.backends` (marked "plugin")."""

EXAMPLES = """\
dt-eval backends"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    describe(p, DESCRIPTION, EXAMPLES)
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    from dt_eval.backends import BUILTIN_BACKENDS, backend_names

    for name in backend_names():
        print(name if name in BUILTIN_BACKENDS else f"{name}  (plugin)")
