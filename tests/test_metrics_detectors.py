"""Every detector runs its full code path on a tiny random-weight model of its architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from picbench.imaging import load_rgb
from picbench.metrics.detectors import load_detector
from picbench.metrics.detectors.vision_r1 import PROMPT, categories_phrase
from picbench.tiny.metric_models import tiny_weights


@pytest.fixture(scope="module")
def photo(data_dir: Path) -> Image.Image:
    return load_rgb(data_dir / "dreambench/dataset/dog/00.jpg").resize((300, 200), Image.BICUBIC)


def _within(box, size) -> bool:
    return 0 <= box[0] < box[2] <= size[0] and 0 <= box[1] < box[3] <= size[1]


@pytest.mark.parametrize("name", ["grounding-dino", "owlv2"])
def test_open_vocabulary_detectors_return_pixel_boxes_of_asked_classes(name, photo):
    detector = load_detector(name, tiny_weights(name))
    if name == "grounding-dino":
        detector.box_threshold = 0.0
    else:
        detector.threshold = 0.0
    out = detector.detect(photo, ["dog", "teddy bear", "dog"])
    assert out.detections or out.problems
    for det in out.detections:
        assert det.label in ("dog", "teddy bear")
        assert _within(det.box, photo.size)
        assert 0.0 <= det.score <= 1.0
    assert detector.provenance()["weights_sha256"] and detector.forward_seconds > 0


def test_grounding_dino_query_spans_cover_each_class():
    from picbench.metrics.detectors.grounding_dino import GroundingDinoDetector

    text, words, spans = GroundingDinoDetector.query(["Teddy  Bear", "dog", "teddy bear"])
    assert text == "teddy bear . dog ."
    assert [text[a:b] for a, b in spans] == words == ["teddy bear", "dog"]


def test_vision_r1_prompt_format():
    assert categories_phrase(["dog"]) == "dog"
    assert categories_phrase(["dog", "backpack", "dog", "cat"]) == "dog, backpack and cat"
    assert PROMPT.format(categories="dog and cat") == "Locate every dog and cat in the image and output the coordinates in JSON format."


@pytest.fixture(scope="module")
def vision_r1():
    detector = load_detector("vision-r1", tiny_weights("vision-r1"))
    detector.max_new_tokens = 12
    return detector


def test_vision_r1_full_path_records_raw_answer(vision_r1, photo):
    out = vision_r1.detect(photo, ["dog", "backpack"])
    assert isinstance(out.raw, str)
    # random weights answer gibberish: a recorded failure, not a crash
    assert out.detections or any("unparseable" in p for p in out.problems)


def test_vision_r1_rescales_from_the_processor_grid(vision_r1, photo):
    _, grid = vision_r1.answer(photo, ["dog"])
    assert grid[0] % 28 == 0 and grid[1] % 28 == 0 and grid != photo.size  # the processor resized the image
    gw, gh = grid
    answer = f'```json\n[{{"bbox_2d": [0, 0, {gw}, {gh}], "label": "dog"}}, {{"bbox_2d": [{gw / 4}, {gh / 2}, {gw / 2}, {gh}], "label": "cat"}}]\n```'
    out = vision_r1.boxes_from_answer(answer, grid, photo.size)
    w, h = photo.size
    assert [d.box for d in out.detections] == [pytest.approx((0, 0, w, h)), pytest.approx((w / 4, h / 2, w / 2, h))]
    assert [d.label for d in out.detections] == ["dog", "cat"] and {d.score for d in out.detections} == {vision_r1.score}


def test_vision_r1_bad_boxes_are_dropped_with_reasons(vision_r1):
    answer = '[{"bbox_2d": [10, 10, 10, 50], "label": "dog"}, {"bbox_2d": [60, 60, 20, 20], "label": "cat"}, {"bbox_2d": [1, 2, 30, 40], "label": "vase"}]'
    out = vision_r1.boxes_from_answer(answer, (112, 112), (224, 224))
    assert [d.label for d in out.detections] == ["vase"]
    assert any("zero area" in p for p in out.problems) and any("inverted" in p for p in out.problems)
    bad = vision_r1.boxes_from_answer("no boxes here", (112, 112), (224, 224))
    assert bad.detections == () and bad.raw == "no boxes here" and "unparseable" in bad.problems[0]
