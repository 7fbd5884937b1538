"""The metric engine and its metrics: each metric is a :class:`picbench.metrics.base.Metric`
subclass registered in ``METRICS``; other packages add metrics through the ``picbench.metrics``
entry-point group."""

from __future__ import annotations

from picbench.metrics.base import Metric
from picbench.registry import Registry

METRICS: Registry[type[Metric]] = Registry("metric", entry_point_group="picbench.metrics", base=Metric)

METRICS.register("clip_i", "picbench.metrics.similarity:ClipI", "CLIP image-image similarity (identity), 0..1")
METRICS.register("clip_t", "picbench.metrics.similarity:ClipT", "CLIP image-prompt similarity, 0..1")
METRICS.register("dino", "picbench.metrics.similarity:Dino", "DINO ViT-S/16 image-image similarity (identity), 0..1")
METRICS.register("clip_i_crop", "picbench.metrics.similarity:ClipICrop", "CLIP-I on the subject's box crop")
METRICS.register("dino_crop", "picbench.metrics.similarity:DinoCrop", "DINO on the subject's box crop")
METRICS.register("iou", "picbench.metrics.layout:IoU", "IoU of target box and matched detection; single IoU / multi mIoU")
METRICS.register("ap", "picbench.metrics.layout:AveragePrecision", "COCO AP@[.50:.95], AP50, AP75 via pycocotools")
METRICS.register(
    "occlusion_order", "picbench.metrics.occlusion:OcclusionOrder", "is the front subject the one seen where boxes overlap (DINO)"
)
METRICS.register("presence", "picbench.metrics.presence:SubjectPresence", "subjects detected once / missing / duplicated (rates)")
METRICS.register(
    "vlm_judge",
    "picbench.metrics.vlm_judge:VlmJudgeMetric",
    "a VLM's 0-4 identity grade of each subject's box crop vs its reference (Qwen2.5-VL)",
)

ALIASES = {"ap50": "ap", "ap75": "ap"}
"""Keys another metric computes: asking for one selects that metric."""
