"""Subject presence and duplication ("concept confusion"): is each subject detected exactly once,
not at all, or more than once?

A subject is counted only where its class word is unique in the sample (two dogs in one prompt
cannot be told apart by a detector). Its detections are the detector's confident ones (those the
detector keeps at its own threshold) with that class word, after greedy non-maximum suppression at
IoU >= ``NMS_IOU`` (detectors often return the same object twice with near-identical boxes, which
is not a duplicate). 0 detections = missing, 1 = present once, 2 or more = duplicated; an item's
values are the rates over its counted subjects. An item whose detector failed or answered
unparseably scores None, never 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from picbench.metrics.base import Features, Metric
from picbench.metrics.boxes import iou, normalize_label

NMS_IOU = 0.5
KEYS = ("present_once", "missing", "duplicated")


def count_instances(boxes_scores: Sequence[tuple[Sequence[float], float]], nms_iou: float = NMS_IOU) -> int:
    """How many distinct objects a list of (box, score) of one class shows, after greedy NMS."""
    kept: list[Sequence[float]] = []
    for box, _ in sorted(boxes_scores, key=lambda bs: -bs[1]):
        if all(iou(box, other) < nms_iou for other in kept):
            kept.append(box)
    return len(kept)


class SubjectPresence(Metric):
    name = "presence"
    summary = "rates of subjects detected exactly once (present_once), never (missing) or more than once (duplicated)"
    needs = frozenset({"detector"})

    def keys(self) -> tuple[str, ...]:
        return KEYS

    def direction(self, key: str) -> bool:
        return key.split(".", 1)[0] == "present_once"

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        output = features.detections
        classes = [normalize_label(s.class_word) for s in features.sample.subjects]
        counted = [c for c in classes if classes.count(c) == 1]
        if output is None or output.failed or not counted:
            return dict.fromkeys(KEYS)
        counts = [count_instances([(d.box, d.score) for d in output.detections if normalize_label(d.label) == c]) for c in counted]
        n = len(counts)
        return {
            "present_once": sum(k == 1 for k in counts) / n,
            "missing": sum(k == 0 for k in counts) / n,
            "duplicated": sum(k > 1 for k in counts) / n,
        }

    def provenance(self) -> dict[str, object]:
        return {"nms_iou": NMS_IOU, "counted": "subjects whose class word is unique in the sample"}
