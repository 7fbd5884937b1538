"""One interface for every detector: image + class words -> pixel xyxy boxes, labels, scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from picbench.errors import PicbenchError
from picbench.metrics.boxes import box_problem
from picbench.metrics.weights import weights_sha256


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # pixels of the original image, xyxy
    label: str
    score: float


@dataclass(frozen=True)
class DetectorOutput:
    detections: tuple[Detection, ...]
    raw: str | None = None  # the model's own answer, kept for the record (VLM detectors)
    problems: tuple[str, ...] = field(default_factory=tuple)  # boxes dropped, answers cut off
    failed: bool = False  # the detector raised or its answer did not parse: no output, not "nothing found"


class Detector:
    """Subclasses implement ``__init__(folder, device)`` (ending with :meth:`identify_weights`
    when they load weights), ``detect`` and ``provenance``; ``model_id`` names the weights. Registered in ``DETECTORS`` (entry-point group
    ``picbench.detectors``): ``hub_id`` is where the default weights come from (None: the detector
    needs no weights, and gets ``folder=None``); :meth:`smoke_folder` gives the random-weight model
    of ``--models tiny``."""

    name: str = ""
    hub_id: str | None = None
    model_id: str = ""
    forward_seconds: float = 0.0

    def __init__(self, folder: Path | None, device: str = "cpu") -> None:
        raise NotImplementedError

    def identify_weights(self, folder: Path, family: str | None = None) -> None:
        """The tail of every weights-backed constructor: fingerprint the weights in ``folder``
        (``weights_sha256``, which keys cached outputs and goes into provenance), name the model
        ``<family>@<16 hex digits>`` (family: the detector's name unless given) and start the
        forward-time counter."""
        self.weights_sha256 = weights_sha256(folder)
        self.model_id = f"{family or self.name}@{self.weights_sha256[:16]}"
        self.forward_seconds = 0.0

    @classmethod
    def smoke_folder(cls) -> Path | None:
        """The folder of this detector's tiny random-weight model (picbench builds those of its own detectors)."""
        from picbench.tiny.metric_models import BUILDERS, tiny_weights

        if cls.name not in BUILDERS:
            raise PicbenchError(f"detector {cls.name!r} has no tiny model for --models tiny; give its weights with --weights detector=DIR")
        return tiny_weights(cls.name)

    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        raise NotImplementedError

    def detect_batch(self, images: Sequence[Image.Image], classes: Sequence[Sequence[str]]) -> list[DetectorOutput]:
        """One output per image, ``classes[i]`` asked of ``images[i]``; detectors that batch their
        forward passes override this (the engine calls it once per scoring batch)."""
        return [self.detect(image, asked) for image, asked in zip(images, classes)]

    @classmethod
    def query_settings(cls) -> dict[str, Any]:
        """How this detector is queried (query mode, prompt, image limits, answer parser, score),
        known without loading its weights: what a protocol records about the detector."""
        return {}

    def provenance(self) -> dict[str, Any]:
        raise NotImplementedError


def clean_detections(candidates: Sequence[Detection], width: int, height: int) -> tuple[list[Detection], list[str]]:
    """Clip boxes to the image and drop zero-area or inverted ones, saying why."""
    kept: list[Detection] = []
    problems: list[str] = []
    for det in candidates:
        why = box_problem(det.box)
        if why is None:
            x0, y0, x1, y1 = det.box
            clipped = (
                min(max(x0, 0.0), float(width)),
                min(max(y0, 0.0), float(height)),
                min(max(x1, 0.0), float(width)),
                min(max(y1, 0.0), float(height)),
            )
            why = box_problem(clipped)
            if why is not None:
                why = f"{why} after clipping {list(det.box)} to the {width}x{height} image"
        if why is not None:
            problems.append(f"dropped {det.label or 'unlabelled'} detection: {why}")
            continue
        kept.append(Detection(clipped, det.label, det.score))
    return kept, problems
