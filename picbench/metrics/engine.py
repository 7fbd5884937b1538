"""The metric engine: computes each item's shared features once (image and box-crop embeddings,
the references' and prompt's embeddings, detections and their subject matches, the regions metrics
ask for) and hands them to every selected :class:`~picbench.metrics.base.Metric`. It never names a
metric: what it computes follows from the metrics' ``needs``.

Speed: generated images are decoded once (on ``num_workers`` threads, or taken from memory when
the runner passes a fresh generation) and preprocessed for every model and every crop; every forward
pass is batched (fp32 unless ``precision="bf16"`` asks for autocast; on CPU every model's chunks at once on
single-threaded workers, while the next batch is decoded: :mod:`picbench.metrics.parallel`); each reference image and prompt is encoded once per model
and kept in memory and in the on-disk :class:`EmbeddingCache` (keyed by content hash). Models are
built on first use, so a rerun with nothing left to score builds none. Memory is bounded by the
batch: images are never all held.
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
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from picbench.environment import environment_cause
from picbench.errors import ImageError, PicbenchError, UnknownNameError
from picbench.imaging import load_rgb
from picbench.metrics import ALIASES, METRICS
from picbench.metrics.base import Features, Metric, Unscorable, check_value
from picbench.metrics.boxes import match_subjects, normalize_label, to_pixels
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.detectors import DETECTORS, Detector, DetectorOutput
from picbench.metrics.encoders import CPU_FORWARD_CHUNK, ClipEncoder, Encoder, load_clip, load_dino
from picbench.metrics.parallel import decode_batches, encode_all, torch_workers
from picbench.metrics.weights import hub_id, resolve, weights_sha256
from picbench.paths import resolve_in_root
from picbench.protocols import IDENTITY_SETS, check_precision, metric_key
from picbench.records import BoxXYXY, Sample, Score, Subject, SubjectScore, file_sha256

log = logging.getLogger(__name__)
ENCODER_ROLES = ("clip", "dino")
CONVENTIONS = (
    "cosine of L2-normalized embeddings on a 0..1 scale, no x100, no clamping; identity metrics average over the "
    "subject's identity images (its eval images, or under the references protocol the references it was given), then "
    "subjects; IoU: one-to-one matching per class word (Hungarian), unmatched = 0; an item whose detector output failed "
    "(raised, or an answer that does not parse) has no detections, so its subjects count as IoU 0 in the means and AP, "
    "and it is counted in n_failures; items without an image (a failed or unreadable generation) have no values and are "
    "left out of the means, counted in n_failures"
)


@dataclass(frozen=True)
class ScoreItem:
    sample: Sample
    seed: int
    image_path: Path | None  # None: the method failed to produce an image
    identity: bool = True  # False for methods given no references: identity metrics are not applicable (None)
    failure: str | None = None  # generation failure reason, carried into the Score
    image: Image.Image | None = None  # the fresh generation itself: scored from memory, its file not decoded again


@dataclass
class _Decoded:
    """One item after decoding: preprocessed tensors of the whole image, the subjects' target-box
    crops and the metrics' regions, or why there are none."""

    index: int
    error: str | None = None
    image: Image.Image | None = None  # kept only where a detector, detected-box crops or a metric need it
    size: tuple[int, int] = (0, 0)
    whole: dict[str, torch.Tensor] = field(default_factory=dict)
    crops: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # subject index -> role -> tensor
    regions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # region key -> role -> tensor


def decode_generated(path: Path) -> Image.Image:
    """A generated image as RGB, refusing what cannot be scored: unreadable, non-finite, blank."""
    try:
        with Image.open(path) as raw:
            if raw.mode in ("F", "I", "I;16"):
                values = np.asarray(raw, dtype=np.float64)
                if not np.isfinite(values).all():
                    raise ImageError(f"image {path} has NaN or infinite pixels")
    except ImageError:
        raise
    except Exception:
        pass  # load_rgb below names the decoding problem
    return refuse_blank(load_rgb(path), str(path))


def refuse_blank(image: Image.Image, name: str) -> Image.Image:
    if all(lo == hi for lo, hi in image.getextrema()):
        raise ImageError(f"image {name} is blank (every pixel is {image.getpixel((0, 0))})")
    return image


def crop_to_box(image: Image.Image, box_px: Sequence[float]) -> Image.Image:
    """The image cut to a pixel box (rounded outwards, at least one pixel)."""
    w, h = image.size
    x0, y0 = max(0, min(w - 1, math.floor(box_px[0]))), max(0, min(h - 1, math.floor(box_px[1])))
    x1, y1 = max(x0 + 1, min(w, math.ceil(box_px[2]))), max(y0 + 1, min(h, math.ceil(box_px[3])))
    return image.crop((x0, y0, x1, y1))


