"""Embedding similarities: CLIP-I, DINO and their box-crop variants (identity), and CLIP-T (prompt).

Conventions (pinned in tests/test_metrics_engine.py): cosine of L2-normalized embeddings on a 0..1
scale, no x100, no clamping; identity averages over the subject's eval images, then subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from picbench.metrics.base import Features, Metric, Unscorable


class _Identity(Metric):
    """Cosine of the generated image's (or the subject's box crop's) embedding with the subject's eval images."""

    role: ClassVar[str] = ""
    crop: ClassVar[bool] = False
    identity = True
    per_subject = True

    def subject_value(self, features: Features, subject: int) -> float | None:
        if not features.uses_references:
            return None
        if self.crop:
            embedding = features.subject_crops.get((subject, self.role))
            if embedding is None:
                raise Unscorable("no target or detected box to crop", failure=False)
        else:
            embedding = features.embeddings.get(self.role)
        return features.identity_to(embedding, subject, self.role)


class ClipI(_Identity):
    name, role = "clip_i", "clip"
    summary = "cosine of CLIP image embeddings, generated vs the subject's images (0..1 scale, mean)"
    headline = True
    needs = frozenset({"clip", "references"})


class Dino(_Identity):
    name, role = "dino", "dino"
    summary = "cosine of DINO ViT-S/16 CLS embeddings, generated vs the subject's images"
    headline = True
    needs = frozenset({"dino", "references"})


class ClipICrop(_Identity):
    name, role, crop = "clip_i_crop", "clip", True
    summary = "CLIP-I on the generated image cropped to the subject's target box (detected box where none)"
    needs = frozenset({"clip", "references", "crops"})


class DinoCrop(_Identity):
    name, role, crop = "dino_crop", "dino", True
    summary = "DINO on the generated image cropped to the subject's target box (detected box where none)"
    needs = frozenset({"dino", "references", "crops"})


class ClipT(Metric):
    name = "clip_t"
    summary = "cosine of the generated image's and the prompt's CLIP embeddings (prompt truncated to 77 tokens)"
    headline = True
    needs = frozenset({"clip", "text"})

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        image = features.embeddings.get("clip")
        return {self.name: float(image @ features.prompt) if image is not None and features.prompt is not None else None}
