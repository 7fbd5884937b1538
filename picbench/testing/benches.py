"""The bench suite: what ``run``, ``validate`` and ``bench export`` rely on of every bench.

- a loader (``BENCHES``) returns a Bench with samples whose records pass the record rules that
  ``validate`` and ``run`` enforce (images are a property of the data, checked with
  ``check_images=True``); written as JSONL and read back it is the same bench, and writing it
  again gives the same bytes;
- a builder (``BUILDABLE``) writes the bench it returns: the same seed gives the same bytes, the
  file passes ``validate`` and reads back as the returned bench."""

from __future__ import annotations

import tempfile
from pathlib import Path

from picbench.benches import BENCHES, BUILDABLE, BenchBuilder, BenchLoader
from picbench.benches.jsonl import read_bench_jsonl, write_bench_jsonl
from picbench.records import Bench
from picbench.testing.registries import require, resolve
from picbench.testing.samples import data_root
from picbench.validate import ValidationReport, validate_bench, validate_bench_file


def _problems(report: ValidationReport) -> str:
    shown = "; ".join(f"{p.code}: {p.message}" for p in report.errors[:3])
    return f"{len(report.errors)} validation error(s), e.g. {shown}"


def same_bench(label: str, a: Bench, b: Bench, what: str) -> None:
    require(a.header() == b.header(), label, f"{what}: header {b.header()} is not {a.header()}")
    require(len(a.samples) == len(b.samples), label, f"{what}: {len(b.samples)} samples, expected {len(a.samples)}")
    for left, right in zip(a.samples, b.samples):
        require(left.to_dict() == right.to_dict(), label, f"{what}: sample {left.id} reads back as {right.to_dict()}")


def round_trip(label: str, bench: Bench, folder: Path) -> None:
    first = write_bench_jsonl(bench, folder / "written.jsonl")
    again = read_bench_jsonl(first, bench.data_root)
    same_bench(label, bench, again, "written as JSONL and read back")
    second = write_bench_jsonl(again, folder / "rewritten.jsonl")
    require(first.read_bytes() == second.read_bytes(), label, "writing the bench read back gives other bytes")


def check_bench(entry: str | BenchLoader, root: Path | None = None, *, check_images: bool = False) -> None:
    """A registered loader: load, validate, round-trip (see the module docstring)."""
    name, loader, label = resolve(BENCHES, entry)
    require(callable(loader), label, "is not callable: a loader takes the data root and returns a Bench")
    root = data_root(root)
    bench = loader(root)
    require(isinstance(bench, Bench), label, f"returned {type(bench).__name__}, not a Bench")
    require(len(bench.samples) > 0, label, "returned a bench with no samples")
    report = validate_bench(bench, check_images=check_images)
    require(report.ok, label, _problems(report))
    with tempfile.TemporaryDirectory(prefix="picbench-conformance-") as tmp:
        round_trip(label, bench, Path(tmp))


def check_buildable_bench(entry: str | BenchBuilder, root: Path | None = None, *, seed: int = 0) -> None:
    """A registered builder: same seed, same bytes; the file validates and reads back as the returned bench."""
    name, builder, label = resolve(BUILDABLE, entry)
    root = data_root(root)
    with tempfile.TemporaryDirectory(prefix="picbench-conformance-") as tmp:
        a, b = Path(tmp) / "a.jsonl", Path(tmp) / "b.jsonl"
        bench = builder(root, a, seed)
        builder(root, b, seed)
        require(isinstance(bench, Bench), label, f"returned {type(bench).__name__}, not the Bench it wrote")
        require(a.is_file(), label, f"wrote no file at the path it was given ({a})")
        require(a.read_bytes() == b.read_bytes(), label, f"two builds with seed {seed} wrote different bytes")
        report = validate_bench_file(a, root, check_images=False)
        require(report.ok, label, _problems(report))
        same_bench(label, bench, read_bench_jsonl(a, root), "the file it wrote, read back")
        round_trip(label, bench, Path(tmp))
