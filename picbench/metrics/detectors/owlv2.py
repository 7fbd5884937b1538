"""OWLv2, an open-vocabulary detector in transformers: the second backend beside Vision-R1.

OWLv2's processor pads the image to a square before resizing, so boxes are post-processed
against the padded square (side = max(width, height)) and then clipped to the image.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput, clean_detections


class Owlv2Detector(Detector):
    name = "owlv2"
    hub_id = "google/owlv2-base-patch16-ensemble"

    def __init__(self, folder: Path, device: str = "cpu", *, threshold: float = 0.1) -> None:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        self.folder = Path(folder)
        self.device = torch.device(device)
        self.model = Owlv2ForObjectDetection.from_pretrained(self.folder).eval().to(self.device)
        self.processor = Owlv2Processor.from_pretrained(self.folder)
        self.threshold = threshold
        self.identify_weights(self.folder)

    @classmethod
    def query_settings(cls) -> dict[str, Any]:
        return {"query_mode": "one text query per category, all in one forward pass", "prompt": "a photo of a {class word}"}

    def provenance(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "threshold": self.threshold,
            **self.query_settings(),
            "image_processor": self.processor.image_processor.to_dict(),
        }

    @torch.inference_mode()
    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        words = list(dict.fromkeys(c.strip() for c in classes))
        queries = [[f"a photo of a {w}" for w in words]]
        inputs = self.processor(text=queries, images=image, padding="max_length", truncation=True, return_tensors="pt").to(self.device)
        start = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            outputs = self.model(**inputs)
        self.forward_seconds += time.perf_counter() - start
        side = max(image.size)
        result = self.processor.post_process_grounded_object_detection(outputs, threshold=self.threshold, target_sizes=[(side, side)])[0]
        found = [
            Detection(tuple(float(v) for v in box), words[int(label)], float(score))
            for box, label, score in zip(result["boxes"], result["labels"], result["scores"])
        ]
        kept, problems = clean_detections(found, *image.size)
        return DetectorOutput(tuple(kept), None, tuple(problems))
