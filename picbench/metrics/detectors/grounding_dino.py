"""Grounding DINO (transformers), the default open-vocabulary detector.

The text query is the class words joined as "dog . backpack ."; each predicted box takes the class
whose token span it scores highest on (sigmoid of the token logits, max over the span), so labels
are always one of the asked class words, never a merged phrase.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput, clean_detections


class GroundingDinoDetector(Detector):
    name = "grounding-dino"
    hub_id = "IDEA-Research/grounding-dino-base"

    def __init__(self, folder: Path, device: str = "cpu", *, box_threshold: float = 0.35) -> None:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        self.folder = Path(folder)
        self.device = torch.device(device)
        self.model = GroundingDinoForObjectDetection.from_pretrained(self.folder).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(self.folder)
        self.box_threshold = box_threshold
        self.identify_weights(self.folder)

    @classmethod
    def query_settings(cls) -> dict[str, Any]:
        return {"query_mode": "all categories in one query", "prompt": "class words joined with ' . '"}

    def provenance(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "box_threshold": self.box_threshold,
            **self.query_settings(),
            "image_processor": self.processor.image_processor.to_dict(),
        }

    @staticmethod
    def query(classes: Sequence[str]) -> tuple[str, list[str], list[tuple[int, int]]]:
        """The text query, its class words and each word's character span in it."""
        words = list(dict.fromkeys(" ".join(c.lower().split()) for c in classes))
        spans, text = [], ""
        for w in words:
            spans.append((len(text), len(text) + len(w)))
            text += w + " . "
        return text.strip(), words, spans

    @torch.inference_mode()
    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        text, words, spans = self.query(classes)
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        offsets = self.processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        start = time.perf_counter()
        outputs = self.model(**inputs)
        self.forward_seconds += time.perf_counter() - start
        probs = outputs.logits[0].float().sigmoid()  # (queries, text tokens)
        per_class = []
        for lo, hi in spans:
            tokens = [t for t, (a, b) in enumerate(offsets) if b > a and a >= lo and b <= hi and t < probs.shape[1]]
            per_class.append(probs[:, tokens].max(dim=1).values if tokens else torch.zeros(probs.shape[0], device=probs.device))
        scores, labels = torch.stack(per_class, dim=1).max(dim=1)
        w, h = image.size
        cx, cy, bw, bh = outputs.pred_boxes[0].float().unbind(-1)
        boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], dim=-1)
        keep = scores >= self.box_threshold
        found = [
            Detection(tuple(float(v) for v in box), words[int(label)], float(score))
            for box, label, score in zip(boxes[keep].tolist(), labels[keep].tolist(), scores[keep].tolist())
        ]
        kept, problems = clean_detections(found, w, h)
        return DetectorOutput(tuple(kept), None, tuple(problems))
