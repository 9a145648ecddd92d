"""dt_eval.util.locks: the run-directory lock excludes a real second process, the operating system
drops it when its holder dies, and build locks wait their turn. No fcntl import anywhere (the
run path must work where fcntl does not exist)."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dt_eval.storage.rundir import LOCK, RunDir, RunDirError
from dt_eval.util.locks import try_lock, wait_lock

ROOT = Path(__file__).resolve().parents[1]

# Takes the lock in argv[1] (try_lock or wait_lock per argv[2]), says so, holds it until stdin closes.
HOLDER = """
import sys
from dt_eval.util.locks import try_lock, wait_lock
if sys.argv[2] == "wait":
    with wait_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()
else:
    lock = try_lock(sys.argv[1])
    print("held" if lock else "busy", flush=True)
    sys.stdin.read()
"""


def _holder(path: Path, how: str = "try") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), how], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_run_dir_in_use_by_another_process_is_refused_until_it_dies(tmp_path):
    from .test_cot_support import make_run_dir

    make_run_dir(tmp_path, n=2)
    holder = _holder(tmp_path / LOCK)
    try:
        with pytest.raises(RunDirError, match=f"^{tmp_path} is in use by another dt-eval process$"):
            RunDir(tmp_path).open()
        from dt_eval.reasoning.rescore import RescoreError, rescore_run

        with pytest.raises(RescoreError, match=f"^{tmp_path} is in use by another dt-eval process$"):
            rescore_run(tmp_path, "format")
        assert not (tmp_path / "cot.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: no chance to unlock; the operating system drops the lock
        holder.wait()
    with RunDir(tmp_path):
        pass
    assert "format" in rescore_run(tmp_path, "format")["mmar"]


def test_a_lock_held_here_refuses_a_second_process_and_is_released(tmp_path):
    path = tmp_path / "x.lock"
    lock = try_lock(path)
    assert lock is not None
    assert try_lock(path) is None  # a second lock object in this process is refused too
    probe = subprocess.run([sys.executable, "-c", HOLDER, str(path), "try"], cwd=ROOT, input="",
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "busy", probe.stderr
    lock.release()
    lock.release()  # idempotent
    again = try_lock(path)
    assert again is not None
    again.release()


def test_wait_lock_waits_for_the_other_process(tmp_path):
    path = tmp_path / "sub" / "build.lock"  # the parent folder is created
    holder = _holder(path, "wait")
    got = threading.Event()

    def build() -> None:
        with wait_lock(path):
            got.set()

    t = threading.Thread(target=build, daemon=True)
    try:
        assert try_lock(path) is None
        t.start()
        holder.stdin.close()  # the holder leaves its `with` block and exits
        assert holder.wait(timeout=60) == 0
        assert got.wait(timeout=60)
        t.join(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    lock = try_lock(path)  # released again after the `with` block
    assert lock is not None
    lock.release()


def test_no_module_imports_fcntl():
    found = []
    for pkg in ("dt_eval", "trained_recipe"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if "fcntl" in names:
                    found.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not found, found