class _Items:
    """Decodes each generated image once and preprocesses it for every model: whole, target-box
    crops and region crops."""

    def __init__(
        self,
        items: Sequence[ScoreItem],
        preprocess: Mapping[str, Callable],
        crops: bool,
        keep_image: bool,
        regions: Sequence[Mapping[str, BoxXYXY]],
    ) -> None:
        self.items, self.preprocess, self.crops, self.keep_image, self.regions = items, preprocess, crops, keep_image, regions

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> _Decoded:
        item = self.items[index]
        if item.failure is not None or (item.image_path is None and item.image is None):
            return _Decoded(index, error=item.failure or "the method produced no image")
        try:
            if item.image is not None:
                image = refuse_blank(item.image.convert("RGB"), f"of sample {item.sample.id} seed {item.seed}")
            else:
                image = decode_generated(Path(item.image_path))  # type: ignore[arg-type]
        except ImageError as exc:
            return _Decoded(index, error=str(exc))
        out = _Decoded(index, image=image if self.keep_image else None, size=image.size)
        out.whole = {role: fn(image) for role, fn in self.preprocess.items()}
        if self.crops:
            for s, sub in enumerate(item.sample.subjects):
                if sub.box is not None:
                    crop = crop_to_box(image, to_pixels(sub.box, *image.size))
                    out.crops[s] = {role: fn(crop) for role, fn in self.preprocess.items()}
        for key, box in self.regions[index].items():
            crop = crop_to_box(image, to_pixels(box, *image.size))
            out.regions[key] = {role: fn(crop) for role, fn in self.preprocess.items()}
        return out


class _References:
    """Decodes each reference once and preprocesses it for every model."""

    def __init__(self, paths: Sequence[Path], preprocess: Mapping[str, Callable]) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Path, Any]:
        path = self.paths[index]
        try:
            image = load_rgb(path)
        except ImageError as exc:
            return path, f"reference {exc}"
        return path, {role: fn(image) for role, fn in self.preprocess.items()}


def identity_images(subject: Subject, identity: str) -> tuple[str, ...]:
    """The images a subject's identity is scored against: its eval images (``default``, every real
    image of the subject under DreamBooth's protocol) or the references the method was given."""
    return tuple(subject.eval_images) if identity == "default" else tuple(subject.references)


