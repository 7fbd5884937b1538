"""Benchmark loaders, registered by name. ``load_bench(name, data_dir)`` is the one entry point:
a registered loader, a bench built into picbench's home (``picbench bench build``), or a path to
a bench JSONL file."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from picbench.errors import UnknownNameError
from picbench.paths import find_data_dir, picbench_home
from picbench.records import Bench
from picbench.registry import Registry

BenchLoader = Callable[[Path], Bench]

DEFAULT_DETECTOR = "grounding-dino"
# The detector each bench is scored with unless --detector names another, by bench name. The
# PositionIC paper computes IoU and AP "via Vision-R1", so its benches (the official file and the
# open reconstruction) default to Vision-R1 queried as its own evaluation queries it.
BENCH_DETECTORS: dict[str, str] = {"positionic": "vision-r1", "positionic-open": "vision-r1"}

BENCHES: Registry[BenchLoader] = Registry("bench", entry_point_group="picbench.benches")

BENCHES.register("dreambench", "picbench.benches.dreambench:load", "DreamBench: 30 subjects x 25 prompts, 750 single-subject samples")
BENCHES.register("dreambench-multi", "picbench.benches.dreambench:load_multi", "DreamBench pairs (UNO's list): 750 two-subject samples")
BENCHES.register("msbench", "picbench.benches.msbench:load", "MS-Bench: 13 combination types, fixed layouts, 4488 samples")
BENCHES.register(
    "positionic", "picbench.benches.positionic:load", "PositionIC-Bench format (official file not public; see positionic-open)"
)


@runtime_checkable
class BenchBuilder(Protocol):
    """Writes a reconstructed bench as JSONL to ``out`` and returns it; the same seed, the same bytes."""

    def __call__(self, data_root: Path, out: Path, seed: int) -> Bench: ...


# Benches that `picbench bench build NAME` reconstructs into built_bench_dir(); not loaders. Other
# packages add builders through the `picbench.buildable_benches` entry-point group.
BUILDABLE: Registry[BenchBuilder] = Registry(
    "buildable bench", entry_point_group="picbench.buildable_benches", base=BenchBuilder, instances=True
)
BUILDABLE.register(
    "positionic-open",
    "picbench.benches.positionic:write_open",
    "RECONSTRUCTION of PositionIC-Bench from DreamBench: 252 single + 296 multi",
)


def default_detector(bench_name: str) -> str:
    """The detector a bench is scored with by default (:data:`BENCH_DETECTORS`, else :data:`DEFAULT_DETECTOR`)."""
    return BENCH_DETECTORS.get(bench_name, DEFAULT_DETECTOR)


def built_bench_dir() -> Path:
    """Where ``picbench bench build`` writes benches it reconstructs."""
    return picbench_home() / "benches"


def built_benches() -> dict[str, Path]:
    """Built bench name -> JSONL file."""
    folder = built_bench_dir()
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def load_bench(name: str, data_dir: str | Path | None = None) -> Bench:
    """Load a bench by registered name, built name, or JSONL path (data root from ``data_dir``,
    ``$PICBENCH_DATA_DIR`` or ``$PICBENCH_HOME/data``)."""
    from picbench.benches.jsonl import read_bench_jsonl

    root = find_data_dir(data_dir)
    assert root is not None
    if name.endswith(".jsonl"):
        return read_bench_jsonl(name, root)
    built = built_benches()
    if name in BUILDABLE and name not in built and name not in BENCHES:
        built[name] = build_on_first_use(name, root)
    if name in built and name not in BENCHES:
        return read_bench_jsonl(built[name], root)
    if name not in BENCHES:
        raise UnknownNameError(unknown_bench_message(name, built))
    return BENCHES.get(name)(root)


def bench_file(name: str) -> Path | None:
    """The JSONL file ``load_bench(name)`` reads (a path, or a built bench), None for a registered loader."""
    if name.endswith(".jsonl"):
        return Path(name)
    built = built_benches()
    return built[name] if name in built and name not in BENCHES else None


def bench_file_record(name: str, data_dir: str | Path | None = None) -> dict[str, str] | None:
    """What a run records of the bench file it read, so that ``report`` and ``compare`` can read it
    again for any run and see (by the hash) whether it changed since: its absolute path, sha256
    and data root. None for a registered loader (found again by its name)."""
    from picbench.records import file_sha256

    path = bench_file(name)
    if path is None or not path.is_file():
        return None
    root = find_data_dir(data_dir)
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "data_root": str(Path(root).resolve()) if root else ""}


def build_on_first_use(name: str, root: Path) -> Path:
    """Build a buildable bench asked for by name but not built yet, as ``picbench bench build NAME``
    does with its default seed 0, so a fresh machine needs no separate build step."""
    target = built_bench_dir() / f"{name}.jsonl"
    logging.getLogger(__name__).warning(
        "bench %r is not built yet: building it now (picbench bench build %s, seed 0) -> %s", name, name, target
    )
    BUILDABLE.get(name)(root, target, 0)
    return target


def unknown_bench_message(name: str, built: dict[str, Path]) -> str:
    """'Did you mean' over registered, built and buildable benches."""
    known = sorted({*BENCHES.names(), *built, *BUILDABLE.names()})
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown bench {name!r}{hint} (known: {', '.join(known)}; or pass a path to a .jsonl bench file)"
