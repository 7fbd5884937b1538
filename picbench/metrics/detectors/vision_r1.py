"""Vision-R1 (a Qwen2.5-VL model tuned for localization), the paper's detector, through transformers.

The model answers in the pixel space of the processor-resized image (a grid of 14 px patches), so
boxes are scaled back by original size / (grid size x patch size). It gives no score: every box
gets the constant ``score``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput, clean_detections
from picbench.metrics.detectors.parse import AnswerFormatError, parse_answer
from picbench.metrics.weights import weights_sha256

PROMPT = "Locate every {categories} in the image and output the coordinates in JSON format."


def categories_phrase(classes: Sequence[str]) -> str:
    """'dog', 'dog and cat', 'dog, cat and backpack' (each class once, in order)."""
    unique = list(dict.fromkeys(c.strip() for c in classes))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]


class VisionR1Detector(Detector):
    name = "vision-r1"
    hub_id = "JefferyZhan/Qwen2.5-VL-7B-Instruct-Vision-R1"

    def __init__(self, folder: Path, device: str = "cpu", *, max_new_tokens: int = 512, score: float = 1.0) -> None:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.folder = Path(folder)
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.folder, dtype=dtype).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(self.folder)
        self.patch_size = int(getattr(self.processor.image_processor, "patch_size", 14))
        self.max_new_tokens = max_new_tokens
        self.score = score
        self.weights_sha256 = weights_sha256(self.folder)
        self.model_id = f"vision-r1:qwen2_5_vl@{self.weights_sha256[:16]}"
        self.forward_seconds = 0.0

    def provenance(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "prompt": PROMPT,
            "max_new_tokens": self.max_new_tokens,
            "constant_score": self.score,
            "patch_size": self.patch_size,
            "image_processor": self.processor.image_processor.to_dict(),
        }

    @torch.inference_mode()
    def answer(self, image: Image.Image, classes: Sequence[str]) -> tuple[str, tuple[int, int]]:
        """The model's raw answer and the (width, height) of the grid it saw, in pixels."""
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT.format(categories=categories_phrase(classes))}]}
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[image], return_tensors="pt").to(self.device)
        start = time.perf_counter()
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        self.forward_seconds += time.perf_counter() - start
        answer = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        _, grid_h, grid_w = (int(v) for v in inputs["image_grid_thw"][0])
        return answer, (grid_w * self.patch_size, grid_h * self.patch_size)

    def boxes_from_answer(self, answer: str, grid_size: tuple[int, int], image_size: tuple[int, int]) -> DetectorOutput:
        """Parse, rescale from the processor's grid to original pixels, clean. A malformed answer
        becomes an output with no detections and the reason in ``problems``."""
        try:
            parsed = parse_answer(answer)
        except AnswerFormatError as exc:
            return DetectorOutput((), answer, (f"unparseable detector answer: {exc}",), failed=True)
        sx, sy = image_size[0] / grid_size[0], image_size[1] / grid_size[1]
        scaled = [Detection((b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy), b.label, self.score) for b in parsed.boxes]
        kept, problems = clean_detections(scaled, *image_size)
        return DetectorOutput(tuple(kept), answer, parsed.problems + tuple(problems))

    def detect(self, image: Image.Image, classes: Sequence[str]) -> DetectorOutput:
        answer, grid = self.answer(image, classes)
        return self.boxes_from_answer(answer, grid, image.size)
