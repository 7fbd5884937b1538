"""Occlusion-order accuracy and subject presence / duplication, on real DreamBench references and
the tiny random-weight encoders: pasted pixels equal the references, so even random weights see them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from picbench.benches.positionic import build_open
from picbench.imaging import load_rgb
from picbench.methods.paste import PasteMethod
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.detectors import DETECTORS
from picbench.metrics.engine import MetricEngine
from picbench.metrics.occlusion import MIN_SIDE_PX, overlapping_pairs
from picbench.metrics.presence import count_instances
from picbench.records import Sample, Subject

DOG, CAT = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/cat/00.jpg"
DETECTORS.register("blobs", "metrics_plugin:BlobDetector")


def reversed_depths(sample: Sample) -> Sample:
    top = max(s.depth for s in sample.subjects if s.depth is not None)
    return replace(sample, subjects=tuple(replace(s, depth=top - s.depth) for s in sample.subjects))


@pytest.fixture(scope="module")
def overlapping(data_dir: Path) -> list[Sample]:
    """The first overlapping multi-subject samples of positionic-open, at 256 px to keep the test fast."""
    samples = [s for s in build_open(data_dir).samples if overlapping_pairs(s)][:8]
    assert len(samples) == 8 and all(s.split == "multi" for s in samples)
    return [replace(s, width=256, height=256) for s in samples]


def test_pasted_back_to_front_has_high_occlusion_accuracy_and_reversed_ranks_fall(overlapping, data_dir):
    images = PasteMethod(models="tiny", device="cpu").generate(overlapping, 0, data_dir)
    engine = MetricEngine(models="tiny", metrics=["occlusion_order"], detector=None)
    results = {}
    for name, samples in (("as pasted", overlapping), ("reversed", [reversed_depths(s) for s in overlapping])):
        scores = list(engine.score([ScoreItem(s, 0, None, image=im) for s, im in zip(samples, images)], data_dir))
        results[name] = engine.aggregate(scores, {s.id: s for s in samples})
    assert results["as pasted"]["n_occlusion_pairs"] == results["reversed"]["n_occlusion_pairs"] >= 8
    assert results["as pasted"]["occlusion_order"] >= 0.75
    assert results["reversed"]["occlusion_order"] <= 0.25
    assert results["as pasted"]["occlusion_order.multi"] == results["as pasted"]["occlusion_order"]
    assert engine.directions()["occlusion_order"] is True


def test_no_overlap_is_not_applicable_and_a_sliver_is_a_recorded_failure(data_dir, tmp_path):
    apart = Sample(
        "apart",
        "a dog and a cat",
        256,
        256,
        "multi",
        (
            Subject("dog", "dog", (DOG,), box=(0.0, 0.0, 0.4, 0.4), depth=0),
            Subject("cat", "cat", (CAT,), box=(0.5, 0.5, 1.0, 1.0), depth=1),
        ),
    )
    sliver = replace(
        apart, id="sliver", subjects=(apart.subjects[0], replace(apart.subjects[1], box=(0.4 - (MIN_SIDE_PX - 2) / 256, 0.0, 1.0, 1.0)))
    )
    single = Sample("one", "a dog", 256, 256, "single", (Subject("dog", "dog", (DOG,), box=(0.1, 0.1, 0.9, 0.9), depth=0),))
    image = load_rgb(data_dir / DOG).resize((256, 256))
    engine = MetricEngine(models="tiny", metrics=["occlusion_order"], detector=None)
    by_id = {s.sample_id: s for s in engine.score([ScoreItem(s, 0, None, image=image) for s in (apart, sliver, single)], data_dir)}
    assert by_id["apart"].metrics["occlusion_order"] is None and not by_id["apart"].failures
    assert by_id["one"].metrics["occlusion_order"] is None
    assert by_id["sliver"].metrics["occlusion_order"] is None
    assert any("occlusion_order" in f and "too small to crop" in f for f in by_id["sliver"].failures)


def _canvas(data_dir: Path, boxes: list[tuple[int, int, int, int]]) -> Image.Image:
    canvas = Image.new("RGB", (256, 256), (127, 127, 127))
    dog = load_rgb(data_dir / DOG)
    for x0, y0, x1, y1 in boxes:
        canvas.paste(dog.resize((x1 - x0, y1 - y0)), (x0, y0))
    return canvas


def test_a_subject_pasted_twice_is_duplicated_and_removed_is_missing(data_dir):
    sample = Sample("dog", "a dog", 256, 256, "single", (Subject("dog", "dog", (DOG,), box=(0.05, 0.1, 0.45, 0.6), depth=0),))
    images = {
        "once": _canvas(data_dir, [(13, 26, 115, 154)]),
        "twice": _canvas(data_dir, [(13, 26, 115, 154), (150, 60, 250, 200)]),
        "removed": _canvas(data_dir, []),
    }
    images["removed"].putpixel((0, 0), (0, 0, 0))  # not blank: a blank image is refused before any metric
    engine = MetricEngine(models="tiny", metrics=["presence"], detector="blobs")
    scores = dict(zip(images, engine.score([ScoreItem(sample, k, None, image=im) for k, im in enumerate(images.values())], data_dir)))
    assert scores["once"].metrics == {"present_once": 1.0, "missing": 0.0, "duplicated": 0.0}
    assert scores["twice"].metrics == {"present_once": 0.0, "missing": 0.0, "duplicated": 1.0}
    assert scores["removed"].metrics == {"present_once": 0.0, "missing": 1.0, "duplicated": 0.0}
    directions = engine.directions()
    assert directions == {"present_once": True, "missing": False, "duplicated": False}


def test_presence_counts_only_unique_class_words_and_merges_near_identical_boxes():
    assert count_instances([((0, 0, 10, 10), 0.9), ((0.5, 0, 10, 10), 0.8), ((50, 50, 60, 60), 0.7)]) == 2
    assert count_instances([]) == 0


def test_presence_is_none_without_detector_output_or_countable_subjects(data_dir):
    from picbench.metrics.base import Features
    from picbench.metrics.detectors import Detection, DetectorOutput
    from picbench.metrics.presence import SubjectPresence

    metric = SubjectPresence()
    one = Sample("one", "a dog", 64, 64, "single", (Subject("dog", "dog", (DOG,), box=(0.1, 0.1, 0.9, 0.9)),))
    two_dogs = Sample("two", "two dogs", 64, 64, "multi", (Subject("a", "dog", (DOG,)), Subject("b", "dog", (DOG,))))
    failed = DetectorOutput((), "not json", ("unparseable detector answer: ...",), failed=True)
    found = DetectorOutput((Detection((1, 1, 30, 30), "dog", 0.9),))
    assert metric.item(Features(one, 0, True, (64, 64), data_dir, detections=failed), []) == dict.fromkeys(
        ("present_once", "missing", "duplicated")
    )
    assert metric.item(Features(two_dogs, 0, True, (64, 64), data_dir, detections=found), [])["present_once"] is None
    assert metric.item(Features(one, 0, True, (64, 64), data_dir, detections=found), [])["present_once"] == 1.0
