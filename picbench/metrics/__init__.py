"""The metric engine: CLIP-I, CLIP-T, DINO, detected boxes, IoU/mIoU and COCO AP."""

from __future__ import annotations

from picbench.registry import Registry

METRICS: Registry[object] = Registry("metric", entry_point_group="picbench.metrics")

METRICS.register("clip_i", "picbench.metrics.definitions:CLIP_I", "CLIP image-image similarity (identity), 0..1")
METRICS.register("clip_t", "picbench.metrics.definitions:CLIP_T", "CLIP image-prompt similarity, 0..1")
METRICS.register("dino", "picbench.metrics.definitions:DINO", "DINO ViT-S/16 image-image similarity (identity), 0..1")
METRICS.register("clip_i_crop", "picbench.metrics.definitions:CLIP_I_CROP", "CLIP-I on the subject's box crop")
METRICS.register("dino_crop", "picbench.metrics.definitions:DINO_CROP", "DINO on the subject's box crop")
METRICS.register("iou", "picbench.metrics.definitions:IOU", "IoU of target box and matched detection; single IoU / multi mIoU")
METRICS.register("ap", "picbench.metrics.definitions:AP", "COCO AP@[.50:.95], AP50, AP75 via pycocotools")
