"""Vision-R1 (a Qwen2.5-VL model tuned for localization), the paper's detector, queried as Vision-R1's
own localization evaluation queries it.

Every choice below is pinned to jefferyZhan/Griffon @ 9866875e7d18e705239f3e03115a55aef30ab635,
``Vision-R1/eval/`` (:data:`EVALUATION`), in its ODinW / visual-grounding setting, the one that asks
for categories known to be in the image (``eval_localization.sh:5-6`` and ``:22``: ``--single --pos``):

- one query per category (``SINGLE_POS_EVALDataset``, ``eval_localization.py:553-617``: one item per
  (image, category present), ``:597`` ``prompt.replace("<category set>", cate)``), with the prompt
  ``eval_localization.sh:6`` gives (:data:`PROMPT`); the answers of an image's queries are pooled;
- the processor's pixel limits ``min_pixels=28*28, max_pixels=12800*28*28`` and its fast
  (torchvision) image processor (``eval_localization.py:816``, ``use_fast=True``);
- the image first resized as ``qwen_vl_utils.process_vision_info`` resizes it (``:669``; qwen-vl-utils
  0.0.10, QwenLM/Qwen2.5-VL @ d66ace26f258fc6feea27f90472856b377e3399b,
  ``qwen-vl-utils/src/qwen_vl_utils/vision_process.py:25-27, 59-85, 119-138``: PIL's bicubic resize
  to ``smart_resize`` with factor 28 and 4*28*28..16384*28*28 pixels);
- greedy decoding, ``max_new_tokens=512``, ``use_cache=True`` (``:926``);
- answers parsed as ``:1066-1092`` parses them (:mod:`picbench.metrics.detectors.parse`);
- boxes scaled from the processor's grid (``image_grid_thw * 14``, ``:680-681``) back to the image
  (``:1080-1081``), every box scored 0.99 (``:1088``): Vision-R1 gives no confidence.

Deviations, decided: queries run in batches of ``batch_size`` (left-padded; the evaluation asserts
a batch of one, ``:924``, which ``batch_size=1`` reproduces exactly); boxes are clipped to the image
and zero-area or inverted ones dropped with a recorded reason (the evaluation hands them to COCOeval).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput, clean_detections
from picbench.metrics.detectors.parse import AnswerFormatError, parse_answer

EVALUATION = "jefferyZhan/Griffon@9866875e7d18e705239f3e03115a55aef30ab635:Vision-R1/eval/eval_localization.py"
PROMPT = "Locate every {category} in the image and output the coordinates in JSON format."  # eval_localization.sh:6
QUERY_MODE = "one query per category"  # eval_localization.py:553-617 (--single --pos)
MIN_PIXELS = 28 * 28  # eval_localization.py:816
MAX_PIXELS = 12800 * 28 * 28  # eval_localization.py:816
PATCH_SIZE = 14  # eval_localization.py:680-681: input size = image_grid_thw * 14
MAX_NEW_TOKENS = 512  # eval_localization.py:926
SCORE = 0.99  # eval_localization.py:1088
# qwen-vl-utils 0.0.10 (QwenLM/Qwen2.5-VL@d66ace26f258fc6feea27f90472856b377e3399b), vision_process.py:25-27
RESIZE_FACTOR, RESIZE_MIN_PIXELS, RESIZE_MAX_PIXELS = 28, 4 * 28 * 28, 16384 * 28 * 28


def queries(classes: Sequence[str]) -> list[tuple[str, str]]:
    """(category, prompt) of each query: each class word once, in order."""
    return [(c, PROMPT.format(category=c)) for c in dict.fromkeys(c.strip() for c in classes)]


def vision_resize(image: Image.Image) -> Image.Image:
    """The image as ``process_vision_info`` hands it to the processor: RGB, resized (PIL bicubic)
    to the nearest multiples of 28 within its pixel limits."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    height, width = smart_resize(image.height, image.width, RESIZE_FACTOR, RESIZE_MIN_PIXELS, RESIZE_MAX_PIXELS)
    return image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)


