"""The metric engine: CLIP-I, CLIP-T, DINO, detected boxes, IoU/mIoU and COCO AP."""

from __future__ import annotations

from picbench.registry import Registry

METRICS: Registry[object] = Registry("metric", entry_point_group="picbench.metrics")
