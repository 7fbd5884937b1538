"""The resumable run store: one embedded SQLite file (OUT/store.sqlite, WAL mode) per output folder.

It holds generation records keyed by ``Generation.key``, Score records keyed by (generation key,
scorer key) and the run parts (one per shard) that a merge needs; the metric engine's embedding
cache keeps its ``emb_*`` tables in the same file, under one schema version (the file's opening,
schema and transactions: :mod:`picbench.database`). Every record is committed as soon as it is
finished, and an image is on disk (written atomically) before its record exists, so a run killed at
any point loses only the work in flight. Several processes (shards, ranks) may write one store at
once: WAL lets readers run beside the one writer, and a busy timeout makes writers queue.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from picbench.atomic import atomic_write, remove_stale_tmp
from picbench.database import StoreError, open_store_file, transaction, write_error
from picbench.paths import safe_file_stem
from picbench.records import Generation, Score, canonical_json

STORE_FILE = "store.sqlite"
IMAGES_DIR = "images"
SMOKE_PNG_KEY = "picbench-smoke"
_CHUNK = 500  # keys per IN (...) query, well under SQLite's variable limit


class RunStore:
    """Generation and score records of one output folder; a context manager that closes itself."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / STORE_FILE
        self.images_dir = self.out_dir / IMAGES_DIR
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"output folder {self.out_dir} cannot be created: {exc.strerror or exc}; choose another --out") from exc
        if not os.access(self.out_dir, os.W_OK | os.X_OK):
            raise StoreError(f"output folder {self.out_dir} is not writable; choose another --out")
        self._db = open_store_file(self.path)

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One immediate transaction (:func:`picbench.database.transaction`) whose sqlite3 errors
        say that finished records are kept."""
        try:
            with transaction(self._db):
                yield
        except sqlite3.Error as exc:
            raise write_error(self.path, exc) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def remove_stale_tmp(self) -> list[Path]:
        """Remove the temporary files that writers killed mid-write left in the run folder and
        its images/ (a live writer's are kept)."""
        return [*remove_stale_tmp(self.out_dir), *remove_stale_tmp(self.images_dir)]

    # -- images ----------------------------------------------------------------------------------

    def image_name(self, generation: Generation) -> str:
        """A readable, unique file name: sample id, seed and the start of the generation key."""
        return f"{IMAGES_DIR}/{safe_file_stem(generation.sample_id)}__seed{generation.seed}__{generation.key[:12]}.png"

    def save_image(self, image: Image.Image, relative: str, *, smoke: bool = False) -> str:
        """Write a PNG atomically (temporary file in the same folder, fsync, rename): a reader sees
        the old file or the whole new one, never half. A smoke image says so in its PNG text.
        Returns ``relative`` (to the run folder)."""
        target = self.out_dir / relative
        info = PngInfo()
        if smoke:
            info.add_text(SMOKE_PNG_KEY, "random-weight models (--models tiny): this image means nothing")
        try:
            with atomic_write(target, "wb") as fh:
                image.save(fh, format="PNG", pnginfo=info)
        except OSError as exc:
            raise StoreError(
                f"cannot write image {target}: {exc.strerror or exc}. Finished records are kept; "
                "free space or fix permissions and rerun to resume"
            ) from exc
        return relative

    # -- generations -----------------------------------------------------------------------------

    def put_generation(self, generation: Generation) -> None:
        """Record a finished generation (an image or a failure). Writing a key twice counts in
        ``writes``, which is how tests prove that nothing finished is recomputed."""
        g = generation
        with self._write():
            self._db.execute(
                "INSERT INTO generations (key, method, method_version, params, sample_id, seed, image, failure, smoke, created, pid)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET image = excluded.image, failure = excluded.failure,"
                " smoke = excluded.smoke, created = excluded.created, pid = excluded.pid, writes = writes + 1",
                (
                    g.key,
                    g.method,
                    g.method_version,
                    canonical_json(dict(g.params)),
                    g.sample_id,
                    g.seed,
                    g.image_path,
                    g.failure,
                    int(g.smoke),
                    time.time(),
                    os.getpid(),
                ),
            )

    def get_generations(self, keys: Iterable[str]) -> dict[str, Generation]:
        """Finished generations among ``keys``."""
        found: dict[str, Generation] = {}
        cols = "key, method, method_version, params, sample_id, seed, image, failure, smoke"
        for rows in self._select_in(f"SELECT {cols} FROM generations WHERE key IN ({{}})", list(keys)):
            for key, method, version, params, sample_id, seed, image, failure, smoke in rows:
                found[key] = Generation(method, version, json.loads(params), sample_id, int(seed), image, bool(smoke), failure)
        return found

    # -- scores ----------------------------------------------------------------------------------

    def put_score(self, generation_key: str, scorer_key: str, score: Score) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO scores (generation_key, scorer_key, sample_id, seed, score, created, pid)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(generation_key, scorer_key) DO UPDATE SET score = excluded.score,"
                " created = excluded.created, pid = excluded.pid, writes = writes + 1",
                (
                    generation_key,
                    scorer_key,
                    score.sample_id,
                    score.seed,
                    json.dumps(score.to_dict(), sort_keys=True, allow_nan=False),
                    time.time(),
                    os.getpid(),
                ),
            )

    def get_scores(self, scorer_key: str, generation_keys: Iterable[str]) -> dict[str, Score]:
        """Scores by generation key, for one scorer (metric engine configuration)."""
        found: dict[str, Score] = {}
        query = "SELECT generation_key, score FROM scores WHERE scorer_key = ? AND generation_key IN ({})"
        for rows in self._select_in(query, list(generation_keys), scorer_key):
            for key, blob in rows:
                found[key] = Score.from_dict(json.loads(blob))
        return found

    # -- run parts (shards) ----------------------------------------------------------------------

    def put_part(self, part: str, config: Mapping[str, Any], status: str) -> None:
        """Record one shard's configuration and status ("running" or "done")."""
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO run_parts (part, config, status, updated) VALUES (?, ?, ?, ?)",
                (part, canonical_json(dict(config)), status, time.time()),
            )

    def parts(self) -> dict[str, tuple[dict[str, Any], str]]:
        """part ("i/n") -> (configuration, status)."""
        rows = self._db.execute("SELECT part, config, status FROM run_parts ORDER BY part").fetchall()
        return {part: (json.loads(config), status) for part, config, status in rows}

    def _select_in(self, query: str, keys: Sequence[str], *leading: Any) -> Iterator[list[tuple]]:
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            yield self._db.execute(query.format(", ".join("?" * len(chunk))), (*leading, *chunk)).fetchall()
