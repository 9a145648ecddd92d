"""Exclusive file locks between processes, portable (filelock: flock on Linux/macOS, msvcrt on
Windows). The operating system drops a lock when its holder dies, so a killed run never leaves
a directory locked. Locks exclude other processes and also a second lock object on the same
file in this process.

filelock is imported when a lock is taken, not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class HeldLock:
    """A held lock; `release()` (idempotent) gives it back."""

    def __init__(self, lock: Any):
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _new(path: str | Path) -> Any:
    import filelock

    # thread_local=False: a run directory may be locked in one thread and released in another
    return filelock.FileLock(str(path), mode=0o644, thread_local=False)


def try_lock(path: str | Path) -> HeldLock | None:
    """Take the lock on `path` (created if missing) without waiting; None while someone else holds it."""
    import filelock

    lock = _new(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return None
    return HeldLock(lock)


@contextmanager
def wait_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock on `path` for the `with` block, waiting while another process holds it
    (one builder of a cached artefact at a time). Creates the parent directory."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = _new(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
