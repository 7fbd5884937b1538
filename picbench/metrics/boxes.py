"""Box geometry and the one-to-one matching of subjects to detections.

Convention (docs/metrics.md, "Metric conventions"): each subject is matched to one detection of its class word; where a class
repeats, the assignment maximizes total IoU (Hungarian); an unmatched subject scores IoU 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from picbench.layouts import area, intersection

Box = tuple[float, float, float, float]


def box_problem(box: Sequence[float]) -> str | None:
    """Why a pixel xyxy box is unusable (None when it is fine)."""
    if len(box) != 4:
        return f"box needs 4 numbers, got {len(box)}"
    if not all(math.isfinite(float(v)) for v in box):
        return f"box {list(box)} has NaN or infinite values"
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        return f"box {list(box)} is inverted"
    if x1 == x0 or y1 == y0:
        return f"box {list(box)} has zero area"
    return None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when either is empty)."""
    inter = area(intersection(a, b))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy arrays."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def to_pixels(box: Sequence[float], width: int, height: int) -> Box:
    """Normalized xyxy -> pixel xyxy for an image of the given size."""
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def normalize_label(label: str) -> str:
    return " ".join(str(label).lower().split())


def match_subjects(
    targets: Sequence[Box], classes: Sequence[str], det_boxes: Sequence[Box], det_labels: Sequence[str]
) -> list[tuple[int | None, float]]:
    """For each subject: (index of its matched detection or None, IoU); one detection per subject."""
    result: list[tuple[int | None, float]] = [(None, 0.0)] * len(targets)
    wanted = [normalize_label(c) for c in classes]
    have = [normalize_label(lbl) for lbl in det_labels]
    for cls in dict.fromkeys(wanted):
        subj_idx = [i for i, c in enumerate(wanted) if c == cls]
        det_idx = [j for j, c in enumerate(have) if c == cls]
        if not det_idx:
            continue
        ious = iou_matrix(np.array([targets[i] for i in subj_idx]), np.array([det_boxes[j] for j in det_idx]))
        rows, cols = linear_sum_assignment(ious, maximize=True)
        for r, c in zip(rows, cols):
            result[subj_idx[r]] = (det_idx[c], float(ious[r, c]))
    return result
