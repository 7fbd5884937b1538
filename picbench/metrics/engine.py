"""The metric engine: computes each item's shared features once and hands them to every selected
:class:`~picbench.metrics.base.Metric`. It never names a metric: what it computes follows from the
metrics' ``needs``. This module wires the steps together; each step has its own module:

- :mod:`~picbench.metrics.selection`: which metrics, under which identity sets, writing which keys;
- :mod:`~picbench.metrics.models`: where the models' weights are, and loading them;
- :mod:`~picbench.metrics.decoding`: each image decoded once and preprocessed for every model;
- :mod:`~picbench.metrics.scheduling`: batched forward passes on CPU workers, cached reference and
  prompt embeddings;
- :mod:`~picbench.metrics.features`: a batch's shared features; :mod:`~picbench.metrics.item_scores`:
  one item's Score from them; :mod:`~picbench.metrics.aggregation`: aggregates and intervals.

Models are built on first use, so a rerun with nothing left to score builds none. Memory is bounded
by the batch: images are never all held.
Robustness: a per-item problem (no image, unreadable, non-finite or blank image, a detector answer
that does not parse, boxes that are empty or inverted, no detections, a metric that raises or
returns NaN or a non-number) becomes a failure reason in that item's Score naming its cause; the
run and the other metrics go on.
Identity sets: one pass can score identity against several image sets of a subject
(``identity_sets``: ``default`` = its eval images, ``references`` = the images the method was
given); the reference embeddings are computed once for their union, the first set gives the plain
metric keys and every other set adds ``KEY@SET`` keys (:func:`picbench.protocols.metric_key`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from picbench.errors import PicbenchError, UnknownNameError
from picbench.metrics import aggregation
from picbench.metrics.base import Metric
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.decoding import DecodedItem, GeneratedImages, ScoreItem
from picbench.metrics.detectors import DETECTORS, Detector
from picbench.metrics.encoders import ClipEncoder, Encoder
from picbench.metrics.features import batch_features
from picbench.metrics.item_scores import score_item, unscored
from picbench.metrics.models import ENCODER_ROLES, MetricModels
from picbench.metrics.scheduling import Scheduler
from picbench.metrics.selection import MetricSelection, check_identity_sets, select_metrics
from picbench.metrics.weights import weights_sha256
from picbench.paths import resolve_in_root
from picbench.protocols import check_precision
from picbench.records import BoxXYXY, Sample, Score

CONVENTIONS = (
    "cosine of L2-normalized embeddings on a 0..1 scale, no x100, no clamping; identity metrics average over the "
    "subject's identity images (its eval images, or under the references protocol the references it was given), then "
    "subjects; IoU: one-to-one matching per class word (Hungarian), unmatched = 0; an item whose detector output failed "
    "(raised, or an answer that does not parse) has no detections, so its subjects count as IoU 0 in the means and AP, "
    "and it is counted in n_failures; items without an image (a failed or unreadable generation) have no values and are "
    "left out of the means, counted in n_failures"
)


class MetricEngine:
    """Scores items against their samples; see the module docstring for what it guarantees."""

    def __init__(
        self,
        *,
        models: Literal["default", "tiny"] = "default",
        device: str = "cpu",
        metrics: Sequence[str] | None = None,
        detector: str | None = "grounding-dino",
        weights: Mapping[str, str | Path] | None = None,
        weights_dir: str | Path | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        clip_arch: str = "ViT-B-32",
        precision: str = "fp32",
        identity_sets: Sequence[str] = ("default",),
    ) -> None:
        if models not in ("default", "tiny"):
            raise PicbenchError(f"models must be 'default' or 'tiny', got {models!r}")
        if detector is not None and detector not in DETECTORS:
            raise UnknownNameError(DETECTORS.suggest(detector) + ", or None for no box metrics")
        self.models, self.device, self.detector_name, self.clip_arch = models, device, detector, clip_arch
        self.smoke = models == "tiny"
        self.precision = check_precision(precision)
        self.identity_sets = check_identity_sets(identity_sets)
        self.weights = dict(weights or {})
        self.weights_dir = weights_dir  # the weights folder (DIR/<hub id>); None: $PICBENCH_WEIGHTS_DIR
        self.metrics = select_metrics(metrics, detector)
        self.selection = MetricSelection(self.metrics, self.identity_sets)
        self.needs = self.selection.needs
        self.batch_size, self.num_workers = max(1, batch_size), num_workers
        self.cache = cache
        self.roles = tuple(r for r in ENCODER_ROLES if r in self.needs or (r == "clip" and "text" in self.needs))
        self.uses_detector = detector is not None and bool({"detector", "crops"} & self.needs)
        self.model_set = MetricModels(
            smoke=self.smoke,
            device=device,
            roles=self.roles,
            detector=detector if self.uses_detector else None,
            weights=self.weights,
            weights_dir=weights_dir,
            clip_arch=clip_arch,
            precision=self.precision,
        )
        self.folders = self.model_set.folders
        # the metrics' own models (vlm_judge's judge) are found now, like the encoders': missing
        # weights stop a run before it generates anything
        self.metric_folders = {role: folder for m in self.metrics for role, folder in m.model_folders(self).items()}
        own_models = self.uses_detector or any(type(m).load is not Metric.load for m in self.metrics)
        self.scheduler = Scheduler(
            device=device,
            batch_size=self.batch_size,
            num_workers=num_workers,
            n_encoders=len(self.roles),
            own_models=own_models,
            cache=cache,
        )
        self._encoders: dict[str, Encoder] | None = None
        self._detector: Detector | None = None
        self._fingerprint: dict[str, Any] | None = None

    # -- models ---------------------------------------------------------------------------------

    def model_folder(self, role: str, tiny: str) -> Path:
        """For metrics with models of their own (``Metric.load``): ``--weights ROLE=DIR``, the
        tiny model ``tiny`` of a smoke run, else the hub id registered for ``role``."""
        return self.model_set.model_folder(role, tiny)

    def _build(self) -> None:
        """Build every model the metrics need, once, on first use."""
        if self._encoders is not None:
            return
        encoders, self._detector = self.model_set.load()
        for metric in self.metrics:
            metric.load(self)
        self._encoders = encoders

    @property
    def clip(self) -> ClipEncoder | None:
        self._build()
        return self._encoders.get("clip")  # type: ignore[union-attr, return-value]

    @property
    def dino(self) -> Encoder | None:
        self._build()
        return self._encoders.get("dino")  # type: ignore[union-attr]

    @property
    def detector(self) -> Detector | None:
        self._build()
        return self._detector

    @property
    def built(self) -> bool:
        return self._encoders is not None

    def encoders(self) -> dict[str, Encoder]:
        self._build()
        return dict(self._encoders or {})

    # -- what the engine writes, and what decides it ----------------------------------------------

    def item_keys(self) -> list[str]:
        return self.selection.item_keys()

    def directions(self) -> dict[str, bool]:
        """Base metric key -> True where higher is better, for every aggregate this engine writes."""
        return self.selection.directions()

    def fingerprint(self) -> dict[str, Any]:
        """What decides the scores, known without building a model: the metrics (and their
        classes), the detector and the weights' hashes (computed once: hashing checkpoints takes
        seconds). Scores are reused only under one fingerprint."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> dict[str, Any]:
        # the keys are part of stored cache keys (scores, intervals, provenance): renaming one rescores every run
        return {
            "smoke": self.smoke,
            "models": self.models,
            "detector": self.detector_name if self.uses_detector else None,
            "detector_queries": DETECTORS.get(self.detector_name).query_settings() if self.uses_detector else None,  # type: ignore[arg-type]
            "metrics": {m.name: f"{type(m).__module__}:{type(m).__qualname__}" for m in self.metrics},
            "weights": {role: weights_sha256(folder) if folder is not None else None for role, folder in sorted(self.folders.items())},
            "metric_models": {role: weights_sha256(folder) for role, folder in self.metric_folders.items()},
            "clip_arch": self.clip_arch,
            "clip_openai": self.model_set.clip_is_openai() if "clip" in self.roles else None,
            "precision": self.precision,
            "identity_sets": list(self.identity_sets),
        }

    def provenance(self) -> dict[str, Any]:
        """The full description (models' preprocessing, detector settings, metrics' prompts). Kept
        in the cache under the engine's fingerprint, so a run with nothing to score reads it back
        instead of building the models."""
        key = hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()
        if not self.built and self.cache is not None:
            stored = self.cache.get_json("engine-provenance", key)
            if stored is not None:
                return {**stored, "device": self.device}
        self._build()
        prov = {
            "smoke": self.smoke,
            "models": self.models,
            "device": self.device,
            "precision": self.precision,
            "identity_sets": list(self.identity_sets),
            "metrics": [m.name for m in self.metrics],
            "higher_is_better": self.directions(),
            "metric_details": {m.name: m.provenance() for m in self.metrics if m.provenance()},
            "encoders": {role: enc.provenance() for role, enc in (self._encoders or {}).items()},
            "detector": self._detector.provenance() if self._detector is not None else None,
            "conventions": CONVENTIONS,
        }
        if self.cache is not None:
            self.cache.put_json("engine-provenance", key, prov)
        return prov

    # -- embeddings on the scoring path -----------------------------------------------------------

    def embed_images(self, role: str, images: Sequence[Image.Image]) -> np.ndarray:
        """[N, D] L2-normalized embeddings of RGB ``images`` by the ``role`` model ("clip", "dino"),
        on the path scoring takes (the model's preprocessing, the CPU forward workers): the
        functional metrics' numbers are the engine's."""
        encoders = self.encoders()
        with self.scheduler.forward_workers():
            return self.scheduler.encode(encoders, {role: [encoders[role].preprocess(image) for image in images]})[role]

    def embed_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """[N, D] L2-normalized CLIP text embeddings of ``prompts``, as scoring computes CLIP-T's."""
        clip = self.clip
        assert clip is not None
        with self.scheduler.forward_workers():
            found = self.scheduler.prompts(clip, prompts)
        return np.stack([found[p] for p in prompts])

    @property
    def reference_encodes(self) -> int:
        """Reference images actually run through a model (0 on a warm cache)."""
        return self.scheduler.reference_encodes

    @property
    def data_wait_seconds(self) -> float:
        """Time spent waiting for decoded images (decoding threads, or in-process decoding)."""
        return self.scheduler.data_wait_seconds

    @property
    def forward_seconds(self) -> float:
        """Wall time spent waiting for forward passes (encoders and detector)."""
        return self.scheduler.forward_seconds

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, items: Iterable[ScoreItem], data_root: Path) -> Iterator[Score]:
        """One Score per item, in order, streamed batch by batch."""
        items = list(items)
        if not items:
            return
        encoders = self.encoders()
        regions = [self._regions(item.sample) for item in items]
        keep_image = self.uses_detector or "image" in self.needs
        dataset = GeneratedImages(
            items, {role: enc.preprocess for role, enc in encoders.items()}, "crops" in self.needs, keep_image, regions
        )
        with self.scheduler.forward_workers():
            if "references" in self.needs and encoders:  # every reference of the run, decoded and encoded once, up front
                self.scheduler.references(
                    encoders,
                    (
                        resolve_in_root(Path(data_root), p)
                        for item in items
                        if item.uses_references
                        for sub in item.sample.subjects
                        for p in self.selection.images(sub)
                    ),
                )
            for batch in self.scheduler.batches(dataset):
                yield from self._score_batch([items[d.index] for d in batch], batch, Path(data_root))

    def _regions(self, sample: Sample) -> dict[str, BoxXYXY]:
        found: dict[str, BoxXYXY] = {}
        for metric in self.metrics:
            found.update(metric.regions(sample))
        return found

    def _score_batch(self, items: Sequence[ScoreItem], decoded: Sequence[DecodedItem], data_root: Path) -> list[Score]:
        found = batch_features(
            items, decoded, data_root, selection=self.selection, encoders=self.encoders(), detector=self._detector, scheduler=self.scheduler
        )
        return [
            unscored(self.selection, item, decoded[i].error or "no image", self.smoke)
            if features is None
            else score_item(self.selection, features, self.smoke)
            for i, (item, features) in enumerate(zip(items, found))
        ]

    # -- aggregation ------------------------------------------------------------------------------

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | int | None]:
        """Each metric's aggregate over the run (:func:`picbench.metrics.aggregation.aggregate`)."""
        return aggregation.aggregate(self.selection, scores, samples)

    def intervals(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, tuple[float, float]]:
        """Bootstrap 95% intervals of every aggregate (see :mod:`picbench.metrics.bootstrap`)."""
        return aggregation.intervals(self.selection, scores, samples, self.fingerprint(), self.cache)
