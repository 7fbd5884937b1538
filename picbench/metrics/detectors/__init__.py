"""Detectors behind one interface (:class:`Detector`), resolved by name through ``DETECTORS``;
other packages add detectors through the ``picbench.detectors`` entry-point group."""

from __future__ import annotations

from pathlib import Path

from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput
from picbench.registry import Registry

DETECTORS: Registry[type[Detector]] = Registry("detector", entry_point_group="picbench.detectors", base=Detector)
DETECTORS.register(
    "grounding-dino",
    "picbench.metrics.detectors.grounding_dino:GroundingDinoDetector",
    "Grounding DINO (transformers), the default outside the position benches",
)
DETECTORS.register("owlv2", "picbench.metrics.detectors.owlv2:Owlv2Detector", "OWLv2 (transformers)")
DETECTORS.register(
    "vision-r1",
    "picbench.metrics.detectors.vision_r1:VisionR1Detector",
    "Vision-R1 (Qwen2.5-VL), the paper's detector, the default on positionic and positionic-open",
)

__all__ = ["DETECTORS", "Detection", "Detector", "DetectorOutput", "load_detector"]


def load_detector(name: str, folder: Path | None, device: str = "cpu") -> Detector:
    return DETECTORS.get(name)(folder, device)
