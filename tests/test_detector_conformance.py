"""The detector suite (:mod:`picbench.testing.detectors`) over every registered detector, and a
broken detector of each kind failing it with a message naming the detector."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from grounded_samples import _one_thread  # noqa: F401 (autouse fixture)
from PIL import Image

from picbench.metrics.detectors import DETECTORS, Detection, Detector, DetectorOutput
from picbench.testing import check_detector, parametrize


@parametrize(DETECTORS)
def test_every_registered_detector_conforms(name: str, data_dir: Path) -> None:
    check_detector(name, data_dir)


class _Corner(Detector):
    """A weight-free detector: one box in the image's top-left quarter per asked class."""

    name = "corner"
    hub_id = None

    def __init__(self, folder: Path | None, device: str = "cpu") -> None:
        self.model_id = "corner@1"

    def box(self, image: Image.Image) -> tuple[float, float, float, float]:
        return (0.0, 0.0, image.width / 2, image.height / 2)

    def label(self, asked: str) -> str:
        return asked

    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        return DetectorOutput(tuple(Detection(self.box(image), self.label(c), 0.5) for c in dict.fromkeys(classes)))

    def provenance(self) -> dict[str, Any]:
        return {"detector": self.name, "model_id": self.model_id}


class NormalizedBoxes(_Corner):
    name = "normalized"

    def box(self, image: Image.Image) -> tuple[float, float, float, float]:
        return (0.1, 0.2, 0.6, 0.9)


class OtherLabels(_Corner):
    name = "other_labels"

    def label(self, asked: str) -> str:
        return "cat"


class SilentFailure(_Corner):
    name = "silent_failure"

    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        return DetectorOutput((), failed=True)


class AnonymousProvenance(_Corner):
    name = "anonymous"

    def provenance(self) -> dict[str, Any]:
        return {"model_id": self.model_id}


def test_a_well_formed_detector_passes(data_dir: Path) -> None:
    check_detector(_Corner, data_dir)


@pytest.mark.parametrize(
    ("detector", "message"),
    [
        (
            NormalizedBoxes,
            "detect on dreambench/dataset/dog/00.jpg at 300x200: every box lies within [0, 1]: normalized coordinates, not pixels of the 300x200 image",
        ),
        (OtherLabels, "label 'cat' is none of the asked classes ['dog', 'teddy bear']"),
        (SilentFailure, "a failed output must say why in its problems"),
        (AnonymousProvenance, "provenance() names detector None, not 'anonymous'"),
    ],
    ids=lambda case: getattr(case, "name", ""),
)
def test_a_broken_detector_fails_the_suite_naming_it(detector: type[Detector], message: str, data_dir: Path) -> None:
    with pytest.raises(AssertionError) as failed:
        check_detector(detector, data_dir)
    assert str(failed.value).startswith(f"detector {detector.name!r} (test_detector_conformance:{detector.__qualname__}): ")
    assert message in str(failed.value)
