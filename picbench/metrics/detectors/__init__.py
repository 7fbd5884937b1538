"""Detectors behind one interface (:class:`Detector`); loaded by name with ``load_detector``."""

from __future__ import annotations

from pathlib import Path

from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput

DETECTOR_NAMES = ("grounding-dino", "owlv2", "vision-r1")

__all__ = ["DETECTOR_NAMES", "Detection", "Detector", "DetectorOutput", "load_detector"]


def load_detector(name: str, folder: Path, device: str = "cpu") -> Detector:
    if name == "vision-r1":
        from picbench.metrics.detectors.vision_r1 import VisionR1Detector

        return VisionR1Detector(folder, device)
    if name == "grounding-dino":
        from picbench.metrics.detectors.grounding_dino import GroundingDinoDetector

        return GroundingDinoDetector(folder, device)
    if name == "owlv2":
        from picbench.metrics.detectors.owlv2 import Owlv2Detector

        return Owlv2Detector(folder, device)
    raise ValueError(f"unknown detector {name!r} (known: {', '.join(DETECTOR_NAMES)})")
