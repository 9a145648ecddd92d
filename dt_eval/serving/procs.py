"""Server subprocesses (model servers, the demo): start one, wait until it is ready, stop it.

- The server runs in its own session, so a Ctrl-C at the terminal reaches only dt-eval, which
  then stops the server's whole process group (vLLM's workers included).
- stdout: when the server announces readiness with a line (`ready_prefix`, e.g. the
  ``ready: URL`` of ``python -m dt_eval.serving.hfserver``), a pipe that a thread reads to the
  end, so it never fills up and blocks the server; each line is also copied to the log.
  Otherwise stdout goes where stderr goes.
- stderr: appended to `log_path`, or this process's stderr when None (`dt-eval serve` shows
  the server's log on the terminal).
- Ready: the ready line and/or a 2xx from `health_url`. The server's death ends the wait at
  once; errors give its exit code and the tail of its log.
- Stop: SIGTERM (or the given signals, each with its grace period) to the process group, then
  SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

LOG_TAIL_CHARS = 3000
_POSIX = os.name == "posix"


class ServerProcessError(RuntimeError):
    """The server exited, or did not become ready in time; the message ends with its log tail."""


class ServerProcess:
    def __init__(self, argv: Sequence[str], *, name: str = "the server", log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 ready_prefix: str | None = None):
        self.name = name
        self.log_path = Path(log_path) if log_path is not None else None
        self.ready_prefix = ready_prefix
        self._ready_value: str | None = None
        self._changed = threading.Event()  # the ready line arrived, or stdout closed
        self._stdout_closed = False
        log: IO[bytes] | None = open(self.log_path, "ab") if self.log_path is not None else None
        err = log if log is not None else sys.stderr
        try:
            self.proc = subprocess.Popen(
                list(argv), env=dict(env) if env is not None else None, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if ready_prefix is not None else err,
                stderr=err if ready_prefix is not None else subprocess.STDOUT,
                start_new_session=_POSIX)
        finally:
            if log is not None:
                log.close()  # the child has its own descriptor
        self._reader: threading.Thread | None = None
        if ready_prefix is not None:
            self._reader = threading.Thread(target=self._read_stdout, name=f"{name} stdout", daemon=True)
            self._reader.start()

    # -- state
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- ready
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        copy = open(self.log_path, "ab") if self.log_path is not None else None
        try:
            for raw in self.proc.stdout:
                if copy is not None:
                    copy.write(raw)
                    copy.flush()
                else:
                    sys.stderr.write(raw.decode("utf-8", "replace"))
                line = raw.decode("utf-8", "replace")
                if self._ready_value is None and self.ready_prefix and line.startswith(self.ready_prefix):
                    self._ready_value = line[len(self.ready_prefix):].strip()
                    self._changed.set()
        finally:
            if copy is not None:
                copy.close()
            self._stdout_closed = True
            self._changed.set()

    def _error(self, what: str) -> ServerProcessError:
        tail = self.log_tail()
        return ServerProcessError(f"{self.name} {what}" + (f"; log tail:\n{tail}" if tail else ""))

    def wait_ready(self, timeout_s: float, *, health_url: str | None = None, poll_s: float = 0.5) -> str | None:
        """Block until the server is ready: its ready line was printed (the text after the prefix is
        returned) and/or `health_url` answers 2xx. ServerProcessError if it exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            line_ok = self.ready_prefix is None or self._ready_value is not None
            if line_ok and health_url is None:
                return self._ready_value
            if line_ok:
                try:
                    with urllib.request.urlopen(health_url, timeout=5):
                        return self._ready_value
                except (urllib.error.URLError, OSError, ValueError) as e:
                    last = f" (last error from {health_url}: {e})"
            if self.proc.poll() is not None or (not line_ok and self._stdout_closed):
                try:
                    code = self.proc.wait(timeout=5)  # stdout closes as the process ends
                except subprocess.TimeoutExpired:
                    raise self._error("closed its stdout without printing its ready line") from None
                raise self._error(f"exited with code {code} before it was ready")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error(f"was not ready after {timeout_s:g} s{last}")
            if line_ok:
                time.sleep(min(left, poll_s))
            else:
                self._changed.wait(min(left, poll_s))

    # -- stop
    def _signal_group(self, sig: int) -> bool:
        """Send `sig` to the server's process group; False when it is gone."""
        try:
            if _POSIX:
                os.killpg(self.proc.pid, sig)
            elif sig == signal.SIGTERM:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _kill_group(self) -> None:
        try:
            if _POSIX:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, steps: Sequence[tuple[int, float]] = ((signal.SIGTERM, 15.0),)) -> int | None:
        """Send each (signal, grace seconds) in turn to the server's process group until the server
        exits, then SIGKILL. Returns its exit code (negative: killed by that signal)."""
        if self.proc.poll() is None:
            for sig, grace_s in steps:
                if not self._signal_group(sig):
                    break
                try:
                    self.proc.wait(timeout=grace_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if self.proc.poll() is None:
                self._kill_group()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:  # stuck in the kernel: nothing more to do
                    pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
