"""dt_eval.serving.procs: the one way dt-eval starts, waits for and stops a server subprocess
(real child processes: a Python HTTP server, one that dies, one that ignores SIGTERM)."""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request

import pytest

from dt_eval.serving.procs import ServerProcess, ServerProcessError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals as on POSIX")

# A tiny HTTP server: logs to stderr, prints "ready: URL", then floods stdout (far more than a
# pipe buffer holds) and writes a marker file once all of it got out.
HTTP_SERVER = r"""
import http.server, sys, threading
from pathlib import Path
print("booting", file=sys.stderr, flush=True)
srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print(f"ready: http://127.0.0.1:{srv.server_address[1]}/", flush=True)
for i in range(20000):
    print(f"noise line {i} " + "x" * 100)
sys.stdout.flush()
Path(sys.argv[1]).write_text("flooded")
threading.Event().wait()
"""

# Ignores SIGTERM, starts a grandchild in its process group, prints the grandchild's pid as ready.
STUBBORN = r"""
import signal, subprocess, sys, threading
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
print(f"ready: {child.pid}", flush=True)
threading.Event().wait()
"""


def _until(cond, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_ready_line_health_check_drained_stdout_and_sigterm(tmp_path):
    log = tmp_path / "server.log"
    marker = tmp_path / "flooded"
    server = ServerProcess([sys.executable, "-c", HTTP_SERVER, str(marker)], name="the test server", log_path=log,
                           ready_prefix="ready: ")
    try:
        url = server.wait_ready(60)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
        assert server.wait_ready(60, health_url=url) == url
        # 2 MB went through stdout while nobody waited on it: it is drained
        _until(lambda: marker.exists() or server.poll() is not None)
        assert server.poll() is None and marker.exists(), server.log_tail()
    finally:
        code = server.stop()
    assert code == -signal.SIGTERM
    text = log.read_text()
    assert "booting" in text and "ready: http://127.0.0.1:" in text and "noise line 19999" in text


def test_health_check_alone(tmp_path):
    # No ready line: stdout and stderr both go to the log; readiness is the health URL answering.
    port_file = tmp_path / "port"
    code = ("import http.server, sys\nfrom pathlib import Path\n"
            "srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n"
            "print('serving', flush=True)\n"
            "Path(sys.argv[1]).write_text(str(srv.server_address[1]))\nsrv.serve_forever()\n")
    with ServerProcess([sys.executable, "-c", code, str(port_file)], log_path=tmp_path / "log") as server:
        _until(lambda: port_file.exists() and port_file.read_text())
        assert server.wait_ready(60, health_url=f"http://127.0.0.1:{port_file.read_text()}/") is None
    assert server.returncode == -signal.SIGTERM
    assert "serving" in (tmp_path / "log").read_text()


def test_death_before_ready_reports_exit_code_and_log_tail(tmp_path):
    script = "import sys\nprint('boom: no config.json in /models/x', file=sys.stderr)\nsys.exit(3)\n"
    server = ServerProcess([sys.executable, "-c", script], name="the model server", log_path=tmp_path / "log",
                           ready_prefix="ready: ")
    t0 = time.monotonic()
    with pytest.raises(ServerProcessError, match=r"^the model server exited with code 3 before it was ready; "
                                                 r"log tail:\n.*boom: no config\.json") as e:
        server.wait_ready(600)
    assert time.monotonic() - t0 < 60  # found out at once, not at the timeout
    assert "no config.json" in str(e.value)
    # the same through the health check
    server = ServerProcess([sys.executable, "-c", script], log_path=tmp_path / "log2")
    with pytest.raises(ServerProcessError, match="the server exited with code 3 before it was ready"):
        server.wait_ready(600, health_url="http://127.0.0.1:9/")


def test_not_ready_in_time(tmp_path):
    script = "import sys, threading\nprint('loading weights', file=sys.stderr, flush=True)\nthreading.Event().wait()\n"
    with ServerProcess([sys.executable, "-c", script], log_path=tmp_path / "log", ready_prefix="ready: ") as server:
        _until(lambda: "loading weights" in (tmp_path / "log").read_text())
        with pytest.raises(ServerProcessError, match=r"was not ready after 0\.3 s; log tail:\nloading weights"):
            server.wait_ready(0.3)


def test_stop_escalates_to_sigkill_and_takes_the_process_group(tmp_path):
    server = ServerProcess([sys.executable, "-c", STUBBORN], log_path=tmp_path / "log", ready_prefix="ready: ")
    grandchild = int(server.wait_ready(60))
    # its own session (a Ctrl-C at the terminal reaches only us) and process group, with its children
    assert os.getsid(server.pid) == server.pid != os.getsid(0)
    assert os.getpgid(grandchild) == server.pid
    t0 = time.monotonic()
    assert server.stop(((signal.SIGTERM, 0.5),)) == -signal.SIGKILL
    assert time.monotonic() - t0 < 30
    _until(lambda: _gone(grandchild))
    assert server.stop() == -signal.SIGKILL  # stopping again is harmless
