"""Compositing in picbench.imaging: the one drawing order (back to front, unranked last) and
``paste_subjects`` on any canvas, as the paste method and the paste-pairs builder use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from picbench.imaging import FITS, back_to_front, paste_subjects
from picbench.methods import METHODS
from picbench.records import Sample, Subject

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for name, colour, size in (("red", RED, (30, 30)), ("blue", BLUE, (30, 30)), ("green", GREEN, (40, 20))):
        Image.new("RGB", size, colour).save(tmp_path / f"{name}.png")
    return tmp_path


def _subject(name: str, box, depth) -> Subject:
    return Subject(name, "thing", (f"{name}.png",), (), box, depth)


def test_back_to_front_draws_the_largest_rank_first_and_unranked_last():
    subjects = (
        _subject("front", (0.0, 0.0, 0.5, 0.5), 0),
        _subject("loose", (0.1, 0.1, 0.2, 0.2), None),
        _subject("back", (0.2, 0.2, 0.9, 0.9), 2),
        _subject("middle", (0.3, 0.3, 0.6, 0.6), 1),
    )
    order = back_to_front(Sample("s", "p", 64, 64, "multi", subjects))
    assert [s.name for s, _ in order] == ["back", "middle", "front", "loose"]
    assert [box for _, box in order] == [subjects[i].box for i in (2, 3, 0, 1)]


def test_paste_subjects_covers_only_the_boxes_of_a_scene_canvas(root: Path):
    scene = Image.new("RGB", (100, 100), (9, 9, 9))
    sample = Sample("s", "p", 100, 100, "multi", (_subject("red", (0.1, 0.1, 0.6, 0.6), 0), _subject("blue", (0.4, 0.4, 0.9, 0.9), 1)))
    pixels = np.asarray(paste_subjects(scene, sample, root))
    assert tuple(pixels[50, 50]) == RED, "the front subject covers the overlap"
    assert tuple(pixels[80, 80]) == BLUE and tuple(pixels[10, 10]) == RED
    assert tuple(pixels[5, 95]) == (9, 9, 9) and tuple(pixels[95, 5]) == (9, 9, 9), "outside the boxes the scene stays"


def test_contain_keeps_the_aspect_centred_in_the_box(root: Path):
    assert FITS == ("stretch", "contain")
    sample = Sample("s", "p", 100, 100, "single", (_subject("green", (0.0, 0.0, 1.0, 1.0), 0),))
    pixels = np.asarray(paste_subjects(Image.new("RGB", (100, 100), (0, 0, 0)), sample, root, fit="contain"))
    rows = np.nonzero((pixels == GREEN).all(axis=2).any(axis=1))[0]
    assert (rows.min(), rows.max()) == (25, 74), "a 2:1 reference in a square box: 100x50, centred"
    stretched = np.asarray(paste_subjects(Image.new("RGB", (100, 100), (0, 0, 0)), sample, root))
    assert (stretched == GREEN).all()


def test_the_paste_method_is_paste_subjects_on_its_background(root: Path):
    sample = Sample("s", "p", 64, 48, "multi", (_subject("red", (0.0, 0.0, 0.7, 0.7), 1), _subject("blue", (0.3, 0.2, 1.0, 1.0), 0)))
    seen: list[Path] = []

    def load(path: Path) -> Image.Image:
        seen.append(path)
        return Image.open(path).convert("RGB")

    expected = paste_subjects(Image.new("RGB", (64, 48), (127, 127, 127)), sample, root, load=load)
    (image,) = METHODS.get("paste")().generate([sample], 0, root)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))
    assert [p.name for p in seen] == ["red.png", "blue.png"], "the loader given is the one used, back to front"
