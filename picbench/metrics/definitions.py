"""What each metric name means: the entries of the METRICS registry (``picbench ls metrics``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    name: str
    summary: str
    needs: tuple[str, ...]  # model roles: "clip", "dino", "detector"
    identity: bool  # not applicable to methods given no references
    per_subject: bool


CLIP_I = MetricSpec("clip_i", "cosine of CLIP image embeddings, generated vs the subject's images (0..1 scale, mean)", ("clip",), True, True)
CLIP_T = MetricSpec("clip_t", "cosine of the generated image's and the prompt's CLIP embeddings (prompt truncated to 77 tokens)", ("clip",), False, False)
DINO = MetricSpec("dino", "cosine of DINO ViT-S/16 CLS embeddings, generated vs the subject's images", ("dino",), True, True)
CLIP_I_CROP = MetricSpec("clip_i_crop", "CLIP-I on the generated image cropped to the subject's target box (detected box where none)", ("clip",), True, True)
DINO_CROP = MetricSpec("dino_crop", "DINO on the generated image cropped to the subject's target box (detected box where none)", ("dino",), True, True)
IOU = MetricSpec("iou", "IoU of each subject's target box and its matched detection (0 when unmatched); mIoU over subjects", ("detector",), False, True)
AP = MetricSpec("ap", "COCO AP@[.50:.95] of detections vs target boxes over a run, class word = category (pycocotools); also ap50, ap75", ("detector",), False, False)

ALL = (CLIP_I, CLIP_T, DINO, CLIP_I_CROP, DINO_CROP, IOU, AP)
BY_NAME = {m.name: m for m in ALL}
