"""The build's resumable store: ``picbench.store.RunStore`` (one SQLite file in WAL mode, images
written atomically before their record, several ranks writing at once) plus one table of BMPDS
units. A unit (one candidate of one stage) is committed once all its images are on disk, with its
pair or its failure reason; a rerun skips every committed unit, and ``writes`` counts how often a
key was written, which is how tests prove that nothing finished is computed twice. Filter scores
go into the run store's ``scores`` table under the scorer's key.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picbench.records import Sample, canonical_json
from picbench.store import RunStore

_UNITS = """CREATE TABLE IF NOT EXISTS bmpds_units (
    key TEXT PRIMARY KEY, stage TEXT NOT NULL, unit TEXT NOT NULL, sample TEXT, extra TEXT NOT NULL, failure TEXT,
    created REAL NOT NULL, pid INTEGER NOT NULL, writes INTEGER NOT NULL DEFAULT 1)"""


@dataclass(frozen=True)
class UnitRecord:
    """A finished unit: its pair (None when it failed), what later stages need (``extra``, e.g. the
    cut-out's path) and the failure reason."""

    key: str
    stage: str
    unit: str
    sample: Sample | None
    extra: dict[str, Any]
    failure: str | None


class BmpdsStore(RunStore):
    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(out_dir)
        with self._write():
            self._db.execute(_UNITS)

    def put_unit(self, record: UnitRecord) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO bmpds_units (key, stage, unit, sample, extra, failure, created, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET sample = excluded.sample, extra = excluded.extra, failure = excluded.failure,"
                " created = excluded.created, pid = excluded.pid, writes = writes + 1",
                (
                    record.key,
                    record.stage,
                    record.unit,
                    canonical_json(record.sample.to_dict()) if record.sample else None,
                    canonical_json(record.extra),
                    record.failure,
                    time.time(),
                    os.getpid(),
                ),
            )

    def get_units(self, keys: Iterable[str]) -> dict[str, UnitRecord]:
        found: dict[str, UnitRecord] = {}
        for rows in self._select_in("SELECT key, stage, unit, sample, extra, failure FROM bmpds_units WHERE key IN ({})", list(keys)):
            for key, stage, unit, sample, extra, failure in rows:
                found[key] = UnitRecord(
                    key, stage, unit, Sample.from_dict(json.loads(sample)) if sample else None, json.loads(extra), failure
                )
        return found

    def unit_writes(self) -> dict[str, int]:
        """unit name -> how often its record was written (1 everywhere after a clean resume)."""
        return dict(self._db.execute("SELECT unit, writes FROM bmpds_units").fetchall())
