"""A third-party plug-in for the metric tests, installed as its own distribution (a dist-info folder
declaring entry points in the ``picbench.metrics`` and ``picbench.detectors`` groups):

- ``gray_fraction``: the share of pixels equal to the paste method's gray background, a
  lower-is-better metric (an image that is mostly background shows little of its subjects);
- ``flaky``: raises on sample s00, returns NaN on m01 and a string on s02, 1.0 elsewhere, so the
  engine's per-item, per-metric failure records are exercised;
- ``blobs``: a weight-free detector that finds the connected regions differing from the image's
  background colour (its most frequent colour) and labels them with the asked class words left to
  right, cycling; it sees pasted references exactly, so presence and duplication can be checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from picbench.metrics.base import Features, Metric
from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput

GRAY = (127, 127, 127)


class GrayFraction(Metric):
    name = "gray_fraction"
    summary = "share of background-gray pixels (lower is better)"
    needs = frozenset({"image"})
    higher_is_better = False

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        pixels = np.asarray(features.image)
        return {self.name: float(np.all(pixels == GRAY, axis=-1).mean())}


class Flaky(Metric):
    name = "flaky"
    summary = "misbehaves on purpose"
    default = False

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Any:
        sid = features.sample.id
        if sid == "s00":
            raise RuntimeError("flaky metric exploded")
        if sid == "m01":
            return {self.name: float("nan")}
        if sid == "s02":
            return {self.name: "high"}
        return {self.name: 1.0}


class BlobDetector(Detector):
    name = "blobs"
    hub_id = None
    min_area = 0.005  # share of the image

    def __init__(self, folder: Path | None, device: str = "cpu") -> None:
        self.model_id = "blobs@1"

    @classmethod
    def smoke_folder(cls) -> Path | None:
        return None

    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        from scipy import ndimage

        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        colours, counts = np.unique(pixels, axis=0, return_counts=True)
        background = colours[counts.argmax()]
        mask = np.any(np.asarray(image.convert("RGB")) != background, axis=-1)
        labelled, _ = ndimage.label(mask)
        boxes = []
        for region in ndimage.find_objects(labelled):
            ys, xs = region
            if (ys.stop - ys.start) * (xs.stop - xs.start) >= self.min_area * mask.size:
                boxes.append((float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)))
        boxes.sort()
        return DetectorOutput(tuple(Detection(box, classes[k % len(classes)], 0.9) for k, box in enumerate(boxes)))

    def provenance(self) -> dict[str, Any]:
        return {"detector": self.name, "model_id": self.model_id, "min_area": self.min_area}


def install_plugin(folder: Path) -> Path:
    """Make ``folder`` an importable distribution declaring the entry points; returns the folder to
    put on PYTHONPATH."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), folder / "metrics_plugin.py")
    dist = folder / "metrics_plugin-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: metrics-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[picbench.metrics]\ngray_fraction = metrics_plugin:GrayFraction\nflaky = metrics_plugin:Flaky\n"
        "[picbench.detectors]\nblobs = metrics_plugin:BlobDetector\n"
    )
    return folder
