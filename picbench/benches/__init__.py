"""Benchmark loaders, registered by name. ``load_bench(name, data_dir)`` is the one entry point:
a registered loader, a bench built into picbench's home (``picbench bench build``), or a path to
a bench JSONL file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from picbench.paths import find_data_dir, picbench_home
from picbench.records import Bench
from picbench.registry import Registry

BenchLoader = Callable[[Path], Bench]

BENCHES: Registry[BenchLoader] = Registry("bench", entry_point_group="picbench.benches")


def built_bench_dir() -> Path:
    """Where ``picbench bench build`` writes benches it reconstructs."""
    return picbench_home() / "benches"


def built_benches() -> dict[str, Path]:
    """Built bench name -> JSONL file."""
    folder = built_bench_dir()
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def load_bench(name: str, data_dir: str | Path | None = None) -> Bench:
    """Load a bench by registered name, built name, or JSONL path (data root from ``data_dir``,
    ``$PICBENCH_DATA_DIR`` or ``../shared/data``)."""
    from picbench.benches.jsonl import read_bench_jsonl

    root = find_data_dir(data_dir)
    assert root is not None
    if name.endswith(".jsonl") and Path(name).is_file():
        return read_bench_jsonl(name, root)
    built = built_benches()
    if name in built and name not in BENCHES:
        return read_bench_jsonl(built[name], root)
    return BENCHES.get(name)(root)
