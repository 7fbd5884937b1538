"""The SQLite file of a run folder (``store.sqlite``): how it is opened, its schema and its writes.

The run store (:mod:`picbench.store.sqlite`) and the metric engine's embedding cache
(:mod:`picbench.metrics.cache`) share one file, so they open it one way: WAL mode (readers run beside
the one writer), a busy timeout that makes writers queue, and a retry of the switch to WAL, which
SQLite refuses at once, without its busy handler, when another connection races it (two ranks
opening a new store together). One schema version covers every table of the file, the store's and
the cache's: a file written under another version is refused, never silently reused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from picbench import __version__
from picbench.errors import PicbenchError

# Bump when a table's meaning changes (the store's or the cache's): a file of another schema is refused.
STORE_SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 300.0
CACHE_TABLE_PREFIX = "emb_"  # the embedding cache's tables; an older picbench created them outside the header
HEADER_TABLE = "store_meta"

TABLES = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY, method TEXT NOT NULL, method_version TEXT NOT NULL, params TEXT NOT NULL,
    sample_id TEXT NOT NULL, seed INTEGER NOT NULL, image TEXT, failure TEXT, smoke INTEGER NOT NULL,
    created REAL NOT NULL, pid INTEGER NOT NULL, writes INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS scores (
    generation_key TEXT NOT NULL, scorer_key TEXT NOT NULL, sample_id TEXT NOT NULL, seed INTEGER NOT NULL,
    score TEXT NOT NULL, created REAL NOT NULL, pid INTEGER NOT NULL, writes INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (generation_key, scorer_key));
CREATE TABLE IF NOT EXISTS run_parts (part TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS emb_vectors (
    model_id TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model_id, key));
CREATE TABLE IF NOT EXISTS emb_json (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key));
"""


class StoreError(PicbenchError):
    """The store cannot be opened or written (unwritable folder, full disk, corrupt file)."""


class IncompatibleStoreError(StoreError):
    """The store was written under a store schema this picbench does not read."""


def open_store_file(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """An autocommit connection to the SQLite file at ``path`` (created if absent) in WAL mode,
    with the schema in place; writes go through :func:`transaction`. A file that is not SQLite,
    holds foreign tables or was written under another schema version is a :class:`StoreError`."""
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=check_same_thread)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        enable_wal(db)
        db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable picbench store ({exc}); move it away or choose another --out") from exc
    try:
        _init_schema(db, path)
    except sqlite3.Error as exc:
        raise write_error(path, exc) from exc
    return db


def write_error(path: Path, exc: BaseException) -> StoreError:
    """The error a failed write of the store file raises: what failed, and that finished records stay."""
    return StoreError(f"cannot write {path}: {exc}. Finished records are kept; fix the cause (disk space, permissions) and rerun to resume")


def enable_wal(db: sqlite3.Connection, timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Switch to WAL, retrying while another connection's switch holds the lock (up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One immediate write transaction: writers queue on the busy timeout; any failure rolls back
    and is raised as it came (callers word the sqlite3 errors for their reader)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _init_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the missing tables and, in a new file, the header; refuse another schema version,
    and tables of something else. Cache tables an older picbench wrote outside the header are ours."""
    with transaction(db):
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        ours = {t for t in tables if not t.startswith(CACHE_TABLE_PREFIX)}
        if HEADER_TABLE in ours:
            meta = dict(db.execute(f"SELECT key, value FROM {HEADER_TABLE}"))
            found = meta.get("schema_version")
            if found != str(STORE_SCHEMA_VERSION):
                raise IncompatibleStoreError(
                    f"{path} was written by picbench {meta.get('picbench_version', '?')} with store schema "
                    f"{found}; this picbench {__version__} reads store schema {STORE_SCHEMA_VERSION}. Its records "
                    "are not reused: choose another --out, or move the old folder away to start afresh"
                )
        elif ours:
            raise IncompatibleStoreError(
                f"{path} holds tables {sorted(ours)} but no picbench store header: it is not a store this picbench can reuse; choose another --out"
            )
        for statement in filter(str.strip, TABLES.split(";")):
            db.execute(statement)
        if HEADER_TABLE not in ours:
            db.executemany(
                f"INSERT INTO {HEADER_TABLE} (key, value) VALUES (?, ?)",
                [("schema_version", str(STORE_SCHEMA_VERSION)), ("picbench_version", __version__), ("created", repr(time.time()))],
            )
