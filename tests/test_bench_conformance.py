"""The bench suite (:mod:`picbench.testing.benches`) over every registered loader and builder, and
broken ones failing it with a message naming them. The official PositionIC-Bench file is not
public: its loader is checked on a data root holding the open reconstruction at the official path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from picbench.benches import BENCHES, BUILDABLE, positionic
from picbench.benches.jsonl import write_bench_jsonl
from picbench.records import Bench, Sample, Subject
from picbench.testing import check_bench, check_buildable_bench, parametrize


def _root_with_official_file(data_dir: Path, folder: Path) -> Path:
    """A data root whose DreamBench is the real one and whose official PositionIC file is positionic-open."""
    folder.mkdir()
    (folder / "dreambench").symlink_to(data_dir / "dreambench", target_is_directory=True)
    official = folder / positionic.OFFICIAL_FILE
    official.parent.mkdir(parents=True)
    positionic.write_open(folder, official)
    return folder


@parametrize(BENCHES)
def test_every_registered_bench_loads_validates_and_round_trips(name: str, data_dir: Path, tmp_path: Path) -> None:
    root = _root_with_official_file(data_dir, tmp_path / "root") if name == "positionic" else data_dir
    check_bench(name, root)


@parametrize(BUILDABLE)
def test_every_buildable_bench_builds_the_same_bytes_and_validates(name: str, data_dir: Path) -> None:
    check_buildable_bench(name, data_dir)


def _one_dog(data_root: Path, note: str = "") -> Bench:
    dog = Subject("dog", "dog", ("dreambench/dataset/dog/00.jpg",), box=(0.1, 0.1, 0.6, 0.9), depth=0)
    return Bench("one-dog", "1", (Sample("dog-0", "a dog", 64, 64, "single", (dog,)),), data_root, description=f"test bench{note}")


def unreadable_reference(data_root: Path) -> Bench:
    """A loader whose sample names a reference outside the data root."""
    dog = Subject("dog", "dog", ("../outside/dog.jpg",), box=(0.1, 0.1, 0.6, 0.9), depth=0)
    return Bench("escapes", "1", (Sample("dog-0", "a dog", 64, 64, "single", (dog,)),), data_root)


BUILDS: list[int] = []


def build_with_a_counter(data_root: Path, out: Path, seed: int) -> Bench:
    """A builder whose output changes from call to call under one seed."""
    BUILDS.append(seed)
    bench = _one_dog(data_root, f" (build {len(BUILDS)})")
    write_bench_jsonl(bench, out)
    return bench


def build_one_thing_return_another(data_root: Path, out: Path, seed: int) -> Bench:
    write_bench_jsonl(_one_dog(data_root), out)
    return _one_dog(data_root, " as returned")


def test_a_well_formed_loader_passes(data_dir: Path) -> None:
    check_bench(_one_dog, data_dir)


@pytest.mark.parametrize(
    ("check", "entry", "message"),
    [
        (check_bench, unreadable_reference, "validation error(s), e.g. "),
        (check_buildable_bench, build_with_a_counter, "two builds with seed 0 wrote different bytes"),
        (check_buildable_bench, build_one_thing_return_another, "the file it wrote, read back: header"),
    ],
    ids=["unsafe-reference", "not-deterministic", "returns-another-bench"],
)
def test_a_broken_bench_fails_the_suite_naming_it(
    check: Callable[..., None], entry: Callable[..., Bench], message: str, data_dir: Path
) -> None:
    with pytest.raises(AssertionError) as failed:
        check(entry, data_dir)
    kind = "bench" if check is check_bench else "buildable bench"
    assert str(failed.value).startswith(f"{kind} {entry.__name__!r} (test_bench_conformance:{entry.__qualname__}): "), str(failed.value)
    assert message in str(failed.value)
