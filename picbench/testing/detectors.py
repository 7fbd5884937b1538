"""The detector suite: what the engine's matching, IoU, AP and presence rely on of every detector.

- its declaration: the registered name, and ``query_settings()`` (what a protocol records, known
  without weights) as JSON;
- built on its tiny random-weight model (``smoke_folder()``; no folder where ``hub_id`` is None)
  or on a given folder, it names its weights (``model_id``);
- ``detect`` on a real, non-square photo answers a DetectorOutput whose boxes are pixel xyxy
  inside the image with a positive area, labelled with one of the asked class words, scored by a
  finite number in 0..1; a failed output says why;
- ``detect_batch`` answers one such output per image;
- ``provenance()`` is JSON naming the detector and its ``model_id`` (and the weights' hash where
  it loaded a folder): what a run records of how its boxes were found."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from picbench.imaging import load_rgb
from picbench.metrics.boxes import normalize_label
from picbench.metrics.detectors import DETECTORS, Detection, Detector, DetectorOutput
from picbench.testing.registries import require, resolve
from picbench.testing.samples import DOG, conformance_samples, data_root

CLASSES = ("dog", "teddy bear", "dog")  # a class asked twice, and one that is not in the photo


def detector_class(entry: str | type[Detector]) -> tuple[str, type[Detector], str]:
    name, cls, label = resolve(DETECTORS, entry)
    require(isinstance(cls, type) and issubclass(cls, Detector), label, "is not a Detector subclass")
    return name, cls, label


def check_output(label: str, output: object, size: tuple[int, int], classes: Sequence[str], where: str) -> None:
    require(isinstance(output, DetectorOutput), label, f"{where}: answered {type(output).__name__}, not a DetectorOutput")
    assert isinstance(output, DetectorOutput)
    if output.failed:
        require(bool(output.problems), label, f"{where}: a failed output must say why in its problems")
    tiny = output.detections and all(max(det.box) <= 1.0 for det in output.detections)
    require(not tiny, label, f"{where}: every box lies within [0, 1]: normalized coordinates, not pixels of the {size[0]}x{size[1]} image")
    asked = {normalize_label(c) for c in classes}
    width, height = size
    for det in output.detections:
        require(isinstance(det, Detection), label, f"{where}: {det!r} is not a Detection")
        box = det.box
        finite = len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
        require(finite, label, f"{where}: box {box!r} is not four finite numbers")
        inside = 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        require(inside, label, f"{where}: box {list(box)} is not a pixel xyxy box inside the {width}x{height} image")
        require(normalize_label(det.label) in asked, label, f"{where}: label {det.label!r} is none of the asked classes {sorted(asked)}")
        score = det.score
        require(
            isinstance(score, (int, float)) and math.isfinite(score) and 0 <= score <= 1, label, f"{where}: score {score!r} is not in 0..1"
        )


def images(root: Path) -> list[tuple[Image.Image, tuple[str, ...], str]]:
    """(image, asked classes, description): a DreamBench photo at 300x200, and the paste method's
    picture of the two-subject conformance sample."""
    from picbench.methods.paste import PasteMethod

    pair = conformance_samples()[0]
    pasted = PasteMethod(models="tiny").generate([pair], 0, root)[0]
    photo = load_rgb(root / DOG).resize((300, 200), Image.BICUBIC)
    return [(photo, CLASSES, f"{DOG} at 300x200"), (pasted, tuple(s.class_word for s in pair.subjects), "the pasted pair")]


def check_detector(entry: str | type[Detector], root: Path | None = None, folder: Path | None = None, device: str = "cpu") -> None:
    """Every check of the detector suite; ``folder``: weights to build it on instead of its tiny model."""
    name, cls, label = detector_class(entry)
    require(cls.name == name, label, f"its name attribute {cls.name!r} is not the name it is registered under")
    try:
        json.dumps(cls.query_settings())
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{label}: query_settings() is not JSON: {exc}") from None
    if folder is None and cls.hub_id is not None:
        try:
            folder = cls.smoke_folder()
        except Exception as exc:
            raise AssertionError(f"{label}: no tiny model to check it on ({exc}); pass folder=") from exc
    detector = cls(folder, device)
    require(isinstance(detector.model_id, str) and bool(detector.model_id), label, "has no model_id naming its weights")
    cases = images(data_root(root))
    for image, classes, where in cases:
        check_output(label, detector.detect(image, list(classes)), image.size, classes, f"detect on {where}")
    batch = detector.detect_batch([im for im, _, _ in cases], [list(c) for _, c, _ in cases])
    require(len(batch) == len(cases), label, f"detect_batch gave {len(batch)} outputs for {len(cases)} images")
    for (image, classes, where), output in zip(cases, batch):
        check_output(label, output, image.size, classes, f"detect_batch on {where}")
    provenance = detector.provenance()
    try:
        json.dumps(provenance)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{label}: provenance() is not JSON: {exc}") from None
    require(provenance.get("detector") == name, label, f"provenance() names detector {provenance.get('detector')!r}, not {name!r}")
    require(provenance.get("model_id") == detector.model_id, label, "provenance() does not record its model_id")
    if folder is not None:
        require(bool(provenance.get("weights_sha256")), label, "provenance() does not record the hash of the weights it loaded")
