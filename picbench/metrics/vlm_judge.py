"""A VLM judge of identity, in the manner of DreamBench++ (Peng et al. 2024, which asks GPT-4o for a
"concept preservation" grade on a five-level 0-4 scale): a local Qwen2.5-VL (transformers, any
local folder) is shown a subject's reference and a generated image (or its box crop) and answers a
grade, normalized to 0..1 by dividing by 4.

Deliberate differences: an open local model instead of GPT-4o (reproducible and offline), and a
short prompt of our own (pinned in tests/test_metrics_vlm_judge.py) instead of DreamBench++'s long
one; grades are therefore not comparable with DreamBench++'s numbers. The answer is parsed with a
regular expression, never evaluated; anything but exactly one grade in 0..4 is a
:class:`JudgeAnswerError`, recorded as that subject's failure, never 0.

:class:`VlmJudge` is the reusable part (the data pipeline's filter scores (reference, image) pairs
with it); :class:`VlmJudgeMetric` is the metric registered as ``vlm_judge``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from picbench.imaging import load_rgb
from picbench.metrics.base import Features, Metric, Unscorable
from picbench.paths import resolve_in_root

SCALE = 4
PROMPT = (
    "The first image shows a reference {class_word}. The second image is a generated image. "
    "How well does the second image preserve the identity of the reference {class_word} (shape, colours, texture, details)? "
    "Ignore background, pose and style. Grade on this scale: 0 very poor, 1 poor, 2 fair, 3 good, 4 excellent. "
    "Answer with one line: Score: N"
)
_GRADE = re.compile(r"score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


class JudgeAnswerError(ValueError):
    """The judge's answer holds no single grade in 0..SCALE."""


def parse_grade(answer: str) -> int:
    """The grade in an answer such as ``Score: 3`` (case, spacing and markdown bold tolerated;
    a repeated identical grade is one grade). Raises :class:`JudgeAnswerError` otherwise."""
    found = _GRADE.findall(answer or "")
    if not found:
        raise JudgeAnswerError(f"no 'Score: N' in the answer {answer[:120]!r}")
    if len(set(found)) > 1:
        raise JudgeAnswerError(f"several different grades {sorted(set(found))} in the answer {answer[:120]!r}")
    text = found[0]
    if "." in text and float(text) != int(float(text)):
        raise JudgeAnswerError(f"grade {text} is not a whole number")
    grade = int(float(text))
    if not 0 <= grade <= SCALE:
        raise JudgeAnswerError(f"grade {grade} is outside 0..{SCALE}")
    return grade


@dataclass(frozen=True)
class Judgement:
    score: float | None  # grade / SCALE, 0..1; None when the answer did not parse
    raw: str
    problem: str | None = None


class VlmJudge:
    """Qwen2.5-VL (transformers) grading identity preservation of (reference, image) pairs, greedy decoding."""

    def __init__(self, folder: str | Path, device: str = "cpu", *, max_new_tokens: int = 16) -> None:
        import torch
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        from picbench.metrics.weights import weights_sha256

        self.folder = Path(folder)
        self.device = torch.device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.folder, dtype=dtype).eval().to(self.device)
        self.processor = AutoProcessor.from_pretrained(self.folder)
        self.max_new_tokens = max_new_tokens
        self.weights_sha256 = weights_sha256(self.folder)
        self.forward_seconds = 0.0

    def ask(self, reference: Image.Image, image: Image.Image, class_word: str) -> str:
        """The model's raw answer for one pair."""
        import torch

        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": PROMPT.format(class_word=class_word)}],
            }
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[reference.convert("RGB"), image.convert("RGB")], return_tensors="pt").to(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        self.forward_seconds += time.perf_counter() - start
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]

    def judge(self, reference: Image.Image, image: Image.Image, class_word: str) -> Judgement:
        answer = self.ask(reference, image, class_word)
        try:
            return Judgement(parse_grade(answer) / SCALE, answer)
        except JudgeAnswerError as exc:
            return Judgement(None, answer, str(exc))

    def provenance(self) -> dict[str, Any]:
        return {
            "model": "qwen2_5_vl",
            "folder": str(self.folder),
            "weights_sha256": self.weights_sha256,
            "prompt": PROMPT,
            "scale": SCALE,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
        }


class VlmJudgeMetric(Metric):
    """Per subject: the judge's grade of the subject's target-box crop (the whole image where it has
    no box) against its first reference. Not computed by default: ask for it with ``vlm_judge``."""

    name = "vlm_judge"
    summary = "a VLM's 0-4 identity grade (normalized 0..1) of each subject's box crop vs its reference (Qwen2.5-VL)"
    headline = True
    needs = frozenset({"image"})
    identity = True
    per_subject = True
    default = False
    tiny_model = "vision-r1"  # the tiny random-weight Qwen2.5-VL of smoke runs

    judge: VlmJudge | None = None

    def model_folders(self, engine: Any) -> Mapping[str, Path]:
        return {"vlm_judge": engine.model_folder("vlm_judge", self.tiny_model)}

    def load(self, engine: Any) -> None:
        self.judge = VlmJudge(self.model_folders(engine)["vlm_judge"], engine.device)

    def subject_value(self, features: Features, subject: int) -> float | None:
        from picbench.metrics.boxes import to_pixels
        from picbench.metrics.decoding import crop_to_box

        if not features.uses_references or features.image is None or self.judge is None:
            return None
        sub = features.sample.subjects[subject]
        reference = load_rgb(resolve_in_root(features.data_root, sub.references[0]))
        image = crop_to_box(features.image, to_pixels(sub.box, *features.image.size)) if sub.box is not None else features.image
        judgement = self.judge.judge(reference, image, sub.class_word)
        if judgement.problem is not None:
            raise Unscorable(f"judge answer unparseable: {judgement.problem}")
        return judgement.score

    def provenance(self) -> dict[str, Any]:
        return self.judge.provenance() if self.judge is not None else {"prompt": PROMPT, "scale": SCALE}
