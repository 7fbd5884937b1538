"""The embedding cache: exact round trips, absent keys, and several writer processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np

from picbench.metrics.cache import TABLE, EmbeddingCache


def test_round_trip_is_exact_and_keyed_by_model(tmp_path):
    cache = EmbeddingCache(tmp_path / "store.sqlite")
    rng = np.random.default_rng(0)
    vectors = {f"sha{i}": rng.standard_normal(16).astype(np.float32) for i in range(700)}  # more than one SQL chunk
    cache.put_many("clip@abc", vectors)
    got = cache.get_many("clip@abc", list(vectors) + ["absent"])
    assert set(got) == set(vectors)
    assert all(np.array_equal(got[k], vectors[k]) and got[k].dtype == np.float32 for k in vectors)
    assert cache.get_many("dino@abc", list(vectors)) == {}
    assert cache.count("clip@abc") == 700


def test_rewrite_replaces_and_reopen_persists(tmp_path):
    path = tmp_path / "store.sqlite"
    EmbeddingCache(path).put_many("m", {"k": np.ones(4)})
    EmbeddingCache(path).put_many("m", {"k": np.full(4, 2.0)})
    again = EmbeddingCache(path)
    assert np.array_equal(again.get_many("m", ["k"])["k"], np.full(4, 2.0, np.float32))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert TABLE.startswith("emb_")


def _writer(path: str, worker: int) -> None:
    cache = EmbeddingCache(path)
    for i in range(40):
        cache.put_many("m", {f"w{worker}-{i}": np.full(8, worker * 1000 + i, np.float32)})


def test_several_processes_write_safely(tmp_path):
    path = str(tmp_path / "store.sqlite")
    EmbeddingCache(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = EmbeddingCache(path)
    assert cache.count("m") == 120
    assert cache.get_many("m", ["w2-39"])["w2-39"][0] == 2039
