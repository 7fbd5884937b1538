"""Where the subjects are: IoU / mIoU of target boxes with their matched detections, and COCO AP
of the detections over a run (pycocotools; its bootstrap resamples by faster-coco-eval where installed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from picbench.metrics.base import Features, Metric, splits_present
from picbench.metrics.boxes import normalize_label, to_pixels
from picbench.metrics.coco import Backend, Detected, EvalImage, GroundTruth, average_precision, tie_order_key
from picbench.records import Sample, Score

AP_KEYS = ("ap", "ap50", "ap75")


def resample_backend() -> Backend:
    """The COCO evaluator of bootstrap resamples: faster-coco-eval when importable, else pycocotools."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster-coco-eval"


class IoU(Metric):
    """Each subject's IoU with the detection matched to it one-to-one per class word (Hungarian);
    unmatched = 0; None for a subject without a target box or an item without detector output."""

    name = "iou"
    summary = "IoU of each subject's target box and its matched detection (0 when unmatched); mIoU over subjects"
    headline = True
    needs = frozenset({"detector"})
    per_subject = True

    def subject_value(self, features: Features, subject: int) -> float | None:
        if features.sample.subjects[subject].box is None or features.detections is None:
            return None
        return features.matches.get(subject, (None, None))[1]


class AveragePrecision(Metric):
    """COCO AP@[.50:.95], AP50 and AP75 of every item's detections against its target boxes, the
    class word as category. Items without an IoU (failed, or no boxes) are left out. Images go to
    COCOeval sorted by :func:`~picbench.metrics.coco.tie_order_key` of (sample id, seed), each
    item's detections in the detector's order, so tied scores (Vision-R1's constant) give the same
    AP for the same items however a run was limited, sharded, resumed or merged."""

    name = "ap"
    summary = "COCO AP@[.50:.95] of detections vs target boxes over a run, class word = category (pycocotools); also ap50, ap75"
    needs = frozenset({"detector"})
    requires: ClassVar[tuple[str, ...]] = ("iou",)
    backend: Backend = "pycocotools"

    def keys(self) -> tuple[str, ...]:
        return ()  # a run-level metric: nothing per item

    def outputs(self) -> tuple[str, ...]:
        return AP_KEYS

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        return {}

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample], backend: str | None = None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        subsets = [("", list(scores))] + [
            (f".{sp}", [sc for sc in scores if sc.sample_id in samples and samples[sc.sample_id].split == sp])
            for sp in splits_present(scores, samples)
        ]
        for suffix, subset in subsets:
            stats = self._ap([sc for sc in subset if sc.sample_id in samples], samples, backend or self.backend)
            for key in AP_KEYS:
                out[f"{key}{suffix}"] = stats.get(key)
        return out

    def bootstrap_statistic(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> Mapping[str, float | None]:
        """Resamples are evaluated by faster-coco-eval (a core dependency), equal to pycocotools
        (tests/test_metrics_coco.py) and faster (docs/benchmarks.md); by pycocotools where it is
        missing, so the interval is always computed. The point estimate stays pycocotools'."""
        return self.aggregate(scores, samples, backend=resample_backend())

    def _ap(self, scores: Sequence[Score], samples: Mapping[str, Sample], backend: str) -> dict[str, float]:
        images = sorted(eval_images(scores, samples), key=lambda im: tie_order_key(*im.key))
        return average_precision(images, backend) if images else {}  # type: ignore[arg-type]

    def provenance(self) -> dict[str, str]:
        return {"backend": self.backend}


def eval_images(scores: Sequence[Score], samples: Mapping[str, Sample]) -> list[EvalImage]:
    """One COCO image per scored item with boxes (keyed by (sample id, seed)), in the order given:
    its subjects' target boxes as ground truth, its stored detections in the detector's order. Items
    without an IoU (no detector output, or no layout) are left out."""
    images = []
    for sc in scores:
        sample = samples[sc.sample_id]
        if not sample.has_layout or sc.metrics.get("iou") is None:
            continue
        w, h = sample.width, sample.height
        truths = [GroundTruth(to_pixels(sub.box, w, h), normalize_label(sub.class_word)) for sub in sample.subjects]
        dets = [Detected(to_pixels(d["box_norm"], w, h), normalize_label(d["label"]), float(d["score"])) for d in sc.detections]
        images.append(EvalImage((sc.sample_id, sc.seed), w, h, truths, dets))
    return images
