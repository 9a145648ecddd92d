"""The run directory: config.json, append-only samples.jsonl, results.json.

Durability: each finished sample is one line written with a single O_APPEND write, so a crash
(even SIGKILL) leaves at worst a torn last line, which `load` detects and cuts off. fsync runs
periodically and at close (it guards against power loss, not process death).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SAMPLES = "samples.jsonl"
CONFIG = "config.json"
RESULTS = "results.json"
LOCK = ".lock"


class RunDirError(RuntimeError):
    pass


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_samples(path: Path, repair: bool = False) -> tuple[list[dict[str, Any]], int]:
    """All intact sample lines, and how many torn/corrupt lines were dropped.

    A torn final line (a crash mid-write) is cut off the file when `repair` is set.
    """
    file = path / SAMPLES if path.is_dir() else path
    if not file.exists():
        return [], 0
    data = file.read_bytes()
    records: list[dict[str, Any]] = []
    dropped = 0
    good_end = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        line = data[pos:end]
        if line.strip():
            try:
                rec = json.loads(line)
                if nl < 0:  # parsed but unterminated: still a torn write
                    raise ValueError("unterminated")
                records.append(rec)
                good_end = end + 1
            except ValueError:
                dropped += 1
        else:
            good_end = end + 1 if nl >= 0 else good_end
        pos = end + 1
    if repair and good_end < len(data):
        with open(file, "r+b") as f:
            f.truncate(good_end)
    return records, dropped


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._last_sync = 0.0
        self._unsynced = 0

    # -- lifecycle
    def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RunDirError(f"{self.path} is in use by another dt-eval process") from None
        self._fd = os.open(self.path / SAMPLES, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def read_config(self) -> dict[str, Any] | None:
        if not self.config_path.exists():
            return None
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config_path, config)

    def write_results(self, results: dict[str, Any]) -> None:
        write_json_atomic(self.path / RESULTS, results)

    def load_samples(self) -> tuple[list[dict[str, Any]], int]:
        return read_samples(self.path, repair=True)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        assert self._fd is not None, "RunDir not open"
        for rec in records:
            line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
            view = memoryview(line)
            while view:  # one write per line in practice: a crash tears at most this line
                view = view[os.write(self._fd, view):]
            self._unsynced += 1
        now = time.monotonic()
        if self._unsynced and now - self._last_sync > 1.0:
            os.fsync(self._fd)
            self._last_sync, self._unsynced = now, 0


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record written for each key wins (a --retry-errors redo supersedes the error)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        out[rec["key"]] = rec
    return out
