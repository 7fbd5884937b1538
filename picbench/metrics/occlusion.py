"""Occlusion-order accuracy: where two subjects' target boxes overlap and their depth ranks differ,
is the front subject the one seen in the overlap?

Definition: for each such pair, the generated image is cropped to the intersection of the two
target boxes and embedded with DINO (the identity encoder of the DreamBooth protocol); the crop's
mean cosine with the front subject's eval images is compared with its mean cosine with the back
subject's. Front more similar = correct. An item's value is the fraction of its pairs that are
correct; ``n_occlusion_pairs`` counts the pairs scored. A sample with no such pair scores None (not
applicable, never 0); so does every single-subject sample.

Limits: it measures which identity dominates the overlap, not depth itself: two subjects that look
alike (same class and colours) make it a coin toss, and a method that drops the front subject and
draws background there scores by whichever identity the background happens to resemble. An
overlap smaller than ``MIN_SIDE_PX`` on either side is too small to crop: recorded, None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from picbench.layouts import intersection
from picbench.metrics.base import Features, Metric, Unscorable, mean
from picbench.records import BoxXYXY, Sample

MIN_SIDE_PX = 8
ROLE = "dino"


def overlapping_pairs(sample: Sample) -> list[tuple[int, int, BoxXYXY]]:
    """(front subject, back subject, normalized intersection box) for every pair of boxed subjects
    with different depth ranks whose boxes overlap with a positive area."""
    pairs = []
    subs = sample.subjects
    for a in range(len(subs)):
        for b in range(a + 1, len(subs)):
            sa, sb = subs[a], subs[b]
            if sa.box is None or sb.box is None or sa.depth is None or sb.depth is None or sa.depth == sb.depth:
                continue
            box = intersection(sa.box, sb.box)
            if box is not None:
                front, back = (a, b) if sa.depth < sb.depth else (b, a)
                pairs.append((front, back, box))
    return pairs


def region_key(front: int, back: int) -> str:
    return f"overlap:{front}:{back}"


class OcclusionOrder(Metric):
    name = "occlusion_order"
    summary = "fraction of overlapping subject pairs whose overlap looks more like the front subject (DINO); n_occlusion_pairs counts them"
    headline = True
    needs = frozenset({ROLE, "references"})
    identity = True

    def keys(self) -> tuple[str, ...]:
        return (self.name, "n_occlusion_pairs")

    def regions(self, sample: Sample) -> Mapping[str, BoxXYXY]:
        return {region_key(f, b): box for f, b, box in overlapping_pairs(sample) if _big_enough(box, sample)}

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        pairs = overlapping_pairs(features.sample)
        if not features.uses_references or not pairs:
            return {self.name: None, "n_occlusion_pairs": None}
        correct = []
        for front, back, _box in pairs:
            crop = features.regions.get((region_key(front, back), ROLE))
            s_front, s_back = features.identity_to(crop, front, ROLE), features.identity_to(crop, back, ROLE)
            if s_front is not None and s_back is not None:
                correct.append(1.0 if s_front > s_back else 0.0)
        if not correct:
            small = [
                f"{features.sample.subjects[f].name}/{features.sample.subjects[b].name}"
                for f, b, box in pairs
                if not _big_enough(box, features.sample)
            ]
            why = (
                f"overlap too small to crop (< {MIN_SIDE_PX} px): {', '.join(small)}"
                if small
                else "no eval image of an overlapping subject could be read"
            )
            raise Unscorable(why)
        return {self.name: mean(correct), "n_occlusion_pairs": float(len(correct))}

    def provenance(self) -> dict[str, object]:
        return {"encoder": ROLE, "min_side_px": MIN_SIDE_PX, "rule": "overlap crop closer (mean cosine) to the front subject's eval images"}


def _big_enough(box: BoxXYXY, sample: Sample) -> bool:
    return (box[2] - box[0]) * sample.width >= MIN_SIDE_PX and (box[3] - box[1]) * sample.height >= MIN_SIDE_PX
