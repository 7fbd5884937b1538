"""The Vision-R1 answer parser on a corpus of realistic good and malformed answers (no eval)."""

from __future__ import annotations

import pytest

from picbench.metrics.detectors.parse import AnswerFormatError, parse_answer

GOOD = {
    "fenced": (
        '```json\n[\n\t{"bbox_2d": [12, 40, 200, 310], "label": "dog"},\n\t{"bbox_2d": [220, 50, 400, 300], "label": "backpack"}\n]\n```',
        [((12, 40, 200, 310), "dog"), ((220, 50, 400, 300), "backpack")],
    ),
    "bare": ('[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]', [((1, 2, 30, 40), "cat")]),
    "trailing text": ('[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}] There is one cat in the image.', [((1, 2, 30, 40), "cat")]),
    "leading text, fenced": (
        'Here are the objects:\n```json\n[{"bbox_2d": [5.5, 6, 70.25, 80], "label": "vase"}]\n```\nDone.',
        [((5.5, 6, 70.25, 80), "vase")],
    ),
    "uppercase fence": ('```JSON\n[{"bbox_2d": [1, 2, 3, 4], "label": "toy"}]\n```', [((1, 2, 3, 4), "toy")]),
    "think and answer tags": (
        '<think>The [red] dog is on the left.</think>\n<answer>[{"bbox_2d": [3, 4, 50, 60], "label": "dog"}]</answer>',
        [((3, 4, 50, 60), "dog")],
    ),
    "single object": ('{"bbox_2d": [1, 2, 3, 4], "label": "dog"}', [((1, 2, 3, 4), "dog")]),
    "wrapped list": ('{"objects": [{"bbox_2d": [1, 2, 3, 4], "label": "dog"}]}', [((1, 2, 3, 4), "dog")]),
    "empty list": ("```json\n[]\n```", []),
    "two fences, first wins": (
        '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "dog"}]\n```\n```json\n[]\n```',
        [((10, 20, 30, 40), "dog")],
    ),
    "unclosed fence": ('```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "dog"}]', [((10, 20, 30, 40), "dog")]),
    "numeric strings": ('[{"bbox_2d": ["10", "20", "30", "40"], "label": "dog"}]', [((10, 20, 30, 40), "dog")]),
}


@pytest.mark.parametrize("name", list(GOOD))
def test_good_answers(name):
    text, expected = GOOD[name]
    parsed = parse_answer(text)
    assert [(b.box, b.label) for b in parsed.boxes] == [(tuple(float(v) for v in box), label) for box, label in expected]
    assert parsed.problems == ()


@pytest.mark.parametrize(
    "text, kept",
    [
        ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [5, 6, 7, 8], "lab', 1),
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "cat"},\n {"bbox_2d": [5, 6, 7, 8], "label": "dog"},\n {"bbox_2d": [9, 10,', 2),
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}', 1),
    ],
)
def test_truncated_lists_keep_complete_entries(text, kept):
    parsed = parse_answer(text)
    assert len(parsed.boxes) == kept
    assert any("cut off" in p for p in parsed.problems)


def test_bad_entries_are_skipped_with_reasons():
    parsed = parse_answer(
        '[{"bbox_2d": [1, 2, 3], "label": "dog"}, {"bbox_2d": [1, 2, 3, 4]}, "dog", {"label": "cat"},'
        ' {"bbox_2d": [1, "x", 3, 4], "label": "cat"}, {"bbox_2d": [0, 0, 9, 9], "label": "cat"}]'
    )
    assert [(b.box, b.label) for b in parsed.boxes] == [((1.0, 2.0, 3.0, 4.0), ""), ((0.0, 0.0, 9.0, 9.0), "cat")]
    joined = " | ".join(parsed.problems)
    for reason in ("must be 4 numbers", "has no label", "not an object", "no bbox_2d", "non-numeric"):
        assert reason in joined


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I cannot find any dog in this image.",
        "[{'bbox_2d': [1, 2, 3, 4], 'label': 'dog'}]",  # Python literal, not JSON: refused, never evaluated
        "__import__('os').system('echo pwned')",
        '```json\n{"bbox_2d": \n```',
        "The dog is at [12, 40, 200, 310].",
    ],
)
def test_malformed_answers_raise_a_named_error(text):
    with pytest.raises(AnswerFormatError):
        parse_answer(text)


def test_none_is_malformed():
    with pytest.raises(AnswerFormatError, match="empty"):
        parse_answer(None)
