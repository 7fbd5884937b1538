"""The metric engine and its metrics: each metric is a :class:`picbench.metrics.base.Metric`
subclass registered in ``METRICS``; other packages add metrics through the ``picbench.metrics``
entry-point group. The order of registration is the order of the columns of reports and
leaderboards (:func:`output_keys`)."""

from __future__ import annotations

import functools
import logging

from picbench.metrics.base import Metric
from picbench.registry import Registry

METRICS: Registry[type[Metric]] = Registry("metric", entry_point_group="picbench.metrics", base=Metric)

METRICS.register("clip_i", "picbench.metrics.similarity:ClipI", "CLIP image-image similarity (identity), 0..1")
METRICS.register("clip_t", "picbench.metrics.similarity:ClipT", "CLIP image-prompt similarity, 0..1")
METRICS.register("dino", "picbench.metrics.similarity:Dino", "DINO ViT-S/16 image-image similarity (identity), 0..1")
METRICS.register("clip_i_crop", "picbench.metrics.similarity:ClipICrop", "CLIP-I on the subject's box crop")
METRICS.register("dino_crop", "picbench.metrics.similarity:DinoCrop", "DINO on the subject's box crop")
METRICS.register(
    "vlm_judge",
    "picbench.metrics.vlm_judge:VlmJudgeMetric",
    "a VLM's 0-4 identity grade of each subject's box crop vs its reference (Qwen2.5-VL)",
)
METRICS.register("iou", "picbench.metrics.layout:IoU", "IoU of target box and matched detection; single IoU / multi mIoU")
METRICS.register("ap", "picbench.metrics.layout:AveragePrecision", "COCO AP@[.50:.95], AP50, AP75 via pycocotools")
METRICS.register(
    "occlusion_order", "picbench.metrics.occlusion:OcclusionOrder", "is the front subject the one seen where boxes overlap (DINO)"
)
METRICS.register("presence", "picbench.metrics.presence:SubjectPresence", "subjects detected once / missing / duplicated (rates)")

ALIASES = {"ap50": "ap", "ap75": "ap"}
"""Keys another metric computes: asking for one selects that metric."""


def _loaded_in_order() -> list[type[Metric]]:
    """Every registered metric class in registration order; a plug-in that cannot be loaded is left
    out with a warning (its keys then sort after the known ones, like any key picbench does not know)."""
    found = []
    for name in METRICS.names(registration_order=True):
        try:
            found.append(METRICS.get(name))
        except Exception as exc:  # a broken third-party entry point must not stop a report
            logging.getLogger(__name__).warning("metric %s is left out of the column order: %s: %s", name, type(exc).__name__, exc)
    return found


@functools.cache
def output_keys() -> tuple[str, ...]:
    """Every registered metric's output keys (its aggregate's base keys), in registration order:
    the order of the metric columns of the report and the leaderboard."""
    return tuple(dict.fromkeys(k for metric in _loaded_in_order() for k in metric().outputs()))


@functools.cache
def headline_keys() -> tuple[str, ...]:
    """The per-item values (counts aside) of the metrics marked ``headline``, in registration order:
    what the report shows beside each image."""
    return tuple(dict.fromkeys(k for metric in _loaded_in_order() if metric.headline for k in metric().keys() if not k.startswith("n_")))
