"""The `dt-eval` command line itself (argparse): help texts that explain themselves (issue #14
item 6), exit codes from one place, --version, and a closed pipe that ends quietly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from dt_eval import __version__
from dt_eval.cli import COMMANDS, main
from dt_eval.tasks.presets import detect_preset

from .cli import invoke
from .paths import REPO

GROUPS = {"refs": ["build"], "leaderboard": ["build", "verify"], "analyze": ["gating", "tokens"]}
LEAVES = [[c] for c in COMMANDS if c not in GROUPS] + [[g, s] for g, subs in GROUPS.items() for s in subs]


def help_of(*command: str) -> str:
    res = invoke([*command, "--help"])
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.mark.parametrize("command", LEAVES, ids=" ".join)
def test_every_command_says_what_it_does_with_an_example(command):
    text = help_of(*command)
    description = text.split("\n\n", 2)[1]  # after the usage block
    assert len(description.split()) >= 6, text
    examples = text.split("examples:\n", 1)[1]
    assert f"dt-eval {' '.join(command)}" in examples, text


@pytest.mark.parametrize("command", LEAVES, ids=" ".join)
def test_flags_take_no_value_in_the_help(command):
    """A flag shows as `--retry-errors`, not `--retry-errors <bool>` (nor with any value)."""
    text = help_of(*command)
    assert "<bool>" not in text and "BOOL" not in text
    from dt_eval.cli import build_parser

    parser = build_parser(command[0])
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    if len(command) > 1:
        sub = sub._subparsers._group_actions[0].choices[command[1]]
    flags = [a for a in sub._actions if a.option_strings and a.nargs == 0 and a.dest != "help"]
    for action in flags:
        for opt in action.option_strings:
            assert re.search(rf"^\s+(--?[\w-]+, )*{re.escape(opt)}(,|\s\s|$)", text, re.M), (opt, text)


def test_no_markup_is_eaten():
    assert "needs the [lm-eval] extra" in help_of("tasks")
    assert "[leaderboard] extra" in help_of("leaderboard", "build")


def test_typical_use_and_examples_name_thinking_models():
    """The models the help suggests reason before they answer (a thinking model)."""
    texts = [invoke(["--help"]).stdout, help_of("run"), help_of("serve")]
    models = {m for t in texts for m in re.findall(r"--model (\S+)", t) if not m.startswith(("./", "tiny", "M"))}
    assert models, texts[0]
    for m in models:
        preset = detect_preset(m)
        assert preset is not None and preset.thinking.mode == "native", m
    assert "Qwen/Qwen3-Omni-30B-A3B-Thinking" in texts[0] and "Instruct" not in texts[0]


def test_top_level_help_lists_every_command_and_the_exit_codes():
    res = invoke(["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\b", res.stdout, re.M), name
    assert "130" in res.stdout and "exit codes" in res.stdout


def test_version():
    res = invoke(["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"dt-eval {__version__}"


def test_usage_errors_exit_2_with_a_message():
    res = invoke(["run", "--model", "m"])  # no --tasks
    assert res.exit_code == 2 and "--tasks" in res.stderr
    res = invoke(["score", "--task", "mmau", "-p", "x.json", "--no-such-flag"])
    assert res.exit_code == 2 and "--no-such-flag" in res.stderr
    res = invoke(["nonsense"])
    assert res.exit_code == 2 and "invalid choice" in res.stderr
    assert invoke([]).exit_code == 2  # nothing to do: the help, exit 2


def test_a_dt_eval_error_is_one_line_and_its_exit_code(tmp_path):
    res = invoke(["report", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    res = invoke(["score", "--task", "no-such-task", "-p", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "error: unknown task 'no-such-task'" in res.stderr


def test_usage_errors_never_echo_a_credential():
    res = invoke(["run", "--tasks", "mmau", "--model", "m", "--limit", "https://user:pw-secret-1@host/v1"])
    assert res.exit_code == 2 and "pw-secret-1" not in res.output


def test_a_group_without_its_subcommand_shows_its_commands():
    res = invoke(["leaderboard"])
    assert res.exit_code == 2 and "build" in res.stdout and "verify" in res.stdout


@pytest.mark.parametrize("args", [["tasks"], ["run", "--help"]])
def test_closed_pipe_ends_quietly(args):
    """`dt-eval tasks | head -0`: the reader is gone before dt-eval writes; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "dt_eval.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()  # long before the child has imported anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_main_takes_argv_and_returns_the_code():
    assert main(["--version"]) == 0
    assert main(["backends", "--bogus"]) == 2
