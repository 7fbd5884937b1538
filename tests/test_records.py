"""The core records and the bench JSONL format: round trips, hashing, and errors that name
the file, line, sample and field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picbench.benches.jsonl import read_bench_jsonl, write_bench_jsonl
from picbench.errors import BenchFormatError, UnsafePathError
from picbench.paths import resolve_in_root
from picbench.records import Bench, Generation, Sample, Subject, canonical_json, check_box, generation_key


def _sample(sid: str = "s0", box=(0.1, 0.2, 0.5, 0.6)) -> Sample:
    sub = Subject("dog", "dog", ("imgs/a.png",), ("imgs/a.png", "imgs/b.png"), box, 0)
    return Sample(sid, "a dog on the beach", 512, 512, "single", (sub,), {"k": 1})


def _bench(tmp_path: Path, samples=None) -> Bench:
    return Bench("toy", "1", tuple(samples or [_sample("s0"), _sample("s1")]), tmp_path, "toy bench")


@given(
    st.floats(0, 0.49),
    st.floats(0, 0.49),
    st.floats(0.5, 1.0),
    st.floats(0.5, 1.0),
)
@settings(max_examples=50, deadline=None)
def test_sample_dict_round_trip(x0: float, y0: float, x1: float, y1: float) -> None:
    sample = _sample(box=(x0, y0, x1, y1))
    again = Sample.from_dict(json.loads(json.dumps(sample.to_dict())))
    assert again == sample


@pytest.mark.parametrize(
    "box, reason",
    [
        ([0.5, 0.1, 0.2, 0.9], "inverted"),
        ([0.1, 0.1, 0.1, 0.9], "inverted"),
        ([-0.1, 0.1, 0.2, 0.9], "outside"),
        ([0.1, 0.1, 0.2, 1.5], "outside"),
        ([0.1, math.nan, 0.2, 0.9], "NaN"),
        ([0.1, 0.2, 0.3], "4 numbers"),
        (["a", 0.2, 0.3, 0.4], "non-numeric"),
    ],
)
def test_check_box_rejects(box: list, reason: str) -> None:
    with pytest.raises(BenchFormatError, match=reason):
        check_box(box, sample_id="s9")


def test_from_dict_names_sample_and_field() -> None:
    d = _sample("s7").to_dict()
    d["subjects"][0]["box"] = [0.9, 0.1, 0.2, 0.5]
    with pytest.raises(BenchFormatError) as info:
        Sample.from_dict(d)
    assert info.value.sample_id == "s7" and info.value.field == "subjects[0].box"
    d = _sample("s8").to_dict()
    d["colour"] = "red"
    with pytest.raises(BenchFormatError, match="unknown field"):
        Sample.from_dict(d)


def test_jsonl_round_trip_is_byte_stable(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    a = write_bench_jsonl(bench, tmp_path / "a.jsonl")
    again = read_bench_jsonl(a, tmp_path)
    b = write_bench_jsonl(again, tmp_path / "b.jsonl")
    assert again.samples == bench.samples and again.header() == bench.header()
    assert a.read_bytes() == b.read_bytes()


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_bench_jsonl(_bench(tmp_path), tmp_path / "b.jsonl")
    lines = path.read_text().splitlines()
    lines.insert(2, '{"id": "broken", ')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchFormatError) as info:
        read_bench_jsonl(path, tmp_path)
    assert info.value.line == 3 and str(path) in str(info.value)


def test_jsonl_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = write_bench_jsonl(_bench(tmp_path, [_sample("a"), _sample("b"), _sample("a")]), tmp_path / "d.jsonl")
    with pytest.raises(BenchFormatError, match="first at line 2") as info:
        read_bench_jsonl(path, tmp_path)
    assert info.value.line == 4 and info.value.sample_id == "a"


def test_content_hash_covers_image_bytes(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"one")
    (tmp_path / "imgs" / "b.png").write_bytes(b"two")
    bench = _bench(tmp_path)
    before = bench.content_hash()
    (tmp_path / "imgs" / "b.png").write_bytes(b"three")
    assert bench.content_hash() != before
    assert bench.spec_hash() == _bench(tmp_path).spec_hash()


def test_canonical_json_and_generation_key() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})
    g = Generation("m", "1", {"steps": 4, "cfg": 3.5}, "s0", 7)
    assert g.key == generation_key("m", "1", {"cfg": 3.5, "steps": 4}, "s0", 7)
    assert g.key != generation_key("m", "1", {"cfg": 3.5, "steps": 4}, "s0", 8)


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.jpg", "a/../../x.jpg", ""])
def test_resolve_in_root_refuses_unsafe_paths(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        resolve_in_root(tmp_path, bad)
    assert resolve_in_root(tmp_path, "a/b.jpg") == (tmp_path / "a" / "b.jpg").resolve()


def test_resolve_in_root_follows_symlinks_inside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "img.jpg").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(outside)
    assert resolve_in_root(root, "linked/img.jpg").read_bytes() == b"x"
    with pytest.raises(UnsafePathError):
        resolve_in_root(root, "linked/../../elsewhere/img.jpg")


def test_fallback_layout_gives_layout_free_samples_one_column_per_subject() -> None:
    subjects = tuple(Subject(n, "dog", (f"{n}.jpg",)) for n in ("a", "b", "c"))
    sample = Sample("s", "three dogs", 96, 64, "multi", subjects)
    placed = sample.with_fallback_layout()
    assert [s.box for s in placed.subjects] == [(0.0, 0.0, 1 / 3, 1.0), (1 / 3, 0.0, 2 / 3, 1.0), (2 / 3, 0.0, 1.0, 1.0)]
    assert [s.depth for s in placed.subjects] == [0, 1, 2] and placed.meta["layout"] == "fallback-columns"
    assert Sample.from_dict(placed.to_dict()) == placed  # still a valid record
    assert placed.with_fallback_layout() is placed and sample.subjects[0].box is None  # the original is untouched
