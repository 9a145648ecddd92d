"""dt_eval.util.sqlite_cache: the one SQLite key-value store behind the judge and embedding caches.
Cache files written by dt-eval 0.1.0 still read; another schema is refused, not rewritten;
lookups span many keys, threads and a second process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from dt_eval.reasoning.embedding import EmbeddingCache
from dt_eval.reasoning.judge import JudgeCache
from dt_eval.util.sqlite_cache import CacheSchemaError, SqliteCache

ROOT = Path(__file__).resolve().parents[1]
KEYS = [("model", "TEXT"), ("sha", "TEXT"), ("n", "INTEGER")]
VALUES = [("raw", "TEXT")]

# The tables exactly as dt-eval 0.1.0 created them (no schema table).
OLD_JUDGE = ("CREATE TABLE judge_cache (judge_model TEXT NOT NULL, prompt_version TEXT NOT NULL, "
             "item_id TEXT NOT NULL, chain_hash TEXT NOT NULL, rater INTEGER NOT NULL, raw TEXT NOT NULL, "
             "created REAL NOT NULL, PRIMARY KEY (judge_model, prompt_version, item_id, chain_hash, rater))")
OLD_EMBED = ("CREATE TABLE embedding_cache (model_key TEXT NOT NULL, text_sha TEXT NOT NULL, "
             "n_chunks INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model_key, text_sha))")


def test_caches_written_by_the_previous_release_still_read(tmp_path):
    db = sqlite3.connect(tmp_path / "judge.sqlite")
    db.execute(OLD_JUDGE)
    db.execute("INSERT INTO judge_cache VALUES ('gpt', 'v1', 'item-1', 'abc', 2, '{\"score\": 7}', 1.0)")
    db.commit()
    db.close()
    cache = JudgeCache(tmp_path / "judge.sqlite")
    assert cache.get(("gpt", "v1", "item-1", "abc", 2)) == '{"score": 7}'
    assert cache.get(("gpt", "v1", "item-1", "abc", 3)) is None
    cache.put(("gpt", "v1", "item-2", "def", 0), "new")
    assert len(cache) == 2
    cache.close()

    vec = np.arange(4, dtype=np.float32)
    db = sqlite3.connect(tmp_path / "embed.sqlite")
    db.execute(OLD_EMBED)
    db.execute("INSERT INTO embedding_cache VALUES ('m', 's1', 3, ?)", (vec.tobytes(),))
    db.commit()
    db.close()
    emb = EmbeddingCache(tmp_path / "embed.sqlite")
    got = emb.get_many("m", ["s1", "s2"])
    assert list(got) == ["s1"] and np.array_equal(got["s1"][0], vec) and got["s1"][1] == 3
    emb.close()


def test_another_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "c.sqlite"
    SqliteCache(path, "t", KEYS, VALUES, version=1).put(("m", "a", 1), ("x",))
    with pytest.raises(CacheSchemaError, match=r"c\.sqlite: table t has columns model, sha, n, raw \(version 1\); this dt-eval "
                                                r"reads columns model, sha, n, raw \(version 2\)"):
        SqliteCache(path, "t", KEYS, VALUES, version=2)
    with pytest.raises(CacheSchemaError, match=r"has columns model, sha, n, raw \(version 1\); .* raw, created \(version 1\)"):
        SqliteCache(path, "t", KEYS, [("raw", "TEXT"), ("created", "REAL")])
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE old (a TEXT NOT NULL, PRIMARY KEY (a))")  # unversioned, other columns
    db.commit()
    db.close()
    with pytest.raises(CacheSchemaError, match=r"table old has columns a \(no version\)"):
        SqliteCache(path, "old", [("a", "TEXT")], VALUES)
    assert SqliteCache(path, "t", KEYS, VALUES).get(("m", "a", 1)) == ("x",)  # untouched


def test_get_many_put_many_across_chunks_and_key_prefixes(tmp_path):
    cache = SqliteCache(tmp_path / "c.sqlite", "t", KEYS, VALUES)
    rows = [((f"m{i % 3}", f"s{i}", i % 2), (f"v{i}",)) for i in range(2500)]  # > 999 keys per prefix
    cache.put_many(rows)
    assert len(cache) == 2500
    asked = [k for k, _ in rows[::2]] + [("m0", "missing", 0), ("nope", "s1", 1)]
    got = cache.get_many(asked + asked[:5])  # duplicates are fine
    assert got == {k: v for k, v in rows[::2]}
    cache.put(("m0", "s0", 0), ("replaced",))
    assert cache.get(("m0", "s0", 0)) == ("replaced",) and len(cache) == 2500


def test_threads_and_a_second_process_share_the_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = SqliteCache(path, "t", KEYS, VALUES)

    def work(t: int) -> None:
        for i in range(50):
            cache.put((f"t{t}", str(i), i), (f"{t}-{i}",))
            assert cache.get((f"t{t}", str(i), i)) == (f"{t}-{i}",)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys\nfrom dt_eval.util.sqlite_cache import SqliteCache\n"
                               f"c = SqliteCache(sys.argv[1], 't', {KEYS!r}, {VALUES!r})\n"
                               "c.put_many(((('p', str(i), i), ('proc',)) for i in range(300)))\n",
                               str(path)], cwd=ROOT)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.wait(timeout=60) == 0
    assert len(cache) == 8 * 50 + 300
    assert cache.get(("p", "299", 299)) == ("proc",)
