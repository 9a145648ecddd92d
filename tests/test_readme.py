"""The README's CPU quick start, run exactly as written: its bash block is parsed out of
README.md and each command runs in a shell, with `/tmp/` pointing into a temporary folder and
the test's virtual environment standing in for `source .venv/bin/activate`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .paths import REPO

pytestmark = pytest.mark.slow

HEADING = "## Quick start on the CPU"


def quick_start_commands(readme: str) -> list[str]:
    section = readme.split(HEADING, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the quick start has no bash block"
    lines = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_quick_start_block_is_what_this_test_runs():
    cmds = quick_start_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert cmds[0] == "source .venv/bin/activate"
    assert any(c.startswith("dt-eval run ") for c in cmds) and any(c.startswith("dt-eval score ") for c in cmds)


def test_readme_quick_start_runs_as_written(tmp_path):
    cmds = quick_start_commands((REPO / "README.md").read_text(encoding="utf-8"))
    # the test's own environment is the activated venv: its bin folder first on PATH
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    outputs = {}
    for cmd in cmds:
        if cmd.startswith("source "):
            continue
        cmd = cmd.replace("/tmp/", f"{tmp_path}/")
        proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs[cmd.split()[0] + " " + cmd.split()[1]] = proc.stdout
    # what the README says these commands do
    run = outputs["dt-eval run"]
    assert "Total Accuracy:" in run and "95% CI" in run
    assert "95% CI" in outputs["dt-eval report"]
    page = (tmp_path / "run" / "traces.html").read_text(encoding="utf-8")
    assert "<html" in page.lower() and "http://" not in page.split("</head>")[0].replace("http://www.w3.org", "")
    sub = json.loads((tmp_path / "sub.json").read_text(encoding="utf-8"))
    assert len(sub) == 8 and all("model_output" in r for r in sub)
    score = outputs["dt-eval score"]
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    accuracy = results["tasks"]["mmau"]["repeats"][0]["accuracy"]
    assert f"Total Accuracy: {accuracy:.2f}%" in score  # the exported file scores the run's number
