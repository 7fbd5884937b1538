"""COCO-style AP of detections against target boxes, computed by pycocotools (the reference).

We only convert our records into COCO form (class word = category, one COCO image per scored
image) and hand them to COCOeval; faster-coco-eval is an optional backend that must agree.

Order matters when scores tie. COCOeval ranks all detections of a category by score with a stable
sort, so tied detections keep the order of their images' ids (and, within one image, the order they
were given in); where true and false positives share a score, that order moves AP, by up to about
0.02 at PositionIC-Bench size. Vision-R1 gives every box the same score, so every tie is real there.
Callers that want an AP that does not depend on how items happen to be listed give the images in
:func:`tie_order_key` order, a function of each item's (sample id, seed) alone: the same items give
the same AP whatever ``--limit``, ``--shard``, resume or merge order produced their list.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Backend = Literal["pycocotools", "faster-coco-eval"]
STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


@dataclass(frozen=True)
class GroundTruth:
    box: tuple[float, float, float, float]  # pixel xyxy
    category: str
    iscrowd: bool = False
    area: float | None = None  # default: box area (COCO's own files carry mask areas)


@dataclass(frozen=True)
class Detected:
    box: tuple[float, float, float, float]  # pixel xyxy
    category: str
    score: float


@dataclass(frozen=True)
class EvalImage:
    key: object
    width: int
    height: int
    truths: Sequence[GroundTruth] = field(default_factory=tuple)
    detections: Sequence[Detected] = field(default_factory=tuple)


def tie_order_key(sample_id: str, seed: int) -> str:
    """Where an item's image goes in the list handed to COCOeval: the SHA-256 of
    ``"<sample id>\\0<seed>"`` in hex. It depends on the item alone, not on its position in a bench,
    a shard or a store, and it spreads a bench's samples (often grouped by subject) evenly."""
    return hashlib.sha256(f"{sample_id}\0{seed}".encode()).hexdigest()


def _xywh(box: Sequence[float]) -> list[float]:
    """xyxy -> COCO xywh. Width and height are rounded to 1e-9 px so that boxes read from COCO
    files (xywh -> xyxy -> xywh) come back bit-identical and pycocotools sees the same numbers."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, round(x1 - x0, 9), round(y1 - y0, 9)]


def to_coco(images: Sequence[EvalImage], categories: Sequence[str] | None = None) -> tuple[dict, list[dict]]:
    """(ground-truth dataset dict, detection result list) in COCO form. Image ids follow the given
    order, and with tied scores that order changes AP (see the module docstring: give images in
    :func:`tie_order_key` order); category ids follow ``categories`` (default: sorted names), an
    order that matters only to the last bit (COCOeval averages over categories in id order)."""
    used = {g.category for im in images for g in im.truths} | {d.category for im in images for d in im.detections}
    names = list(categories) if categories is not None else sorted(used)
    if used - set(names):
        raise ValueError(f"categories {sorted(used - set(names))} are used but not listed")
    cat_id = {name: i + 1 for i, name in enumerate(names)}
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": cat_id[n], "name": n} for n in names]}
    dets: list[dict] = []
    for img_id, im in enumerate(images, start=1):
        gt["images"].append({"id": img_id, "width": im.width, "height": im.height})
        for g in im.truths:
            bbox = _xywh(g.box)
            w, h = bbox[2], bbox[3]
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": img_id,
                    "category_id": cat_id[g.category],
                    "bbox": bbox,
                    "area": float(g.area if g.area is not None else w * h),
                    "iscrowd": int(g.iscrowd),
                }
            )
        for d in im.detections:
            dets.append({"image_id": img_id, "category_id": cat_id[d.category], "bbox": _xywh(d.box), "score": float(d.score)})
    return gt, dets


def coco_stats(gt: dict, dets: list[dict], backend: Backend = "pycocotools") -> dict[str, float]:
    """COCOeval's twelve bbox summary numbers, by name. No ground truth -> empty dict (AP does not
    apply); ground truth but no detection -> every AP is 0."""
    if not gt["annotations"]:
        return {}
    if not dets:
        return {name: 0.0 for name in STAT_NAMES}
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif backend == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        raise ValueError(f"unknown AP backend {backend!r} (use 'pycocotools' or 'faster-coco-eval')")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where a stat has no ground truth (e.g. no small objects): not applicable.
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats) if v >= 0}


def average_precision(
    images: Sequence[EvalImage], backend: Backend = "pycocotools", categories: Sequence[str] | None = None
) -> dict[str, float]:
    gt, dets = to_coco(images, categories)
    return coco_stats(gt, dets, backend)
