"""What the commands load before they work (issue #12): no import cycle among dt-eval's modules
(lazy imports inside functions included), `dt-eval --help`, `score` and `run --help` without
torch or vllm, `score` without pydantic or typer, and `run` handing its first request to the
backend before the typed records (pydantic) are loaded."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .paths import REPO
from .synthetic_meta import mmau_records

# --------------------------------------------------------------------------------------------
# The import graph


def module_imports(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, anywhere in its code (inside
    functions too), except under `if TYPE_CHECKING:`. `from a.b import c` counts as importing
    a.b.c when that is a module, else a.b."""
    root = package_dir.parent
    modules: dict[str, Path] = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    where = ".".join(base + ([node.module] if node.module else []))
                else:
                    where = node.module or ""
                targets = [f"{where}.{a.name}" if f"{where}.{a.name}" in modules else where for a in node.names]
            for target in targets:
                found = known(target)
                if found and found != mod:
                    graph[mod].add(found)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan). A package and its
    own submodules are left out: a package re-exporting what its modules define, and a module
    importing a sibling through the package, is the package's face, not a cycle between designs."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def related(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if related(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def test_no_import_cycle_among_dt_eval_modules():
    graph = module_imports(REPO / "dt_eval")
    assert len(graph) > 100  # the whole package was read
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_lazy_imports(tmp_path):
    """A cycle closed only by an import inside a function is still a cycle; one under
    TYPE_CHECKING is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n")
    assert import_cycles(module_imports(pkg)) == [["pkg.a", "pkg.b"]]
    (pkg / "b.py").write_text("def helper():\n    return 1\n")
    assert import_cycles(module_imports(pkg)) == []


def test_command_modules_import_only_the_standard_library_at_the_top():
    """dt_eval/cli/<command>.py: argparse and the standard library at module level (plus the CLI's
    own helpers and dt_eval.errors); what a command needs is imported inside it."""
    allowed = {"__future__", "dt_eval", "dt_eval.errors", "dt_eval.cli", "dt_eval.cli.common"}
    modules = sorted((REPO / "dt_eval" / "cli").glob("*.py"))
    assert len(modules) >= 15
    for path in modules:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name in allowed or name.split(".")[0] in sys.stdlib_module_names, (path.name, name)


# --------------------------------------------------------------------------------------------
# What each command loads

_PROBE = """
import sys
from dt_eval.cli import main
code = main(sys.argv[1:])
print("LOADED:" + ",".join(sorted(m for m in ("torch", "vllm", "transformers", "pydantic", "typer", "aiohttp",
                                             "asyncio", "numpy") if m in sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def loaded_by(*args: str, cwd: Path = REPO) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED:"))
    return set(filter(None, line[len("LOADED:"):].split(",")))


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["score", "--help"], ["serve", "--help"]])
def test_help_loads_no_model_library(args):
    assert not loaded_by(*args) & {"torch", "vllm", "transformers", "typer", "pydantic"}


def test_score_loads_neither_a_model_library_nor_pydantic_nor_an_event_loop(tmp_path):
    sub = tmp_path / "predictions.json"
    sub.write_text(json.dumps([dict(r, model_output=r["answer"]) for r in mmau_records(20)]))
    assert loaded_by("score", "--task", "mmau", "-p", str(sub)) == set()
    assert loaded_by("score", "--task", "mmau", "-p", str(sub), "--extract") == set()


# A backend that reports what is loaded when the run hands it its first requests, then fails them.
_RUN_PROBE = """
import sys
from dt_eval.backends import register_backend
from dt_eval.cli import main
from dt_eval.types import Generation

class Probe:
    name = "probe"
    async def generate(self, requests):
        print("AT-FIRST-REQUEST:" + ",".join(sorted(m for m in ("pydantic", "dt_eval.records", "torch")
                                                    if m in sys.modules)), file=sys.stderr, flush=True)
        for r in requests:
            yield Generation(key=r.key, error="probe")
    async def aclose(self):
        pass
    def describe(self):
        return {"name": "probe"}

register_backend("probe", lambda settings: Probe())
sys.exit(main(sys.argv[1:]))
"""


def test_run_sends_its_first_request_before_loading_the_records(tmp_path, fake_bench):
    bench = fake_bench("mmau", 2)
    proc = subprocess.run([sys.executable, "-c", _RUN_PROBE, "run", "--tasks", "mmau", "--model", "m", "--backend",
                           "probe", "--data-dir", str(bench), "--output", str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr  # the probe failed every sample: finished, not clean
    line = next(x for x in proc.stderr.splitlines() if x.startswith("AT-FIRST-REQUEST:"))
    assert line == "AT-FIRST-REQUEST:", proc.stderr
    # and the run is complete: config.json came before the first record
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backend"]["name"] == "probe"
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["error"] == "probe" for x in lines)

