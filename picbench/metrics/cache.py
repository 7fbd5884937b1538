"""On-disk embedding cache, so that a reference image is encoded once per model, ever.

Embeddings live in a SQLite table of the run's ``store.sqlite``, opened as the store opens it
(:func:`picbench.database.open_store_file`: WAL mode, so several scoring processes share it; its
tables under the store's schema version), keyed by (model id, sha256 of the image bytes or text).
The model id (:attr:`picbench.metrics.encoders.Encoder.model_id`) includes the weight hash,
preprocessing, activation, precision and device type, so different weights, or an fp32 and a bf16
run, never share an entry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from picbench.database import open_store_file, transaction

TABLE = "emb_vectors"  # the schema of both tables is picbench.database.TABLES
JSON_TABLE = "emb_json"
_CHUNK = 500  # SQLite's bound-parameter limit is 999 on old builds


class EmbeddingCache:
    """float32 vectors keyed by (model_id, content sha256); safe for several processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = open_store_file(self.path, check_same_thread=False)
        self._writing = threading.Lock()  # one connection serves the engine's threads: one transaction at a time

    def get_many(self, model_id: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (missing keys are simply absent)."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT key, dim, vec FROM {TABLE} WHERE model_id = ? AND key IN ({marks})", (model_id, *chunk))
            for key, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] == dim:  # a torn write never passes as a vector
                    found[key] = vec.copy()
        return found

    def put_many(self, model_id: str, items: Mapping[str, np.ndarray]) -> None:
        rows = []
        for key, vec in items.items():
            arr = np.ascontiguousarray(np.asarray(vec, dtype=np.float32).reshape(-1))
            rows.append((model_id, key, int(arr.shape[0]), arr.tobytes()))
        with self._writing, transaction(self._conn):
            self._conn.executemany(f"INSERT OR REPLACE INTO {TABLE} (model_id, key, dim, vec) VALUES (?, ?, ?, ?)", rows)

    def get_json(self, kind: str, key: str) -> dict | None:
        """A JSON document kept beside the vectors (the engine's provenance under its fingerprint)."""
        row = self._conn.execute(f"SELECT value FROM {JSON_TABLE} WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def put_json(self, kind: str, key: str, value: dict) -> None:
        with self._writing, transaction(self._conn):
            self._conn.execute(
                f"INSERT OR REPLACE INTO {JSON_TABLE} (kind, key, value) VALUES (?, ?, ?)",
                (kind, key, json.dumps(value, sort_keys=True, default=str)),
            )

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self._conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
        return self._conn.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE model_id = ?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        self._conn.close()
