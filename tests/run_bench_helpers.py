"""Small real benches for the run tests: DreamBench photos from the shared data, tiny outputs."""

from __future__ import annotations

from pathlib import Path

from picbench.benches.jsonl import write_bench_jsonl
from picbench.records import Bench, Sample, Subject

DOG, BACKPACK, CAT = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/backpack/00.jpg", "dreambench/dataset/cat/00.jpg"


def tiny_samples(n: int, size: int = 64) -> list[Sample]:
    """Alternating single- and multi-subject samples with boxes, overlaps and depth ranks."""
    samples = []
    for i in range(n):
        if i % 2 == 0:
            subjects = (Subject("dog", "dog", (DOG,), box=(0.1 + 0.02 * i, 0.2, 0.7, 0.9), depth=0),)
            samples.append(Sample(f"s{i:02d}", "a dog on the grass", size, size, "single", subjects))
        else:
            subjects = (
                Subject("backpack", "backpack", (BACKPACK,), box=(0.05, 0.1, 0.6, 0.7), depth=1),
                Subject("cat", "cat", (CAT,), box=(0.4, 0.3, 0.95, 0.95), depth=0),
            )
            samples.append(Sample(f"m{i:02d}", "a cat in front of a backpack", size, size, "multi", subjects))
    return samples


def write_tiny_bench(
    folder: Path, data_dir: Path, n: int = 4, *, name: str = "tiny-run-bench", samples: list[Sample] | None = None
) -> Path:
    bench = Bench(name, "1", tuple(samples if samples is not None else tiny_samples(n)), data_dir, description="test bench")
    return write_bench_jsonl(bench, folder / f"{name}.jsonl")


PROTOCOL = {"name": "dreambooth/default", "hash": "0123456789ab", "fields": {"identity": "default", "detector": None, "precision": "fp32"}}
"""A protocol record for results written by hand: every measured run records one, and regress,
compare and leaderboard export refuse results of different or unknown protocols."""
