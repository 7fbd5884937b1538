"""picbench.layouts: the one box intersection agrees with the three formulas it replaced (the
PositionIC bench's, the occlusion metric's, IoU's), the one depth-rank rule speaks for both the
bench loader and the validator, and the prompt and layout helpers keep their rules."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picbench import layouts
from picbench.benches import positionic
from picbench.benches.jsonl import write_bench_jsonl
from picbench.errors import BenchFormatError
from picbench.metrics.boxes import iou
from picbench.metrics.occlusion import overlapping_pairs
from picbench.records import Sample, Subject
from picbench.validate import validate_bench_file

coord = st.floats(-50, 500, allow_nan=False, allow_infinity=False)


@st.composite
def boxes(draw):
    """xyxy boxes, including empty and inverted ones (the bench's nested intersections make those)."""
    x0, y0 = draw(coord), draw(coord)
    return (x0, y0, x0 + draw(st.floats(-20, 300)), y0 + draw(st.floats(-20, 300)))


def former_bench_overlap_area(a, b):
    """benches/positionic.py before the move: ``_area(_inter(a, b))``."""
    inter = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return max(0.0, inter[2] - inter[0]) * max(0.0, inter[3] - inter[1])


def former_occlusion_overlap(a, b):
    """metrics/occlusion.py before the move: the intersection box when it has a positive area."""
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def former_iou(a, b):
    """metrics/boxes.py ``iou`` before the move."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@given(boxes(), boxes(), boxes())
def test_one_intersection_gives_each_former_formula_exactly(a, b, c):
    assert layouts.area(layouts.intersection(a, b)) == former_bench_overlap_area(a, b)
    assert layouts.intersection(a, b) == former_occlusion_overlap(a, b)
    assert iou(a, b) == former_iou(a, b)
    # the bench's three-box term, _area(_inter(_inter(a, b), c)), on which visible_fraction relies
    ab = layouts.intersection(a, b)
    nested = (max(a[0], b[0], c[0]), max(a[1], b[1], c[1]), min(a[2], b[2], c[2]), min(a[3], b[3], c[3]))
    expected = max(0.0, nested[2] - nested[0]) * max(0.0, nested[3] - nested[1])
    assert (0.0 if ab is None else layouts.area(layouts.intersection(ab, c))) == expected


def test_intersection_of_touching_boxes_is_none():
    assert layouts.intersection((0, 0, 1, 1), (1, 0, 2, 1)) is None
    assert layouts.intersection((0, 0, 2, 2), (1, 1, 3, 3)) == (1, 1, 2, 2)
    assert layouts.area(None) == 0.0


def _sample(*subjects: Subject) -> Sample:
    return Sample("s1", "a dog and a cat", 64, 64, "multi", subjects)


def test_layout_problems_name_each_missing_part():
    dog = Subject("dog", "dog", ("dog.png",), (), (0.1, 0.1, 0.5, 0.5), 0)
    cat = Subject("cat", "cat", ("cat.png",), (), None, None)
    assert layouts.layout_problems(_sample(dog, cat)) == ["subject 'cat' has no box", "every subject needs a depth rank"]
    far_cat = Subject("cat", "cat", ("cat.png",), (), (0.5, 0.5, 0.9, 0.9), 2)
    assert layouts.layout_problems(_sample(dog, far_cat)) == ["depth ranks must be 0..1, got [0, 2]"]
    near_cat = Subject("cat", "cat", ("cat.png",), (), (0.5, 0.5, 0.9, 0.9), 1)
    assert layouts.layout_problems(_sample(dog, near_cat)) == []


def test_bench_loader_and_validator_state_the_depth_rule_in_one_wording(tmp_path: Path, data_dir: Path):
    """The loader raises and the validator reports the same message, each with file, sample and field."""
    bench = positionic.build_open(data_dir)
    multi = next(s for s in bench.samples if s.split == "multi" and len(s.subjects) == 2)
    bad_sample = replace(multi, subjects=(multi.subjects[0], replace(multi.subjects[1], depth=multi.subjects[0].depth + 2)))
    path = tmp_path / "positionic-bad.jsonl"
    write_bench_jsonl(replace(bench, samples=(bad_sample,)), path)
    expected = layouts.depth_rank_problem([d for d in (s.depth for s in bad_sample.subjects) if d is not None])
    assert expected is not None and expected.startswith("depth ranks must be 0..1, got [")
    with pytest.raises(BenchFormatError) as err:
        positionic.load_file(path, data_dir)
    message = str(err.value)
    assert expected in message and str(path) in message and multi.id in message and "subjects" in message
    report = validate_bench_file(path, data_dir, check_images=False)
    bad = [p for p in report.problems if p.code == "bad-depth"]
    assert [p.message for p in bad] == [expected]
    assert bad[0].sample_id == multi.id and bad[0].field == "subjects.depth" and bad[0].file == str(path)


def test_prompt_helpers():
    assert layouts.noun_phrase("glasses") == "a pair of glasses"
    assert layouts.noun_phrase("dog") == "a dog"
    assert layouts.listed(["a dog"]) == "a dog"
    assert layouts.listed(["a dog", "a cat"]) == "a dog and a cat"
    assert layouts.listed(["a dog", "a cat", "a vase"]) == "a dog, a cat and a vase"
    templates = ("a {0} {1} in the jungle", "a red {0} {1}", "a {0} {1} on the beach")
    assert layouts.template_contexts(templates) == ["in the jungle", "on the beach"]


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("k", [2, 3])
def test_multi_layout_keeps_its_overlap_and_visibility_rules(k: int, overlap: bool):
    rng = random.Random(7)
    for _ in range(20):
        boxes, depths = layouts.multi_layout(rng, k, overlap)
        assert len(boxes) == k and sorted(depths) == list(range(k)) and depths == layouts.depth_order(boxes)
        for i in range(k):
            assert layouts.visible_fraction(boxes, depths, i) >= layouts.MIN_VISIBLE
            assert 0.0 <= boxes[i][0] < boxes[i][2] <= 1.0 and 0.0 <= boxes[i][1] < boxes[i][3] <= 1.0
        first_two = layouts.area(layouts.intersection(boxes[0], boxes[1])) / min(layouts.area(boxes[0]), layouts.area(boxes[1]))
        assert (0.15 <= first_two <= 0.6) if overlap else first_two == 0.0
        others = [(i, j) for i in range(k) for j in range(i + 1, k) if (i, j) != (0, 1)]
        assert all(layouts.intersection(boxes[i], boxes[j]) is None for i, j in others)


def test_occlusion_pairs_use_the_shared_intersection():
    front = Subject("dog", "dog", ("dog.png",), (), (0.1, 0.1, 0.5, 0.5), 0)
    back = Subject("cat", "cat", ("cat.png",), (), (0.3, 0.2, 0.8, 0.9), 1)
    assert overlapping_pairs(_sample(back, front)) == [(1, 0, layouts.intersection(front.box, back.box))]
