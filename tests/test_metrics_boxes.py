"""IoU and the one-to-one matching of subjects to detections (DESIGN.md conventions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from picbench.metrics.boxes import box_problem, iou, iou_matrix, match_subjects, to_pixels
from picbench.metrics.detectors.base import Detection, clean_detections

coord = st.floats(0, 500, allow_nan=False)


@st.composite
def boxes(draw):
    x0, y0 = draw(coord), draw(coord)
    return (x0, y0, x0 + draw(st.floats(1, 300)), y0 + draw(st.floats(1, 300)))


@given(boxes(), boxes())
def test_iou_is_symmetric_bounded_and_one_on_itself(a, b):
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert 0.0 <= iou(a, b) <= 1.0
    assert iou(a, a) == pytest.approx(1.0)
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(iou(a, b))


def test_iou_of_known_overlap():
    # two 10x10 squares sharing a 5x10 strip: 50 / (100 + 100 - 50)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_repeated_class_uses_the_assignment_not_greedy_choice():
    # Greedy (subject 0 takes its best detection d0, subject 1 is left with d1) sums to less than
    # the one-to-one assignment that maximizes total IoU (subject 0 -> d1, subject 1 -> d0).
    targets = [(0, 0, 10, 10), (2, 0, 12, 10)]
    dets = [(1, 0, 11, 10), (-4, 0, 6, 10)]
    assert iou(targets[0], dets[0]) > iou(targets[0], dets[1])
    greedy = iou(targets[0], dets[0]) + iou(targets[1], dets[1])
    matches = match_subjects(targets, ["dog", "dog"], dets, ["dog", "dog"])
    assert [m[0] for m in matches] == [1, 0]
    assert sum(m[1] for m in matches) > greedy
    assert matches[0][1] == pytest.approx(iou(targets[0], dets[1]))


def test_unmatched_subject_scores_zero_and_labels_must_match():
    matches = match_subjects([(0, 0, 10, 10), (20, 20, 30, 30)], ["dog", "cat"], [(0, 0, 10, 10)], ["Dog "])
    assert matches[0] == (0, pytest.approx(1.0))
    assert matches[1] == (None, 0.0)
    # one detection cannot serve two subjects of the same class
    two = match_subjects([(0, 0, 10, 10), (0, 0, 10, 10)], ["dog", "dog"], [(0, 0, 10, 10)], ["dog"])
    assert sorted(m[0] is None for m in two) == [False, True]


def test_to_pixels_scales_normalized_boxes():
    assert to_pixels((0.25, 0.5, 0.75, 1.0), 200, 100) == (50.0, 50.0, 150.0, 100.0)


@pytest.mark.parametrize("box, word", [((5, 5, 5, 9), "zero area"), ((9, 5, 2, 8), "inverted"), ((0, float("nan"), 3, 3), "NaN")])
def test_bad_detector_boxes_are_named(box, word):
    assert word in box_problem(box)


def test_clean_detections_clips_and_drops_with_reasons():
    kept, problems = clean_detections(
        [Detection((-5, -5, 50, 50), "dog", 0.9), Detection((10, 10, 10, 20), "cat", 0.8), Detection((120, 0, 150, 10), "cat", 0.7)],
        100,
        100,
    )
    assert [d.box for d in kept] == [(0.0, 0.0, 50.0, 50.0)]
    assert len(problems) == 2 and "zero area" in problems[0] and "after clipping" in problems[1]
