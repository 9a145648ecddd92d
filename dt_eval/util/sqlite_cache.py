"""A key-value table in an SQLite file: the judge's and the embedder's caches.

Safe across threads (one connection behind a lock) and processes (WAL journal, 30 s busy
timeout). Keys and values are tuples of columns declared by the caller, so each cache keeps its
own readable table (`sqlite3 judge_cache.sqlite 'SELECT * FROM judge_cache'`).

Schema versions: the table `dt_eval_cache_schema` records each table's version. A file whose
table has other columns or another version is refused (CacheSchemaError naming the file), never
silently rewritten: its entries may be what makes earlier numbers reproducible. A table made
before versions were recorded is taken as version 1 when its columns match.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_SCHEMA_TABLE = "dt_eval_cache_schema"
# SQLite's historical limit on bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER).
_MAX_PARAMS = 999

Column = tuple[str, str]  # (name, SQL type), e.g. ("raw", "TEXT")


class CacheSchemaError(RuntimeError):
    pass


class SqliteCache:
    """`table` in the SQLite file `path`, keyed by the `keys` columns, holding the `values` columns
    (all NOT NULL). Rows are tuples in the declared column order."""

    def __init__(self, path: str | Path, table: str, keys: Sequence[Column], values: Sequence[Column],
                 version: int = 1):
        self.path = Path(path)
        self.table = table
        self.keys = [k for k, _ in keys]
        self.values = [v for v, _ in values]
        self.version = version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._create([*keys, *values])
        except BaseException:
            self._db.close()
            raise
        self._where = " AND ".join(f"{k}=?" for k in self.keys)

    def _create(self, columns: Sequence[Column]) -> None:
        cols = ", ".join(f"{name} {kind} NOT NULL" for name, kind in columns)
        self._db.execute("BEGIN IMMEDIATE")  # one process at a time creates and stamps the table
        try:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({cols}, PRIMARY KEY ({', '.join(self.keys)}))")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {_SCHEMA_TABLE} (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            have = [(r[1], r[2].upper()) for r in self._db.execute(f"PRAGMA table_info({self.table})")]
            want = [(name, kind.upper()) for name, kind in columns]
            row = self._db.execute(f"SELECT version FROM {_SCHEMA_TABLE} WHERE name=?", (self.table,)).fetchone()
            if have != want or (row is not None and row[0] != self.version):
                found = f"version {row[0]}" if row is not None else "no version"
                raise CacheSchemaError(
                    f"{self.path}: table {self.table} has columns {', '.join(n for n, _ in have)} ({found}); "
                    f"this dt-eval reads columns {', '.join(n for n, _ in want)} (version {self.version}): "
                    "use another cache file or delete this one")
            if row is None:
                self._db.execute(f"INSERT INTO {_SCHEMA_TABLE} VALUES (?, ?)", (self.table, self.version))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def get(self, key: Sequence[Any]) -> tuple | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(self.values)} FROM {self.table} WHERE {self._where}",
                                   tuple(key)).fetchone()
        return tuple(row) if row is not None else None

    def get_many(self, keys: Iterable[Sequence[Any]]) -> dict[tuple, tuple]:
        """{key: values} for the keys that are stored."""
        # Keys sharing all but the last column go in one `last IN (...)` query, which the
        # primary-key index serves (a row-value IN would scan the table).
        groups: dict[tuple, list[Any]] = {}
        for k in dict.fromkeys(tuple(k) for k in keys):
            groups.setdefault(k[:-1], []).append(k[-1])
        head, last = self.keys[:-1], self.keys[-1]
        per = _MAX_PARAMS - len(head)
        cols = ", ".join([last, *self.values])
        where = "".join(f"{k}=? AND " for k in head)
        out: dict[tuple, tuple] = {}
        with self._lock:
            for prefix, lasts in groups.items():
                for i in range(0, len(lasts), per):
                    part = lasts[i:i + per]
                    q = f"SELECT {cols} FROM {self.table} WHERE {where}{last} IN ({', '.join('?' * len(part))})"
                    for r in self._db.execute(q, (*prefix, *part)):
                        out[(*prefix, r[0])] = tuple(r[1:])
        return out

    def put(self, key: Sequence[Any], values: Sequence[Any]) -> None:
        self.put_many([(key, values)])

    def put_many(self, rows: Iterable[tuple[Sequence[Any], Sequence[Any]]]) -> None:
        """Insert or replace rows, all in one transaction."""
        marks = ", ".join("?" * (len(self.keys) + len(self.values)))
        data = [(*k, *v) for k, v in rows]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES ({marks})", data)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