class VisionR1Detector(Detector):
    name = "vision-r1"
    hub_id = "JefferyZhan/Qwen2.5-VL-7B-Instruct-Vision-R1"

    def __init__(self, folder: Path, device: str = "cpu", *, batch_size: int = 8) -> None:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.folder = Path(folder)
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.folder, dtype=dtype).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(
            self.folder, backend="torchvision", size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
        )  # min_pixels, max_pixels
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.max_new_tokens = MAX_NEW_TOKENS
        self.score = SCORE
        self.batch_size = batch_size
        self.identify_weights(self.folder, family="vision-r1:qwen2_5_vl")

    @classmethod
    def query_settings(cls) -> dict[str, Any]:
        return {
            "query_mode": QUERY_MODE,
            "prompt": PROMPT,
            "evaluation": EVALUATION,
            "min_pixels": MIN_PIXELS,
            "max_pixels": MAX_PIXELS,
            "image_resize": {
                "library": "qwen-vl-utils==0.0.10",
                "factor": RESIZE_FACTOR,
                "min_pixels": RESIZE_MIN_PIXELS,
                "max_pixels": RESIZE_MAX_PIXELS,
            },
            "parser": "eval_localization.py:1066-1092 (parse_json, ast.literal_eval, cut-off recovery)",
            "constant_score": SCORE,
            "max_new_tokens": MAX_NEW_TOKENS,
            "decoding": "greedy",
        }

    def provenance(self) -> dict[str, Any]:
        return {
            "detector": self.name,
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            **self.query_settings(),
            "max_new_tokens": self.max_new_tokens,
            "constant_score": self.score,
            "batch_size": self.batch_size,
            "image_processor": self.processor.image_processor.to_dict(),
        }

    @torch.inference_mode()
    def answers(self, requests: Sequence[tuple[Image.Image, str]]) -> list[tuple[str, tuple[int, int]]]:
        """The model's raw answer to each (image, prompt) and the (width, height) in pixels of the
        grid it saw, ``batch_size`` queries per generate() call."""
        found: list[tuple[str, tuple[int, int]]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            texts = [
                self.processor.apply_chat_template(
                    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for _, prompt in chunk
            ]
            images = [vision_resize(image) for image, _ in chunk]
            inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
            begin = time.perf_counter()
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, use_cache=True)
            self.forward_seconds += time.perf_counter() - begin
            decoded = self.processor.batch_decode(
                out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            for answer, (_, grid_h, grid_w) in zip(decoded, inputs["image_grid_thw"].tolist()):
                found.append((answer, (int(grid_w) * PATCH_SIZE, int(grid_h) * PATCH_SIZE)))
        return found

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
        return self.detect_batch([image], [classes])[0]

    def detect_batch(self, images: Sequence[Image.Image], classes: Sequence[Sequence[str]]) -> list[DetectorOutput]:
        """Every image's per-category queries, batched across images; each image's answers pooled."""
        asked = [queries(c) for c in classes]
        flat = [(i, category, prompt) for i, qs in enumerate(asked) for category, prompt in qs]
        replies = self.answers([(images[i], prompt) for i, _, prompt in flat])
        per_image: list[list[tuple[str, DetectorOutput]]] = [[] for _ in images]
        for (i, category, _), (answer, grid) in zip(flat, replies):
            per_image[i].append((category, self.boxes_from_answer(answer, grid, images[i].size)))
        return [pool(outputs) for outputs in per_image]


def pool(outputs: Sequence[tuple[str, DetectorOutput]]) -> DetectorOutput:
    """One image's output from its per-category queries: their detections together (the evaluation
    pools them under one image id); failed only when every query failed; the raw answers kept as a
    JSON list of {"category", "answer"}; each problem names its query."""
    raw = json.dumps([{"category": category, "answer": out.raw} for category, out in outputs], ensure_ascii=False)
    return DetectorOutput(
        tuple(d for _, out in outputs for d in out.detections),
        raw,
        tuple(f"query {category!r}: {p}" for category, out in outputs for p in out.problems),
        failed=bool(outputs) and all(out.failed for _, out in outputs),
    )
