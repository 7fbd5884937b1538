"""Every detector runs its full code path on a tiny random-weight model of its architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from picbench.errors import MissingWeightsError
from picbench.imaging import load_rgb
from picbench.metrics.detectors import load_detector
from picbench.metrics.detectors.base import Detector
from picbench.metrics.detectors.vision_r1 import (
    MAX_NEW_TOKENS,
    MAX_PIXELS,
    MIN_PIXELS,
    PROMPT,
    SCORE,
    VisionR1Detector,
    pool,
    queries,
    vision_resize,
)
from picbench.metrics.weights import weights_sha256
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


GRIFFON = "jefferyZhan/Griffon @ 9866875e7d18e705239f3e03115a55aef30ab635, Vision-R1/eval/"


def test_vision_r1_asks_one_category_per_query_with_the_evaluations_prompt():
    """Griffon @ 9866875, Vision-R1/eval/eval_localization.sh:6 (ODINW / visual grounding prompt) and
    :22 (--single --pos for ODINW); eval_localization.py:553-617 SINGLE_POS_EVALDataset: one item per
    (image, category in it), :597 prompt.replace("<category set>", cate)."""
    assert PROMPT == "Locate every {category} in the image and output the coordinates in JSON format."
    assert queries(["dog", "stuffed animal", "dog "]) == [
        ("dog", "Locate every dog in the image and output the coordinates in JSON format."),
        ("stuffed animal", "Locate every stuffed animal in the image and output the coordinates in JSON format."),
    ]
    settings = VisionR1Detector.query_settings()  # known without loading the 7B model: what a protocol records
    assert settings["query_mode"] == "one query per category" and GRIFFON.split(",")[0].replace(" @ ", "@") in settings["evaluation"]


def test_vision_r1_generation_and_score_are_the_evaluations():
    """eval_localization.py:926 generate(..., do_sample=False, max_new_tokens=512); :1088 "score": 0.99."""
    assert (MAX_NEW_TOKENS, SCORE) == (512, 0.99)
    assert VisionR1Detector.query_settings()["constant_score"] == 0.99 and VisionR1Detector.query_settings()["decoding"] == "greedy"


@pytest.fixture(scope="module")
def vision_r1():
    detector = load_detector("vision-r1", tiny_weights("vision-r1"))
    detector.max_new_tokens = 12
    return detector


def test_vision_r1_pins_the_evaluations_pixel_limits_and_fast_processor(vision_r1):
    """eval_localization.py:816 AutoProcessor.from_pretrained(..., use_fast=True, min_pixels=28*28,
    max_pixels=12800*28*28), whatever the folder's preprocessor config says (the tiny one: 56*56..112*112)."""
    processor = vision_r1.processor.image_processor
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (MIN_PIXELS, MAX_PIXELS) == (28 * 28, 12800 * 28 * 28)
    assert processor.backend == "torchvision"  # transformers' name for use_fast=True
    saved = json.loads((tiny_weights("vision-r1") / "processor_config.json").read_text())["image_processor"]["size"]
    assert saved["longest_edge"] == 112 * 112  # the folder's own limit, overridden


def test_vision_r1_resizes_as_process_vision_info_does(vision_r1, photo):
    """eval_localization.py:669 process_vision_info; qwen-vl-utils 0.0.10 (QwenLM/Qwen2.5-VL @
    d66ace26f258fc6feea27f90472856b377e3399b) vision_process.py:25-27 factor 28, 4*28*28..16384*28*28
    pixels, :75-76 nearest multiples of 28, :138 image.resize (PIL's bicubic)."""
    resized = vision_resize(photo)
    assert resized.size == (308, 196)  # 300x200: round(300/28)*28, round(200/28)*28
    assert np.array_equal(np.asarray(resized), np.asarray(photo.resize((308, 196), Image.Resampling.BICUBIC)))
    assert vision_resize(Image.new("RGB", (20, 20))).size == (56, 56)  # at least 4*28*28 pixels
    (_, grid), *_ = vision_r1.answers([(photo, PROMPT.format(category="dog"))])
    assert grid == (308, 196)  # the processor's grid (image_grid_thw * 14, :680-681) is the resized image


def test_vision_r1_full_path_queries_each_category_and_keeps_every_answer(vision_r1, photo):
    out = vision_r1.detect(photo, ["dog", "backpack", "dog"])
    raw = json.loads(out.raw)
    assert [r["category"] for r in raw] == ["dog", "backpack"] and all(isinstance(r["answer"], str) for r in raw)
    # random weights answer gibberish: recorded per query, not a crash
    assert out.detections or all(p.startswith(("query 'dog'", "query 'backpack'")) for p in out.problems)


