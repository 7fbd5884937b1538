"""A metric is one object: what it needs from the engine, a per-item (and optionally per-subject)
function over the item's shared :class:`Features`, an aggregate, and its direction.

The engine computes the features once per item (whole-image and box-crop embeddings, the
references' embeddings, the prompt's, detections and their subject matches, extra regions a metric
asks for) and hands the same :class:`Features` to every metric; it never names a metric. Third-party
packages add metrics through the ``picbench.metrics`` entry-point group: the entry point names a
:class:`Metric` subclass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from picbench.records import BoxXYXY, Sample, Score

if TYPE_CHECKING:
    from PIL import Image

    from picbench.metrics.detectors.base import DetectorOutput
    from picbench.metrics.engine import MetricEngine

SPLITS = ("single", "multi")

NEEDS = frozenset({"clip", "dino", "text", "references", "detector", "crops", "image"})
"""What a metric may ask for: the CLIP / DINO image embeddings, the prompt's CLIP embedding, the
eval images' embeddings, detections with their subject matches, subject box crops (target box,
else the matched detection) and the decoded image itself (kept in memory only when asked for)."""


class Unscorable(Exception):
    """Raised by a metric for an item or subject it cannot score: the value becomes None and the
    reason is recorded. ``failure=False`` records the reason on the subject only, without counting
    the item as failed (e.g. a crop metric on a subject that has no box)."""

    def __init__(self, reason: str, *, failure: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.failure = reason, failure


@dataclass
class Features:
    """The shared features of one scored item, computed once by the engine for every metric.

    Embeddings are L2-normalized float32 vectors keyed by encoder role ("clip", "dino").
    ``references[(s, role)]`` holds the embeddings of subject ``s``'s readable identity images (its
    eval images, or under the ``references`` protocol the references it was given);
    ``matches[s]`` is (index into ``detections.detections`` or None, IoU with the target box or None).
    """

    sample: Sample
    seed: int
    uses_references: bool  # False for a method given no references: identity metrics do not apply
    size: tuple[int, int]
    data_root: Path
    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)
    subject_crops: Mapping[tuple[int, str], np.ndarray] = field(default_factory=dict)
    regions: Mapping[tuple[str, str], np.ndarray] = field(default_factory=dict)
    references: Mapping[tuple[int, str], tuple[np.ndarray, ...]] = field(default_factory=dict)
    prompt: np.ndarray | None = None
    detections: DetectorOutput | None = None
    matches: Mapping[int, tuple[int | None, float | None]] = field(default_factory=dict)
    image: Image.Image | None = None

    def identity_to(self, embedding: np.ndarray | None, subject: int, role: str) -> float | None:
        """Mean cosine of ``embedding`` with subject ``subject``'s identity images (None where either is missing)."""
        vectors = self.references.get((subject, role), ())
        if embedding is None or not vectors:
            return None
        return float(np.mean([float(embedding @ v) for v in vectors]))


class Metric:
    """Subclass and set the class attributes; override :meth:`subject_value` (``per_subject``) or
    :meth:`item`, and :meth:`aggregate` where a mean over items is not the aggregate (COCO AP)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    identity: ClassVar[bool] = False  # scores identity against references: None for methods given none
    per_subject: ClassVar[bool] = False  # item value = mean over subjects of subject_value
    higher_is_better: ClassVar[bool] = True
    default: ClassVar[bool] = True  # computed when no metric list is given (if its needs can be met)
    headline: ClassVar[bool] = False  # its per-item values are shown beside each image in the report

    def keys(self) -> tuple[str, ...]:
        """The per-item value keys this metric writes into a Score (keys starting ``n_`` are counts)."""
        return (self.name,)

    def outputs(self) -> tuple[str, ...]:
        """The base keys of this metric's aggregate (its item keys, counts aside)."""
        return tuple(k for k in self.keys() if not k.startswith("n_"))

    def direction(self, key: str) -> bool:
        """True where a larger value of ``key`` is better."""
        return self.higher_is_better

    def regions(self, sample: Sample) -> Mapping[str, BoxXYXY]:
        """Extra normalized boxes whose crops the engine embeds with every encoder (``Features.regions``)."""
        return {}

    def subject_value(self, features: Features, subject: int) -> float | None:
        raise NotImplementedError(f"metric {self.name} is per_subject but defines no subject_value")

    def item(self, features: Features, subjects: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
        """The item's values; ``subjects`` holds each subject's per-subject values (every metric's)."""
        if not self.per_subject:
            raise NotImplementedError(f"metric {self.name} defines neither item nor subject_value")
        return {self.name: mean(sub.get(self.name) for sub in subjects)}

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | None]:
        """Mean of each key over items that have it, overall and per split present; counts (``n_``) summed."""
        out: dict[str, float | None] = {}
        for key in self.keys():
            reduce = total if key.startswith("n_") else mean
            out[key] = reduce(sc.metrics.get(key) for sc in scores)
            for split in splits_present(scores, samples):
                out[f"{key}.{split}"] = reduce(sc.metrics.get(key) for sc in scores if _split(samples, sc) == split)
        return out

    def bootstrap_statistic(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> Mapping[str, float | None]:
        """What a bootstrap resample recomputes when this metric's aggregate is not a mean: the
        aggregate itself, unless a faster equal computation exists (COCO AP)."""
        return self.aggregate(scores, samples)

    def provenance(self) -> dict[str, Any]:
        """What a reader needs to know about how this metric was computed (models, prompts)."""
        return {}

    def model_folders(self, engine: MetricEngine) -> Mapping[str, Path]:
        """role -> local folder of each model this metric loads itself (their hashes key the scores)."""
        return {}

    def load(self, engine: MetricEngine) -> None:
        """Build this metric's own models (called once, when the engine builds its models)."""


def mean(values: Any) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


def total(values: Any) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(sum(kept)) if kept else None


def splits_present(scores: Sequence[Score], samples: Mapping[str, Sample]) -> list[str]:
    return [sp for sp in SPLITS if any(_split(samples, sc) == sp for sc in scores)]


def _split(samples: Mapping[str, Sample], score: Score) -> str | None:
    sample = samples.get(score.sample_id)
    return sample.split if sample is not None else None


def check_value(metric: str, key: str, value: Any) -> float | None:
    """A metric's value as a float or None; a NaN, infinity or a non-number is refused, naming the metric."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"metric {metric} returned {type(value).__name__} for {key!r}, not a number")
    if not math.isfinite(float(value)):
        raise ValueError(f"metric {metric} returned {value!r} for {key!r}, not a finite number")
    return float(value)
