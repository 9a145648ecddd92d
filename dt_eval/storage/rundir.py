"""The run directory: config.json, append-only samples.jsonl, results.json.

Durability: each finished sample is one line written with a single O_APPEND write, so a crash
(even SIGKILL) leaves at worst a torn last line, which `load` detects and cuts off. fsync runs
periodically and at close (it guards against power loss, not process death). Appends may come
from several threads; every line encodes as UTF-8 whatever strings a record holds. A complete
line that is not a sample record is an error naming the line, never silently skipped.

Readers (report, rescore, export, leaderboard build and verify, analyze) use `RunDir.read()`:
typed records (dt_eval/records.py), read-only, never repairing a run they only read. The runner
alone cuts a torn tail (`load_samples`), since it appends after it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dt_eval.errors import DtEvalError
from dt_eval.util.locks import HeldLock, try_lock

if TYPE_CHECKING:  # the typed records (pydantic) load only when there is something to type
    from dt_eval.records import RunConfig, RunResults, SampleRecord

SAMPLES = "samples.jsonl"
CONFIG = "config.json"
RESULTS = "results.json"
LOCK = ".lock"


class RunDirError(DtEvalError, RuntimeError):
    pass


def json_text(data: Any, **kw: Any) -> str:
    """JSON that always encodes as UTF-8: text with a lone surrogate (a model output, a broken
    metadata string) falls back to \\u escapes, which read back to the same string."""
    text = json.dumps(data, ensure_ascii=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, ensure_ascii=True, **kw)
    return text


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json_text(data, indent=2))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SamplesError(RunDirError, ValueError):
    """samples.jsonl holds a complete line that is not a sample record: not a crash's torn write."""


# what every reader indexes directly; a line without them was not written by dt-eval
_RECORD_FIELDS = ("key", "task", "id", "repeat")


@dataclass
class SamplesScan:
    records: list[dict[str, Any]]
    bad_lines: list[int]  # 1-based numbers of unreadable lines (a torn write, power-loss garbage)
    good_end: int  # byte offset just past the last intact line
    line_numbers: list[int] = field(default_factory=list)  # of each record, 1-based

    def typed(self, file: Path) -> list[SampleRecord]:
        """The records as SampleRecords; a line whose fields have the wrong types is named."""
        if not self.records:
            return []
        from pydantic import ValidationError

        from dt_eval.records import SampleRecord

        out = []
        for rec, lineno in zip(self.records, self.line_numbers):
            try:
                out.append(SampleRecord.model_validate(rec))
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err.get("loc", ()))
                raise SamplesError(f"{file}: line {lineno} is not a dt-eval sample record ({where}: {err.get('msg')}); "
                                   "something else wrote to this file: remove that line, or use another --output"
                                   ) from None
        return out


def scan_samples(file: Path) -> SamplesScan:
    """Every sample line of `file`. A line that is not JSON is counted in `bad_lines` (the
    sample is generated again); a complete JSON line that is not a sample record raises
    SamplesError naming the line: that is not what a crash leaves, so it is not silently dropped."""
    data = file.read_bytes() if file.exists() else b""
    scan = SamplesScan([], [], 0)
    pos, lineno = 0, 0
    while pos < len(data):
        lineno += 1
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        if data[pos:end].strip():
            try:
                rec = json.loads(data[pos:end])
            except ValueError:
                rec = _UNPARSABLE
            if rec is _UNPARSABLE or nl < 0:  # unparsable, or parsed but unterminated: a torn write
                scan.bad_lines.append(lineno)
            else:
                problem = _not_a_record(rec)
                if problem:
                    raise SamplesError(
                        f"{file}: line {lineno} is {problem}, not a dt-eval sample record; something else "
                        "wrote to this file: remove that line, or use another --output")
                scan.records.append(rec)
                scan.line_numbers.append(lineno)
                scan.good_end = end + 1
        elif nl >= 0:
            scan.good_end = end + 1
        pos = end + 1
    return scan