def test_vision_r1_batches_queries_across_images_with_the_answers_of_one_at_a_time(vision_r1, photo):
    other = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((200, 260))
    rows: list[int] = []
    generate = vision_r1.model.generate

    def counting(**kwargs):
        rows.append(int(kwargs["input_ids"].shape[0]))
        return generate(**kwargs)

    vision_r1.model.generate = counting
    try:
        vision_r1.batch_size = 3
        batched = vision_r1.detect_batch([photo, other], [["dog", "backpack"], ["cat", "dog"]])
        assert rows == [3, 1]  # 4 queries, 3 per generate() call
        rows.clear()
        vision_r1.batch_size = 1  # the evaluation's own batch of one
        single = [vision_r1.detect(photo, ["dog", "backpack"]), vision_r1.detect(other, ["cat", "dog"])]
        assert rows == [1, 1, 1, 1]
    finally:
        vision_r1.model.generate, vision_r1.batch_size = generate, 8
    assert [json.loads(o.raw) for o in batched] == [json.loads(o.raw) for o in single]  # left padding changes no answer


def test_vision_r1_rescales_from_the_processor_grid(vision_r1, photo):
    """eval_localization.py:1080-1081: box / input_width * width, box / input_height * height."""
    gw, gh = 308, 196
    answer = f'```json\n[{{"bbox_2d": [0, 0, {gw}, {gh}], "label": "Dog"}}, {{"bbox_2d": [{gw / 4}, {gh / 2}, {gw / 2}, {gh}], "label": "cat"}}]\n```'
    out = vision_r1.boxes_from_answer(answer, (gw, gh), photo.size)
    w, h = photo.size
    assert [d.box for d in out.detections] == [pytest.approx((0, 0, w, h)), pytest.approx((w / 4, h / 2, w / 2, h))]
    assert [d.label for d in out.detections] == ["dog", "cat"] and {d.score for d in out.detections} == {0.99}


def test_vision_r1_pools_queries_and_fails_only_when_every_query_failed(vision_r1):
    good = vision_r1.boxes_from_answer("[{'bbox_2d': [1, 2, 30, 40], 'label': 'dog'}]", (112, 112), (224, 224))
    bad = vision_r1.boxes_from_answer("no boxes here", (112, 112), (224, 224))
    assert bad.failed and bad.detections == () and "unparseable" in bad.problems[0]
    mixed = pool([("dog", good), ("cat", bad)])
    assert not mixed.failed and [d.label for d in mixed.detections] == ["dog"] and mixed.problems[0].startswith("query 'cat': unparseable")
    assert json.loads(mixed.raw) == [{"category": "dog", "answer": good.raw}, {"category": "cat", "answer": "no boxes here"}]
    assert pool([("dog", bad), ("cat", bad)]).failed


def test_vision_r1_bad_boxes_are_dropped_with_reasons(vision_r1):
    answer = '[{"bbox_2d": [10, 10, 10, 50], "label": "dog"}, {"bbox_2d": [60, 60, 20, 20], "label": "cat"}, {"bbox_2d": [1, 2, 30, 40], "label": "vase"}]'
    out = vision_r1.boxes_from_answer(answer, (112, 112), (224, 224))
    assert [d.label for d in out.detections] == ["vase"]
    assert any("zero area" in p for p in out.problems) and any("inverted" in p for p in out.problems)


@pytest.mark.parametrize(
    ("name", "family"), [("grounding-dino", "grounding-dino"), ("owlv2", "owlv2"), ("vision-r1", "vision-r1:qwen2_5_vl")]
)
def test_every_detector_ends_its_constructor_with_the_shared_weights_identity(name, family):
    """``Detector.identify_weights`` is the one constructor tail: the weights' fingerprint, the model id
    each detector has always had (``<family>@<16 hex digits>``), a zeroed forward-time counter."""
    folder = tiny_weights(name)
    detector = load_detector(name, folder)
    sha = weights_sha256(folder)
    assert detector.weights_sha256 == sha and detector.provenance()["weights_sha256"] == sha
    assert detector.model_id == f"{family}@{sha[:16]}" == detector.provenance()["model_id"]
    assert detector.forward_seconds == 0.0


def test_a_plug_in_detector_gets_the_same_identity_from_the_base_class(tmp_path: Path):
    class PlugIn(Detector):
        name = "plug-in"

        def __init__(self, folder: Path, device: str = "cpu") -> None:
            self.identify_weights(folder)

    (tmp_path / "model.safetensors").write_bytes(b"not really weights")
    first = PlugIn(tmp_path)
    assert first.model_id == f"plug-in@{weights_sha256(tmp_path)[:16]}" and first.forward_seconds == 0.0
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert PlugIn(tmp_path).model_id != first.model_id
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError):
        PlugIn(tmp_path / "empty")
