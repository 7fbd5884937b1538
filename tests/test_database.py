"""picbench.database, the one opener of ``store.sqlite``: the WAL-switch retry now serves the
embedding cache as well as the store, and one schema version covers the cache's tables and the
store's (files of the old layout are read as before; another version is refused by both)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from picbench.database import STORE_SCHEMA_VERSION, TABLES, IncompatibleStoreError, StoreError, open_store_file
from picbench.metrics.cache import JSON_TABLE, TABLE, EmbeddingCache
from picbench.store import STORE_FILE, RunStore

OLD_CACHE_TABLE = (  # what the cache created, outside any header, before its tables joined the store's schema
    f"CREATE TABLE {TABLE} (model_id TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model_id, key))"
)


def _writer_holding_the_file(path: Path) -> tuple[sqlite3.Connection, threading.Timer]:
    """Another connection mid-write in rollback-journal mode, finishing a moment later: SQLite then
    refuses a switch to WAL with "database is locked" at once, without waiting on its busy handler."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute(OLD_CACHE_TABLE)
    other.execute("BEGIN")
    other.execute(f"INSERT INTO {TABLE} VALUES ('m', 'k', 4, ?)", (np.arange(4, dtype=np.float32).tobytes(),))
    return other, threading.Timer(0.5, other.execute, ("COMMIT",))


def test_the_race_fails_without_the_retry(tmp_path: Path) -> None:
    """The situation the next test puts the cache in is real: the old cache's plain switch fails."""
    path = tmp_path / STORE_FILE
    other, _ = _writer_holding_the_file(path)
    plain = sqlite3.connect(path, timeout=60.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        plain.execute("PRAGMA journal_mode=WAL")
    other.execute("ROLLBACK")


def test_the_cache_retries_the_wal_switch_while_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    other, finish = _writer_holding_the_file(path)
    finish.start()
    try:
        cache = EmbeddingCache(path)
    finally:
        finish.join()
    np.testing.assert_array_equal(cache.get_many("m", ["k"])["k"], np.arange(4, dtype=np.float32))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_a_cache_opened_first_leaves_a_file_the_store_reuses(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / STORE_FILE)
    cache.put_many("clip", {"k": np.ones(3)})
    cache.put_json("intervals", "x", {"a": 1})
    with RunStore(tmp_path) as store:
        store.put_part("0/1", {"method": "paste"}, "done")
        assert store.parts() == {"0/1": ({"method": "paste"}, "done")}
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert dict(db.execute("SELECT key, value FROM store_meta"))["schema_version"] == str(STORE_SCHEMA_VERSION)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {TABLE, JSON_TABLE, "store_meta", "generations", "scores", "run_parts"} == tables
    assert all(f"EXISTS {t} " in TABLES for t in tables), "every table of the file is in the one schema"
    assert EmbeddingCache(tmp_path / STORE_FILE).get_json("intervals", "x") == {"a": 1}


def test_files_of_the_old_layout_open_as_before(tmp_path: Path) -> None:
    """A cache-only file (emb tables, no header) and a store written before the cache ran (header,
    no emb tables) both open, keep their rows and gain the missing tables."""
    cache_only = tmp_path / "cache-only"
    cache_only.mkdir()
    with sqlite3.connect(cache_only / STORE_FILE) as db:
        db.execute(OLD_CACHE_TABLE)
        db.execute(f"INSERT INTO {TABLE} VALUES ('m', 'k', 2, ?)", (np.array([1, 2], np.float32).tobytes(),))
    np.testing.assert_array_equal(EmbeddingCache(cache_only / STORE_FILE).get_many("m", ["k"])["k"], [1, 2])
    RunStore(cache_only).close()
    store_only = tmp_path / "store-only"
    RunStore(store_only).close()
    with sqlite3.connect(store_only / STORE_FILE) as db:
        db.execute(f"DROP TABLE {TABLE}")
        db.execute(f"DROP TABLE {JSON_TABLE}")
    cache = EmbeddingCache(store_only / STORE_FILE)
    cache.put_many("m", {"k": np.zeros(2)})
    assert cache.count("m") == 1


def test_the_cache_refuses_another_schema_version_as_the_store_does(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        db.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(IncompatibleStoreError) as from_store:
        RunStore(tmp_path)
    with pytest.raises(IncompatibleStoreError) as from_cache:
        EmbeddingCache(tmp_path / STORE_FILE)
    assert str(from_cache.value) == str(from_store.value) and "store schema 99" in str(from_cache.value)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not sqlite" * 200)
    with pytest.raises(StoreError, match="not a usable picbench store"):
        EmbeddingCache(garbage)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE results (x)")
    with pytest.raises(IncompatibleStoreError, match="no picbench store header"):
        open_store_file(foreign)