_UNPARSABLE = object()
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _not_a_record(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return _JSON_KINDS.get(type(rec), type(rec).__name__)
    missing = [repr(k) for k in _RECORD_FIELDS if k not in rec]
    return f"an object without {', '.join(missing)}" if missing else None


def read_samples(path: Path, repair: bool = False) -> tuple[list[dict[str, Any]], int]:
    """All intact sample lines as plain dicts, and how many torn/corrupt lines were dropped (the
    raw layer; readers use `RunDir.read()`, which gives typed records).

    A torn final line (a crash mid-write) is cut off the file when `repair` is set.
    """
    file = path / SAMPLES if path.is_dir() else path
    scan = scan_samples(file)
    if repair:
        _cut_torn_tail(file, scan)
    return scan.records, len(scan.bad_lines)


def _cut_torn_tail(file: Path, scan: SamplesScan) -> None:
    if file.exists() and scan.good_end < file.stat().st_size:
        with open(file, "r+b") as f:
            f.truncate(scan.good_end)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self._lock: HeldLock | None = None
        self._last_sync = 0.0
        self._unsynced = 0
        # appends come from worker threads (record building runs off the event loop): one line at
        # a time, and never onto a closed (possibly reused) file descriptor
        self._write_lock = threading.Lock()

    # -- lifecycle
    def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = try_lock(self.path / LOCK)
        if self._lock is None:
            raise RunDirError(f"{self.path} is in use by another dt-eval process")
        self._fd = os.open(self.path / SAMPLES, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)

    def close(self) -> None:
        with self._write_lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def remove_if_empty(self) -> None:
        """Remove the (closed) directory when it holds nothing but what `open` made: no samples, no
        config. A run that could not start leaves no directory behind."""
        samples = self.path / SAMPLES
        if (self.path / CONFIG).exists() or (samples.exists() and samples.stat().st_size):
            return
        for name in (SAMPLES, LOCK):
            (self.path / name).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # something else is in it
            pass

    def __enter__(self) -> RunDir:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def read_config(self) -> RunConfig | None:
        """config.json, or None when the run has none yet."""
        if not self.config_path.exists():
            return None
        from pydantic import ValidationError

        from dt_eval.records import RunConfig

        try:
            return RunConfig.model_validate(json.loads(self.config_path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as e:  # ValidationError is a ValueError; named for the reader
            raise RunDirError(f"{self.path}: cannot read {CONFIG}: {e}") from None

    def write_config(self, config: RunConfig | Mapping[str, Any]) -> None:
        write_json_atomic(self.config_path, _plain(config))

    def write_results(self, results: RunResults | Mapping[str, Any]) -> None:
        write_json_atomic(self.path / RESULTS, _plain(results))

    def load_samples(self) -> tuple[list[SampleRecord], list[int]]:
        """The runner's load: records, and the numbers of the unreadable lines dropped; a torn last
        line is cut off (the run appends after it)."""
        file = self.path / SAMPLES
        scan = scan_samples(file)
        records = scan.typed(file)
        _cut_torn_tail(file, scan)
        return records, scan.bad_lines

    def read(self) -> Run:
        """The run as it is on disk, for readers: config.json (None when absent), the latest record
        per key, and the torn/corrupt lines that were skipped. Never writes (a torn tail stays)."""
        file = self.path / SAMPLES
        scan = scan_samples(file)
        records = scan.typed(file)
        return Run(path=self.path, config=self.read_config(), samples=latest_by_key(records),
                   records=len(records), bad_lines=scan.bad_lines)

    def append(self, records: Iterable[SampleRecord | Mapping[str, Any]]) -> None:
        """Append records, one line each. All are encoded before anything is written, so a record
        that cannot be encoded raises and writes nothing. Safe to call from several threads."""
        lines = [(json_text(_plain(rec)) + "\n").encode("utf-8") for rec in records]
        with self._write_lock:
            if self._fd is None:
                raise RunDirError(f"{self.path}: the run directory is not open")
            for line in lines:
                view = memoryview(line)
                while view:  # one write per line in practice: a crash tears at most this line
                    view = view[os.write(self._fd, view):]
                self._unsynced += 1
            now = time.monotonic()
            if self._unsynced and now - self._last_sync > 1.0:
                os.fsync(self._fd)
                self._last_sync, self._unsynced = now, 0


@dataclass
class Run:
    """A run directory as `RunDir.read()` finds it."""

    path: Path
    config: RunConfig | None  # None: no config.json
    samples: dict[str, SampleRecord]  # key -> the latest record of that key (file order of keys)
    records: int = 0  # intact sample lines (superseded ones included)
    bad_lines: list[int] = field(default_factory=list)  # torn / corrupt lines skipped (1-based)

    @property
    def tasks(self) -> list[str]:
        """The run's tasks, in the order their first sample appears."""
        return list(dict.fromkeys(s.task for s in self.samples.values()))

    def task_samples(self, task: str, repeat: int | None = None) -> list[SampleRecord]:
        return [s for s in self.samples.values() if s.task == task and (repeat is None or s.repeat == repeat)]


def _plain(data: Any) -> Any:
    """A record model as the plain Python the JSON encoder takes (the fields it carries)."""
    return data.to_json_dict() if hasattr(data, "to_json_dict") else data


def latest_by_key(records: Iterable[Any]) -> dict[str, Any]:
    """The last record written for each key wins (a --retry-errors redo supersedes the error)."""
    out: dict[str, Any] = {}
    for rec in records:
        out[rec["key"] if isinstance(rec, Mapping) else rec.key] = rec
    return out