def select_metrics(names: Sequence[str] | None, detector: str | None) -> tuple[Metric, ...]:
    """The metrics to compute, as objects: every default metric whose needs can be met when
    ``names`` is None, else the named ones (aliases such as ``ap50`` select their metric) and the
    metrics they require."""
    if names is None:
        chosen = [n for n in METRICS.names() if _default_metric(n, detector)]
    else:
        chosen = []
        for name in names:
            name = ALIASES.get(name, name)
            if name not in METRICS:
                raise UnknownNameError(METRICS.suggest(name))
            try:
                METRICS.get(name)
            except (ImportError, AttributeError) as exc:
                raise PicbenchError(f"metric {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
            if detector is None and "detector" in METRICS.get(name).needs:
                raise PicbenchError(f"metric {name!r} needs a detector, but detector=None")
            chosen.append(name)
        for name in list(chosen):
            chosen.extend(getattr(METRICS.get(name), "requires", ()))
    return tuple(METRICS.get(n)() for n in dict.fromkeys(chosen))


def _default_metric(name: str, detector: str | None) -> bool:
    """Whether a metric is computed when none is named; a plug-in that cannot be loaded is left
    out with a warning naming it (asked for by name, it is an error)."""
    try:
        metric = METRICS.get(name)
    except Exception as exc:  # a broken third-party entry point must not stop every run
        log.warning("metric %s is left out: it cannot be loaded: %s: %s", name, type(exc).__name__, exc)
        return False
    return metric.default and (detector is not None or "detector" not in metric.needs)


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
        unknown = [s for s in identity_sets if s not in IDENTITY_SETS]
        if not identity_sets or unknown:
            raise PicbenchError(f"identity sets must be among {sorted(IDENTITY_SETS)}, got {list(identity_sets)}")
        self.identity_sets = tuple(dict.fromkeys(identity_sets))
        self.weights = dict(weights or {})
        self.weights_dir = weights_dir  # the weights folder (DIR/<hub id>); None: $PICBENCH_WEIGHTS_DIR
        self.metrics = select_metrics(metrics, detector)
        self.needs = frozenset(n for m in self.metrics for n in m.needs)
        self.batch_size, self.num_workers = max(1, batch_size), num_workers
        self.cache = cache
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._sha: dict[Path, str] = {}
        self._reference_errors: dict[Path, str] = {}
        self.reference_encodes = 0  # reference images actually run through a model (0 on a warm cache)
        self.data_wait_seconds = 0.0  # time spent waiting for decoded images (decoding threads, or in-process decoding)
        self.forward_seconds = 0.0  # wall time spent waiting for forward passes (encoders and detector)
        self._pool: ThreadPoolExecutor | None = None  # the forward workers of the score call under way (CPU)
        self._pool_torch_threads = 1
        self.roles = tuple(r for r in ENCODER_ROLES if r in self.needs or (r == "clip" and "text" in self.needs))
        self.uses_detector = detector is not None and bool({"detector", "crops"} & self.needs)
        self.folders = {role: self._folder(role, role) for role in self.roles}
        if self.uses_detector:
            self.folders["detector"] = self._folder("detector", detector)  # type: ignore[arg-type]
        # the metrics' own models (vlm_judge's judge) are found now, like the encoders': missing
        # weights stop a run before it generates anything
        self.metric_folders = {role: folder for m in self.metrics for role, folder in m.model_folders(self).items()}
        self._encoders: dict[str, Encoder] | None = None
        self._detector: Detector | None = None
        self._identity: dict[str, Any] | None = None

    # -- setup --------------------------------------------------------------------------------

    def _folder(self, role: str, model: str) -> Path | None:
        """The local folder of a model: --weights ROLE=DIR, the tiny model of a smoke run, or the
        documented lookup of its hub id (weights.resolve)."""
        if role == "detector":
            cls = DETECTORS.get(model)
            if cls.hub_id is None and role not in self.weights:
                return None
            if role not in self.weights and self.smoke:
                return cls.smoke_folder()
            return resolve(role, cls.hub_id or model, self.weights, self.weights_dir).folder
        if role in self.weights:
            return resolve(role, hub_id(role), self.weights, self.weights_dir).folder
        if self.smoke:
            from picbench.tiny.metric_models import tiny_weights

            return tiny_weights(model)
        return resolve(role, hub_id(role), None, self.weights_dir).folder

    def model_folder(self, role: str, tiny: str) -> Path:
        """For metrics with models of their own (``Metric.load``): ``--weights ROLE=DIR``, the
        tiny model ``tiny`` of a smoke run, else the hub id registered for ``role``."""
        if role in self.weights:
            return resolve(role, hub_id(role), self.weights, self.weights_dir).folder
        if self.smoke:
            from picbench.tiny.metric_models import tiny_weights

            return tiny_weights(tiny)
        return resolve(role, hub_id(role), None, self.weights_dir).folder

    def _build(self) -> None:
        """Build every model the metrics need, once, on first use."""
        if self._encoders is not None:
            return
        encoders: dict[str, Encoder] = {}
        if "clip" in self.roles:
            encoders["clip"] = load_clip(
                self.folders["clip"],  # type: ignore[arg-type]
                self.device,
                self.clip_arch,
                openai=self._clip_is_openai(),
                precision=self.precision,
            )
        if "dino" in self.roles:
            encoders["dino"] = load_dino(self.folders["dino"], self.device, precision=self.precision)  # type: ignore[arg-type]
        if self.uses_detector:
            self._detector = DETECTORS.get(self.detector_name)(self.folders["detector"], self.device)  # type: ignore[arg-type]
        for metric in self.metrics:
            metric.load(self)
        self._encoders = encoders

    def _clip_is_openai(self) -> bool | None:
        """True where the CLIP role is the registered model and that is OpenAI's (the tiny model of a
        smoke run stands in for it); None for a folder given with ``--weights clip=DIR``: the
        folder itself says (:func:`~picbench.metrics.encoders.names_openai`)."""
        if "clip" in self.weights:
            return None
        return "openai" in hub_id("clip").lower()

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

    def item_keys(self) -> list[str]:
        return [metric_key(k, s, self.identity_sets[0]) for m in self.metrics for s in self._sets_of(m) for k in m.keys()]

    def directions(self) -> dict[str, bool]:
        """Base metric key -> True where higher is better, for every aggregate this engine writes."""
        return {
            metric_key(key, s, self.identity_sets[0]): m.direction(key)
            for m in self.metrics
            for s in self._sets_of(m)
            for key in m.outputs()
        }

    def _sets_of(self, metric: Metric) -> tuple[str, ...]:
        """The identity sets a metric is computed under: all of them where it scores identity against
        a subject's images, else the primary one only."""
        return self.identity_sets if "references" in metric.needs else self.identity_sets[:1]

    def identity(self) -> dict[str, Any]:
        """What decides the scores, known without building a model: the metrics (and their
        classes), the detector and the weights' hashes (computed once: hashing checkpoints takes
        seconds). Scores are reused only under one identity."""
        if self._identity is None:
            self._identity = self._compute_identity()
        return self._identity

    def _compute_identity(self) -> dict[str, Any]:
        return {
            "smoke": self.smoke,
            "models": self.models,
            "detector": self.detector_name if self.uses_detector else None,
            "detector_queries": DETECTORS.get(self.detector_name).query_settings() if self.uses_detector else None,  # type: ignore[arg-type]
            "metrics": {m.name: f"{type(m).__module__}:{type(m).__qualname__}" for m in self.metrics},
            "weights": {role: weights_sha256(folder) if folder is not None else None for role, folder in sorted(self.folders.items())},
            "metric_models": {role: weights_sha256(folder) for role, folder in self.metric_folders.items()},
            "clip_arch": self.clip_arch,
            "clip_openai": self._clip_is_openai() if "clip" in self.roles else None,
            "precision": self.precision,
            "identity_sets": list(self.identity_sets),
        }

    def provenance(self) -> dict[str, Any]:
        """The full description (models' preprocessing, detector settings, metrics' prompts). Kept
        in the cache under the engine's identity, so a run with nothing to score reads it back
        instead of building the models."""
        key = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()
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

    @contextmanager
    def _forward_workers(self) -> Iterator[None]:
        """On CPU, the threads one ``score`` call runs its forward passes on (see
        :mod:`picbench.metrics.parallel`): one single-threaded worker per core, fewer (with more
        torch threads each) where a batch has fewer chunks than there are cores."""
        if torch.device(self.device).type != "cpu":
            yield
            return
        cores = torch.get_num_threads()
        chunks = max(1, len(self.roles)) * -(-self.batch_size // CPU_FORWARD_CHUNK)
        workers = max(1, min(cores, chunks))
        self._pool_torch_threads = max(1, cores // workers)
        with torch_workers(workers, self._pool_torch_threads, "picbench-forward") as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    @property
    def _overlap(self) -> bool:
        """Decode the next batch during this one's forward passes, unless OpenMP threads would
        share the cores with the decoders (see decode_batches): forward workers of several torch
        threads each, or a detector or a metric's own model, which run on the calling thread."""
        if torch.device(self.device).type != "cpu":
            return True
        own_models = self.uses_detector or any(type(m).load is not Metric.load for m in self.metrics)
        return self._pool is not None and self._pool_torch_threads == 1 and not own_models

    def _encode(self, work: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, np.ndarray]:
        """role -> the embeddings of its preprocessed images, every model's forward passes at once on CPU."""
        encoders = self.encoders()
        stacked = [
            (encoders[role].encode_images, torch.stack(list(tensors)) if tensors else torch.zeros(0)) for role, tensors in work.items()
        ]
        return dict(zip(work, self._forward(stacked)))

    def _forward(self, work: Sequence[tuple[Callable[[Any], torch.Tensor], Any]]) -> list[np.ndarray]:
        """:func:`~picbench.metrics.parallel.encode_all` on this score call's forward workers (CPU)
        or the calling thread, its wall time counted in ``forward_seconds``."""
        start = time.perf_counter()
        try:
            return encode_all(work, self._pool, self.batch_size)
        finally:
            self.forward_seconds += time.perf_counter() - start

    def embed_images(self, role: str, images: Sequence[Image.Image]) -> np.ndarray:
        """[N, D] L2-normalized embeddings of RGB ``images`` by the ``role`` model ("clip", "dino"),
        on the path scoring takes (the model's preprocessing, the CPU forward workers): the
        functional metrics' numbers are the engine's."""
        encoder = self.encoders()[role]
        with self._forward_workers():
            return self._encode({role: [encoder.preprocess(image) for image in images]})[role]

    def embed_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """[N, D] L2-normalized CLIP text embeddings of ``prompts``, as scoring computes CLIP-T's."""
        with self._forward_workers():
            found = self._prompts(prompts)
        return np.stack([found[p] for p in prompts])

    # -- embeddings of references and prompts (cached) ------------------------------------------

    def _content_key(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = file_sha256(path)
        return self._sha[path]

    def _cached(self, model_id: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found = {k: self._memory[(model_id, k)] for k in keys if (model_id, k) in self._memory}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing and self.cache is not None:
            from_disk = self.cache.get_many(model_id, missing)
            for k, v in from_disk.items():
                self._memory[(model_id, k)] = v
            found.update(from_disk)
        return found

    def _store(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        for k, v in vectors.items():
            self._memory[(model_id, k)] = v
        if self.cache is not None and vectors:
            self.cache.put_many(model_id, vectors)

    def _references(self, paths: Iterable[Path]) -> tuple[dict[str, dict[Path, np.ndarray]], dict[Path, str]]:
        """role -> path -> embedding for every readable reference; path -> error for the rest.
        Only references no cache knows are decoded (once, in workers, for every model)."""
        errors: dict[Path, str] = {}
        keys: dict[Path, str] = {}
        for p in dict.fromkeys(paths):
            if p in self._reference_errors:  # decoded once and refused: not decoded again for every batch
                errors[p] = self._reference_errors[p]
                continue
            try:
                keys[p] = self._content_key(p)
            except OSError as exc:
                errors[p] = f"reference image {p} is unreadable: {exc.strerror or exc}"
        encoders = self.encoders()
        found = {role: self._cached(enc.model_id, list(keys.values())) for role, enc in encoders.items()}
        todo = [p for p, k in keys.items() if any(k not in found[role] for role in encoders)]
        if todo:
            jobs = _References(todo, {role: enc.preprocess for role, enc in encoders.items()})
            batches = decode_batches(jobs, self.batch_size, min(self.num_workers, len(todo)), self._overlap)
            while (batch := self._next_batch(batches)) is not None:
                refused = {p: decoded for p, decoded in batch if isinstance(decoded, str)}
                errors.update(refused)
                self._reference_errors.update(refused)
                ok = [(p, tensors) for p, tensors in batch if isinstance(tensors, dict)]
                need = {role: [(p, t[role]) for p, t in ok if keys[p] not in found[role]] for role in encoders}
                vectors = self._encode({role: [t for _, t in pairs] for role, pairs in need.items() if pairs})
                for role, vecs in vectors.items():
                    self.reference_encodes += len(vecs)
                    fresh = {keys[p]: v for (p, _), v in zip(need[role], vecs)}
                    self._store(encoders[role].model_id, fresh)
                    found[role].update(fresh)
        result = {role: {p: found[role][k] for p, k in keys.items() if k in found[role]} for role in encoders}
        return result, errors

    def _prompts(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        clip = self.clip
        assert clip is not None
        model_id = f"{clip.model_id}:text"
        keys = {p: hashlib.sha256(p.encode()).hexdigest() for p in dict.fromkeys(prompts)}
        found = self._cached(model_id, list(keys.values()))
        todo = [p for p, k in keys.items() if k not in found]
        if todo:
            fresh = {keys[p]: v for p, v in zip(todo, self._forward([(clip.encode_texts, todo)])[0])}
            self._store(model_id, fresh)
            found.update(fresh)
        return {p: found[k] for p, k in keys.items()}

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, items: Iterable[ScoreItem], data_root: Path) -> Iterator[Score]:
        """One Score per item, in order, streamed batch by batch."""
        items = list(items)
        if not items:
            return
        encoders = self.encoders()
        regions = [self._regions(item.sample) for item in items]
        keep_image = self.uses_detector or "image" in self.needs
        dataset = _Items(items, {role: enc.preprocess for role, enc in encoders.items()}, "crops" in self.needs, keep_image, regions)
        with self._forward_workers():
            if "references" in self.needs and encoders:  # every reference of the run, decoded and encoded once, up front
                self._references(
                    resolve_in_root(Path(data_root), p)
                    for item in items
                    if item.identity
                    for sub in item.sample.subjects
                    for p in self._images(sub)
                )
            batches = decode_batches(dataset, self.batch_size, self.num_workers, self._overlap)
            while (batch := self._next_batch(batches)) is not None:
                yield from self._score_batch([items[d.index] for d in batch], batch, Path(data_root))

    def _next_batch(self, batches: Iterator[list[Any]]) -> list[Any] | None:
        start = time.perf_counter()
        batch = next(batches, None)
        self.data_wait_seconds += time.perf_counter() - start
        return batch

    def _regions(self, sample: Sample) -> dict[str, BoxXYXY]:
        found: dict[str, BoxXYXY] = {}
        for metric in self.metrics:
            found.update(metric.regions(sample))
        return found

    def _score_batch(self, items: Sequence[ScoreItem], decoded: Sequence[_Decoded], data_root: Path) -> list[Score]:
        ok = [i for i, d in enumerate(decoded) if d.error is None]
        encoders = self.encoders()
        roles = list(encoders)
        whole = self._encode({role: [decoded[i].whole[role] for i in ok] for role in roles})
        row = {i: r for r, i in enumerate(ok)}

        detections: dict[int, DetectorOutput] = {}
        if self._detector is not None and ok:
            outputs = self._detect([decoded[i].image for i in ok], [[s.class_word for s in items[i].sample.subjects] for i in ok])  # type: ignore[misc]
            detections = dict(zip(ok, outputs))
        matches = {i: self._assign(items[i].sample, detections[i], decoded[i].size) for i in detections}

        # every crop of the batch (subject boxes, detected boxes where a subject has none, metric regions) in one pass per role
        crop_tensors: dict[str, list[torch.Tensor]] = {role: [] for role in roles}
        crop_row: dict[tuple[int, Any], int] = {}

        def add(key: tuple[int, Any], tensors: Mapping[str, torch.Tensor]) -> None:
            crop_row[key] = len(crop_tensors[roles[0]]) if roles else 0
            for role in roles:
                crop_tensors[role].append(tensors[role])

        for i in ok:
            if "crops" in self.needs:
                for s, _ in enumerate(items[i].sample.subjects):
                    tensors = decoded[i].crops.get(s)
                    det = matches.get(i, {}).get(s)
                    if tensors is None and det is not None and det[0] is not None:
                        crop = crop_to_box(decoded[i].image, detections[i].detections[det[0]].box)  # type: ignore[arg-type]
                        tensors = {role: encoders[role].preprocess(crop) for role in roles}
                    if tensors is not None:
                        add((i, s), tensors)
            for key, tensors in decoded[i].regions.items():
                add((i, key), tensors)
        crop_emb = self._encode(crop_tensors)

        wants_refs = "references" in self.needs and bool(roles)
        identity_refs = [
            resolve_in_root(data_root, p)
            for i in ok
            if items[i].identity and wants_refs
            for sub in items[i].sample.subjects
            for p in self._images(sub)
        ]
        refs, ref_errors = self._references(identity_refs) if identity_refs else ({}, {})
        texts = self._prompts([items[i].sample.prompt for i in ok]) if "text" in self.needs and "clip" in encoders and ok else {}

        scores = []
        for i, item in enumerate(items):
            if i not in row:
                scores.append(
                    Score(
                        item.sample.id,
                        item.seed,
                        dict.fromkeys(self.item_keys()),
                        failures=(decoded[i].error or "no image",),
                        smoke=self.smoke,
                    )
                )
                continue
            sample = item.sample
            subject_refs: dict[str, dict[tuple[int, str], tuple[np.ndarray, ...]]] = {k: {} for k in self.identity_sets}
            ref_problems: dict[int, list[str]] = {}
            if item.identity and wants_refs:
                for s, sub in enumerate(sample.subjects):
                    ref_problems[s] = [ref_errors[p] for p in (resolve_in_root(data_root, q) for q in self._images(sub)) if p in ref_errors]
                    for identity in self.identity_sets:
                        paths = [resolve_in_root(data_root, p) for p in identity_images(sub, identity)]
                        for role in roles:
                            subject_refs[identity][(s, role)] = tuple(refs[role][p] for p in paths if p in refs.get(role, {}))
            features = Features(
                sample=sample,
                seed=item.seed,
                identity=item.identity,
                size=decoded[i].size,
                data_root=data_root,
                embeddings={role: whole[role][row[i]] for role in roles},
                subject_crops={
                    (s, role): crop_emb[role][r] for (j, s), r in crop_row.items() if j == i and isinstance(s, int) for role in roles
                },
                regions={(k, role): crop_emb[role][r] for (j, k), r in crop_row.items() if j == i and isinstance(k, str) for role in roles},
                references=subject_refs[self.identity_sets[0]],
                prompt=texts.get(sample.prompt),
                detections=detections.get(i),
                matches=matches.get(i, {}),
                image=decoded[i].image if "image" in self.needs else None,
            )
            scores.append(self._assemble(features, ref_problems, subject_refs))
        return scores

    def _images(self, subject: Subject) -> tuple[str, ...]:
        """Every image a subject's identity is scored against under any of this engine's identity sets."""
        return tuple(dict.fromkeys(p for identity in self.identity_sets for p in identity_images(subject, identity)))

    def _detect(self, images: list[Image.Image], classes: list[list[str]]) -> list[DetectorOutput]:
        """The batch's detections in one ``detect_batch`` call; when it raises, image by image, so a
        detector that fails on one image fails that item, not the run."""
        assert self._detector is not None
        start = time.perf_counter()
        try:
            return self._detect_or_fail(images, classes)
        finally:
            self.forward_seconds += time.perf_counter() - start

    def _detect_or_fail(self, images: list[Image.Image], classes: list[list[str]]) -> list[DetectorOutput]:
        assert self._detector is not None
        try:
            outputs = list(self._detector.detect_batch(images, classes))
            if len(outputs) != len(images):
                raise ValueError(f"detect_batch returned {len(outputs)} outputs for {len(images)} images")
            return outputs
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            if environment_cause(exc) is not None:  # out of memory, a lost device: the run's problem, never stored
                raise
            if len(images) > 1:
                return [out for image, asked in zip(images, classes) for out in self._detect_or_fail([image], [asked])]
            return [DetectorOutput((), None, (f"detector {self._detector.name} failed: {type(exc).__name__}: {exc}",), failed=True)]

    @staticmethod
    def _assign(sample: Sample, output: DetectorOutput, size: tuple[int, int]) -> dict[int, tuple[int | None, float | None]]:
        """Subject index -> (detection index, IoU). Boxed subjects: Hungarian on IoU per class word;
        unboxed subjects (DreamBench): the best-scored unused detection of their class, IoU None."""
        dets = output.detections
        boxed = [s for s, sub in enumerate(sample.subjects) if sub.box is not None]
        result: dict[int, tuple[int | None, float | None]] = {}
        matches = match_subjects(
            [to_pixels(sample.subjects[s].box, *size) for s in boxed],
            [sample.subjects[s].class_word for s in boxed],  # type: ignore[arg-type]
            [d.box for d in dets],
            [d.label for d in dets],
        )
        for s, m in zip(boxed, matches):
            result[s] = m
        used = {m[0] for m in matches if m[0] is not None}
        for s, sub in enumerate(sample.subjects):
            if sub.box is None:
                pick = max(
                    (j for j, d in enumerate(dets) if j not in used and normalize_label(d.label) == normalize_label(sub.class_word)),
                    key=lambda j: dets[j].score,
                    default=None,
                )
                if pick is not None:
                    used.add(pick)
                result[s] = (pick, None)
        return result

    def _assemble(
        self,
        features: Features,
        ref_problems: Mapping[int, list[str]],
        reference_sets: Mapping[str, Mapping[tuple[int, str], tuple[np.ndarray, ...]]] | None = None,
    ) -> Score:
        """Run every metric on the item's features, under each identity set for the metrics that
        score identity; a metric's exception or bad value is that metric's recorded failure, and the
        other metrics go on."""
        sample, output = features.sample, features.detections
        primary = self.identity_sets[0]
        views = {
            k: features if k == primary else replace(features, references=(reference_sets or {}).get(k, {})) for k in self.identity_sets
        }
        failures: list[str] = []
        if output is not None:
            failures.extend(output.problems)
            if not output.detections and not output.failed:
                failures.append(f"detector found none of {sorted({s.class_word for s in sample.subjects})}")
        subject_values: list[dict[str, float | None]] = []
        subjects = []
        for s, sub in enumerate(sample.subjects):
            values: dict[str, float | None] = {}
            why = list(ref_problems.get(s, ()))
            for metric in self.metrics:
                if not metric.per_subject:
                    continue
                for identity in self._sets_of(metric):
                    key = metric_key(metric.name, identity, primary)
                    try:
                        values[key] = check_value(metric.name, key, metric.subject_value(views[identity], s))
                    except Unscorable as exc:
                        values[key] = None
                        (why if not exc.failure else failures).append(
                            exc.reason if not exc.failure else f"metric {key}, subject {sub.name}: {exc.reason}"
                        )
                    except Exception as exc:  # a metric's bug fails that metric on this subject only
                        if environment_cause(exc) is not None:
                            raise
                        values[key] = None
                        failures.append(f"metric {key} failed on subject {sub.name}: {type(exc).__name__}: {exc}")
            det_index, iou_value = features.matches.get(s, (None, None))
            det_box = output.detections[det_index].box if output is not None and det_index is not None else None
            subject_iou = iou_value if sub.box is not None and output is not None else None
            subject_values.append(values)
            subjects.append(SubjectScore(sub.name, values, det_box, subject_iou, "; ".join(dict.fromkeys(why)) or None))
        failures.extend(f"subject {sub.name}: {p}" for s, sub in enumerate(sample.subjects) for p in dict.fromkeys(ref_problems.get(s, ())))
        metrics: dict[str, float | None] = {}
        for metric in self.metrics:
            for identity in self._sets_of(metric):
                keys = {k: metric_key(k, identity, primary) for k in metric.keys()}
                label = metric_key(metric.name, identity, primary)
                subject_view = [
                    {m.name: sv.get(metric_key(m.name, identity, primary), sv.get(m.name)) for m in self.metrics if m.per_subject}
                    for sv in subject_values
                ]
                try:
                    found = metric.item(views[identity], subject_view)
                    if not isinstance(found, Mapping):
                        raise TypeError(f"metric {metric.name} returned {type(found).__name__}, not a mapping of its keys to values")
                    metrics.update({keys[k]: check_value(metric.name, keys[k], found.get(k)) for k in keys})
                except Unscorable as exc:
                    metrics.update(dict.fromkeys(keys.values()))
                    failures.append(f"metric {label}: {exc.reason}")
                except Exception as exc:  # a plug-in that raises, returns NaN or a non-number fails for this item, by name
                    if environment_cause(exc) is not None:
                        raise
                    metrics.update(dict.fromkeys(keys.values()))
                    failures.append(f"metric {label} failed: {type(exc).__name__}: {exc}")
        w, h = features.size
        detections = tuple(
            {"label": d.label, "score": d.score, "box": list(d.box), "box_norm": [d.box[0] / w, d.box[1] / h, d.box[2] / w, d.box[3] / h]}
            for d in (output.detections if output is not None else ())
        )
        return Score(
            sample.id,
            features.seed,
            metrics,
            tuple(subjects),
            output.raw if output is not None else None,
            detections,
            tuple(dict.fromkeys(failures)),
            self.smoke,
        )

    # -- aggregation ------------------------------------------------------------------------------

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | int | None]:
        """Each metric's aggregate (means over items, failed items excluded, per split where the
        split occurs; AP over the run), plus item and failure counts. A plug-in whose aggregate
        raises gets None values and a logged warning."""
        out: dict[str, float | int | None] = {}
        for metric in self.metrics:
            for identity in self._sets_of(metric):
                view = self._identity_view(scores, metric, identity)
                try:
                    found = metric.aggregate(view, samples)
                except Exception as exc:
                    log.warning("metric %s failed to aggregate: %s: %s", metric.name, type(exc).__name__, exc)
                    found = dict.fromkeys(metric.outputs())
                out.update({metric_key(k, identity, self.identity_sets[0]): v for k, v in found.items()})
        out["n_items"] = len(scores)
        out["n_failures"] = sum(1 for sc in scores if sc.failures)
        return out

    def _identity_view(self, scores: Sequence[Score], metric: Metric, identity: str) -> Sequence[Score]:
        """The scores as ``metric`` sees them under an identity set: its ``KEY@SET`` values under
        its plain keys (the scores themselves for the primary set)."""
        if identity == self.identity_sets[0]:
            return scores
        keys = {k: metric_key(k, identity, self.identity_sets[0]) for k in metric.keys()}
        return [replace(sc, metrics={**sc.metrics, **{k: sc.metrics.get(v) for k, v in keys.items()}}) for sc in scores]

    def intervals(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, tuple[float, float]]:
        """Bootstrap 95% intervals of every aggregate (see :mod:`picbench.metrics.bootstrap`)."""
        from picbench.metrics import bootstrap

        payload = json.dumps([self.identity(), [sc.to_dict() for sc in scores], sorted(samples)], sort_keys=True, default=str)
        key = hashlib.sha256(payload.encode()).hexdigest()
        stored = self.cache.get_json("intervals", key) if self.cache is not None else None
        if stored is not None:  # the same scores: a rerun recomputes nothing
            return {k: (v[0], v[1]) for k, v in stored.items()}
        out: dict[str, tuple[float, float]] = {}
        complete = True
        for metric in self.metrics:
            for identity in self._sets_of(metric):
                view = self._identity_view(scores, metric, identity)
                try:
                    if type(metric).aggregate is Metric.aggregate:
                        found = bootstrap.mean_intervals(view, samples, metric.outputs())
                    else:
                        found = bootstrap.run_level_intervals(view, lambda resample, m=metric: m.bootstrap_statistic(resample, samples))
                except Exception as exc:
                    complete = False
                    log.warning("metric %s: no bootstrap interval: %s: %s", metric.name, type(exc).__name__, exc)
                    continue
                out.update({metric_key(k, identity, self.identity_sets[0]): v for k, v in found.items()})
        if self.cache is not None and complete:  # a partial set (a package missing, say) is computed again next time, never served
            self.cache.put_json("intervals", key, {k: list(v) for k, v in out.items()})
        return out
