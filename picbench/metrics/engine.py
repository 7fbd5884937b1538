"""The metric engine: streams generated images through CLIP, DINO and a detector in batches and
turns them into per-sample :class:`Score` records and a run's aggregate.

Speed: generated images are decoded and preprocessed in DataLoader workers; every forward pass is
batched (bf16 autocast on CUDA); each reference image and prompt is encoded once per model and kept
in memory and in the on-disk :class:`EmbeddingCache` (keyed by content hash), so a second run
encodes no reference. Memory is bounded by the batch: images are never all held.
Robustness: a per-item problem (no image, unreadable, non-finite or blank image, a detector answer
that does not parse, boxes that are empty or inverted, no detections) becomes a failure reason in
that item's Score; the run goes on.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from picbench.errors import ImageError, PicbenchError, UnknownNameError
from picbench.imaging import load_rgb
from picbench.metrics import METRICS
from picbench.metrics.boxes import match_subjects, normalize_label, to_pixels
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.coco import Detected, EvalImage, GroundTruth, average_precision
from picbench.metrics.definitions import BY_NAME
from picbench.metrics.detectors import DETECTOR_NAMES as DETECTORS
from picbench.metrics.detectors import Detector, DetectorOutput, load_detector
from picbench.metrics.encoders import ClipEncoder, Encoder, load_clip, load_dino
from picbench.metrics.weights import HUB_IDS, resolve
from picbench.paths import resolve_in_root
from picbench.records import Sample, Score, SubjectScore, file_sha256

ITEM_KEYS = ("clip_i", "clip_t", "dino", "clip_i_crop", "dino_crop", "iou")
AP_KEYS = ("ap", "ap50", "ap75")
SPLITS = ("single", "multi")
CONVENTIONS = ("cosine of L2-normalized embeddings on a 0..1 scale, no x100, no clamping; identity metrics average over the "
               "subject's eval images, then subjects; IoU: one-to-one matching per class word (Hungarian), unmatched = 0; "
               "failed items are excluded from means and counted in n_failures")


@dataclass(frozen=True)
class ScoreItem:
    sample: Sample
    seed: int
    image_path: Path | None  # None: the method failed to produce an image
    identity: bool = True  # False for methods given no references: identity metrics are not applicable (None)
    failure: str | None = None  # generation failure reason, carried into the Score


@dataclass
class _Decoded:
    """One item after decoding in a worker: preprocessed tensors, or why there are none."""

    index: int
    error: str | None = None
    image: Image.Image | None = None  # kept only where a detector or detected-box crops need it
    size: tuple[int, int] = (0, 0)
    whole: dict[str, torch.Tensor] = field(default_factory=dict)
    crops: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # subject index -> role -> tensor


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
    image = load_rgb(path)
    if all(lo == hi for lo, hi in image.getextrema()):
        raise ImageError(f"image {path} is blank (every pixel is {image.getpixel((0, 0))})")
    return image


def crop_to_box(image: Image.Image, box_px: Sequence[float]) -> Image.Image:
    """The image cut to a pixel box (rounded outwards, at least one pixel)."""
    w, h = image.size
    x0, y0 = max(0, min(w - 1, math.floor(box_px[0]))), max(0, min(h - 1, math.floor(box_px[1])))
    x1, y1 = max(x0 + 1, min(w, math.ceil(box_px[2]))), max(y0 + 1, min(h, math.ceil(box_px[3])))
    return image.crop((x0, y0, x1, y1))


class _Items(Dataset):
    """Decodes and preprocesses generated images (whole and target-box crops) in workers."""

    def __init__(self, items: Sequence[ScoreItem], preprocess: Mapping[str, Callable], crops: bool, keep_image: bool) -> None:
        self.items, self.preprocess, self.crops, self.keep_image = items, preprocess, crops, keep_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> _Decoded:
        item = self.items[index]
        if item.image_path is None or item.failure is not None:
            return _Decoded(index, error=item.failure or "the method produced no image")
        try:
            image = decode_generated(Path(item.image_path))
        except ImageError as exc:
            return _Decoded(index, error=str(exc))
        out = _Decoded(index, image=image if self.keep_image else None, size=image.size)
        out.whole = {role: fn(image) for role, fn in self.preprocess.items()}
        if self.crops:
            for s, sub in enumerate(item.sample.subjects):
                if sub.box is not None:
                    crop = crop_to_box(image, to_pixels(sub.box, *image.size))
                    out.crops[s] = {role: fn(crop) for role, fn in self.preprocess.items()}
        return out


class _References(Dataset):
    """Decodes each reference once and preprocesses it for every model, in workers."""

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


def _collate(batch: list) -> list:
    return batch


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


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
        cache: EmbeddingCache | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        clip_arch: str = "ViT-B-32",
        ap_backend: Literal["pycocotools", "faster-coco-eval"] = "pycocotools",
    ) -> None:
        if models not in ("default", "tiny"):
            raise PicbenchError(f"models must be 'default' or 'tiny', got {models!r}")
        if detector is not None and detector not in DETECTORS:
            raise PicbenchError(f"unknown detector {detector!r} (known: {', '.join(DETECTORS)}, or None for no box metrics)")
        self.models, self.device, self.detector_name = models, device, detector
        self.smoke = models == "tiny"
        self.metrics = self._select(metrics, detector)
        self.batch_size, self.num_workers, self.ap_backend = max(1, batch_size), num_workers, ap_backend
        self.cache = cache
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._sha: dict[Path, str] = {}
        self.reference_encodes = 0  # reference images actually run through a model (0 on a warm cache)
        self.data_wait_seconds = 0.0  # time spent waiting for decoded images (workers, or in-process decoding)
        need = {role for m in self.metrics for role in BY_NAME[m].needs}
        self.clip: ClipEncoder | None = load_clip(self._folder("clip", "clip", weights), device, clip_arch) if "clip" in need else None
        self.dino: Encoder | None = load_dino(self._folder("dino", "dino", weights), device) if "dino" in need else None
        wants_detector = detector is not None and ("detector" in need or {"clip_i_crop", "dino_crop"} & set(self.metrics))
        self.detector: Detector | None = (
            load_detector(detector, self._folder("detector", detector, weights), device) if wants_detector else None  # type: ignore[arg-type]
        )

    # -- setup --------------------------------------------------------------------------------

    @staticmethod
    def _select(metrics: Sequence[str] | None, detector: str | None) -> tuple[str, ...]:
        if metrics is None:
            chosen = [m for m in BY_NAME if detector is not None or "detector" not in BY_NAME[m].needs]
        else:
            chosen = []
            for name in metrics:
                if name in AP_KEYS[1:]:
                    name = "ap"
                if name not in BY_NAME:
                    raise UnknownNameError(METRICS.suggest(name))
                if detector is None and "detector" in BY_NAME[name].needs:
                    raise PicbenchError(f"metric {name!r} needs a detector, but detector=None")
                chosen.append(name)
            if "ap" in chosen and "iou" not in chosen:
                chosen.append("iou")  # AP is computed from the same matched detections
        return tuple(dict.fromkeys(chosen))

    def _folder(self, role: str, model: str, weights: Mapping[str, str | Path] | None) -> Path:
        if weights and role in weights:
            return resolve(role, HUB_IDS.get(model, model), weights).folder
        if self.smoke:
            from picbench.tiny.metric_models import tiny_weights

            return tiny_weights(model)
        return resolve(role, HUB_IDS[model]).folder

    def _encoders(self) -> dict[str, Encoder]:
        return {role: enc for role, enc in (("clip", self.clip), ("dino", self.dino)) if enc is not None}

    def provenance(self) -> dict[str, Any]:
        return {
            "smoke": self.smoke,
            "models": self.models,
            "device": self.device,
            "metrics": list(self.metrics),
            "encoders": {role: enc.provenance() for role, enc in self._encoders().items()},
            "detector": self.detector.provenance() if self.detector is not None else None,
            "ap_backend": self.ap_backend,
            "conventions": CONVENTIONS,
        }

    @property
    def forward_seconds(self) -> float:
        total = sum(enc.forward_seconds for enc in self._encoders().values())
        return total + (self.detector.forward_seconds if self.detector is not None else 0.0)

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
            try:
                keys[p] = self._content_key(p)
            except OSError as exc:
                errors[p] = f"reference image {p} is unreadable: {exc.strerror or exc}"
        encoders = self._encoders()
        found = {role: self._cached(enc.model_id, list(keys.values())) for role, enc in encoders.items()}
        todo = [p for p, k in keys.items() if any(k not in found[role] for role in encoders)]
        if todo:
            loader = DataLoader(_References(todo, {role: enc.preprocess for role, enc in encoders.items()}), batch_size=self.batch_size,
                                num_workers=min(self.num_workers, len(todo)), collate_fn=_collate)
            start = time.perf_counter()
            for batch in loader:
                self.data_wait_seconds += time.perf_counter() - start
                errors.update({p: decoded for p, decoded in batch if isinstance(decoded, str)})
                ok = [(p, tensors) for p, tensors in batch if isinstance(tensors, dict)]
                for role, enc in encoders.items():
                    need = [(p, t[role]) for p, t in ok if keys[p] not in found[role]]
                    if need:
                        vecs = enc.encode_images(torch.stack([t for _, t in need])).numpy()
                        self.reference_encodes += len(need)
                        fresh = {keys[p]: v for (p, _), v in zip(need, vecs)}
                        self._store(enc.model_id, fresh)
                        found[role].update(fresh)
                start = time.perf_counter()
        result = {role: {p: found[role][k] for p, k in keys.items() if k in found[role]} for role in encoders}
        return result, errors

    def _prompts(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        assert self.clip is not None
        model_id = f"{self.clip.model_id}:text"
        keys = {p: hashlib.sha256(p.encode()).hexdigest() for p in dict.fromkeys(prompts)}
        found = self._cached(model_id, list(keys.values()))
        todo = [p for p, k in keys.items() if k not in found]
        if todo:
            fresh = {keys[p]: v for p, v in zip(todo, self.clip.encode_texts(todo).numpy())}
            self._store(model_id, fresh)
            found.update(fresh)
        return {p: found[k] for p, k in keys.items()}

    def _encode(self, role: str, tensors: Sequence[torch.Tensor]) -> np.ndarray:
        enc = self._encoders()[role]
        parts = [enc.encode_images(torch.stack(list(tensors[i : i + self.batch_size]))).numpy() for i in range(0, len(tensors), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, items: Iterable[ScoreItem], data_root: Path) -> Iterator[Score]:
        """One Score per item, in order, streamed batch by batch."""
        items = list(items)
        if not items:
            return
        crops = bool({"clip_i_crop", "dino_crop"} & set(self.metrics))
        preprocess = {role: enc.preprocess for role, enc in self._encoders().items()}
        dataset = _Items(items, preprocess, crops, keep_image=self.detector is not None)
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=_collate,
                            persistent_workers=False, prefetch_factor=2 if self.num_workers else None)
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            self.data_wait_seconds += time.perf_counter() - start
            if batch is None:
                return
            yield from self._score_batch([items[d.index] for d in batch], batch, Path(data_root))

    def _score_batch(self, items: Sequence[ScoreItem], decoded: Sequence[_Decoded], data_root: Path) -> list[Score]:
        ok = [i for i, d in enumerate(decoded) if d.error is None]
        roles = list(self._encoders())
        whole = {role: self._encode(role, [decoded[i].whole[role] for i in ok]) for role in roles}
        row = {i: r for r, i in enumerate(ok)}

        detections: dict[int, DetectorOutput] = {}
        if self.detector is not None:
            for i in ok:
                detections[i] = self._detect(decoded[i].image, [s.class_word for s in items[i].sample.subjects])
        assigned = {i: self._assign(items[i].sample, detections[i], decoded[i].size) if i in detections else None for i in ok}

        crop_tensors: dict[str, list[torch.Tensor]] = {role: [] for role in roles}
        crop_row: dict[tuple[int, int], int] = {}
        if {"clip_i_crop", "dino_crop"} & set(self.metrics):
            for i in ok:
                for s, sub in enumerate(items[i].sample.subjects):
                    tensors = decoded[i].crops.get(s)
                    det = (assigned[i] or {}).get(s)
                    if tensors is None and det is not None and det[0] is not None:
                        crop = crop_to_box(decoded[i].image, detections[i].detections[det[0]].box)
                        tensors = {role: self._encoders()[role].preprocess(crop) for role in roles}
                    if tensors is not None:
                        crop_row[(i, s)] = len(crop_tensors[roles[0]]) if roles else 0
                        for role in roles:
                            crop_tensors[role].append(tensors[role])
        crop_emb = {role: self._encode(role, crop_tensors[role]) for role in roles}

        wants_identity = any(BY_NAME[m].identity for m in self.metrics)
        identity_refs = [resolve_in_root(data_root, p) for i in ok if items[i].identity and wants_identity
                         for sub in items[i].sample.subjects for p in sub.eval_images]
        refs, ref_errors = self._references(identity_refs)
        texts = self._prompts([items[i].sample.prompt for i in ok]) if "clip_t" in self.metrics and self.clip is not None else {}

        scores = []
        for i, item in enumerate(items):
            if i not in row:
                scores.append(Score(item.sample.id, item.seed, {k: None for k in self._item_keys()}, failures=(decoded[i].error or "no image",), smoke=self.smoke))
                continue
            scores.append(self._assemble(item, data_root, {role: whole[role][row[i]] for role in roles}, detections.get(i), assigned[i],
                                         {(s, role): crop_emb[role][r] for (j, s), r in crop_row.items() if j == i for role in roles},
                                         refs, ref_errors, texts.get(item.sample.prompt), decoded[i].size))
        return scores

    def _detect(self, image: Image.Image, classes: list[str]) -> DetectorOutput:
        """A detector that fails on one image fails that item, not the run."""
        assert self.detector is not None
        try:
            return self.detector.detect(image, classes)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            return DetectorOutput((), None, (f"detector {self.detector.name} failed: {type(exc).__name__}: {exc}",))

    def _item_keys(self) -> list[str]:
        return [k for k in ITEM_KEYS if k in self.metrics]

    @staticmethod
    def _assign(sample: Sample, output: DetectorOutput, size: tuple[int, int]) -> dict[int, tuple[int | None, float | None]]:
        """Subject index -> (detection index, IoU). Boxed subjects: Hungarian on IoU per class word;
        unboxed subjects (DreamBench): the best-scored unused detection of their class, IoU None."""
        dets = output.detections
        boxed = [s for s, sub in enumerate(sample.subjects) if sub.box is not None]
        result: dict[int, tuple[int | None, float | None]] = {}
        matches = match_subjects([to_pixels(sample.subjects[s].box, *size) for s in boxed], [sample.subjects[s].class_word for s in boxed],
                                 [d.box for d in dets], [d.label for d in dets])
        for s, m in zip(boxed, matches):
            result[s] = m
        used = {m[0] for m in matches if m[0] is not None}
        for s, sub in enumerate(sample.subjects):
            if sub.box is None:
                pick = max((j for j, d in enumerate(dets) if j not in used and normalize_label(d.label) == normalize_label(sub.class_word)),
                           key=lambda j: dets[j].score, default=None)
                if pick is not None:
                    used.add(pick)
                result[s] = (pick, None)
        return result

    def _assemble(self, item: ScoreItem, data_root: Path, gen: Mapping[str, np.ndarray], output: DetectorOutput | None,
                  assigned: Mapping[int, tuple[int | None, float | None]] | None, crops: Mapping[tuple[int, str], np.ndarray],
                  refs: Mapping[str, Mapping[Path, np.ndarray]], ref_errors: Mapping[Path, str], text: np.ndarray | None,
                  size: tuple[int, int]) -> Score:
        sample = item.sample
        wants_identity = any(BY_NAME[m].identity for m in self.metrics)
        failures: list[str] = []
        if output is not None:
            failures.extend(output.problems)
            if not output.detections and not any(p.startswith("unparseable") for p in output.problems):
                failures.append(f"detector found none of {sorted({s.class_word for s in sample.subjects})}")
        subjects = []
        for s, sub in enumerate(sample.subjects):
            values: dict[str, float | None] = {}
            why: list[str] = []
            paths = [resolve_in_root(data_root, p) for p in sub.eval_images] if item.identity and wants_identity else []
            bad = [ref_errors[p] for p in paths if p in ref_errors]
            why.extend(bad)
            for metric, role, emb in (("clip_i", "clip", gen.get("clip")), ("dino", "dino", gen.get("dino")),
                                      ("clip_i_crop", "clip", crops.get((s, "clip"))), ("dino_crop", "dino", crops.get((s, "dino")))):
                if metric not in self.metrics:
                    continue
                vectors = [refs.get(role, {})[p] for p in paths if p in refs.get(role, {})]
                values[metric] = float(np.mean([float(emb @ v) for v in vectors])) if item.identity and emb is not None and vectors else None
                if metric.endswith("_crop") and item.identity and emb is None:
                    why.append("no target or detected box to crop")
            det_index, iou_value = (assigned or {}).get(s, (None, None))
            det_box = output.detections[det_index].box if output is not None and det_index is not None else None
            if "iou" in self.metrics:
                values["iou"] = iou_value if sub.box is not None and output is not None else None
            subjects.append(SubjectScore(sub.name, values, det_box, values.get("iou"), "; ".join(dict.fromkeys(why)) or None))
        metrics: dict[str, float | None] = {}
        for key in self._item_keys():
            if key == "clip_t":
                metrics[key] = float(gen["clip"] @ text) if text is not None else None
            else:
                metrics[key] = _mean(sub.metrics.get(key) for sub in subjects)
        failures.extend(f"subject {sub.name}: {sub.failure}" for sub in subjects if sub.failure and "no target or detected box" not in sub.failure)
        detections = tuple(
            {"label": d.label, "score": d.score, "box": list(d.box), "box_norm": [d.box[0] / size[0], d.box[1] / size[1], d.box[2] / size[0], d.box[3] / size[1]]}
            for d in (output.detections if output is not None else ())
        )
        return Score(sample.id, item.seed, metrics, tuple(subjects), output.raw if output is not None else None, detections,
                     tuple(dict.fromkeys(failures)), self.smoke)

    # -- aggregation ------------------------------------------------------------------------------

    def aggregate(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float | int | None]:
        """Means over items (failed items excluded), per split where the split occurs, plus AP over
        the run; metrics that do not apply are None."""
        out: dict[str, float | int | None] = {}
        split_of = {sid: s.split for sid, s in samples.items()}
        present = [sp for sp in SPLITS if any(split_of.get(sc.sample_id) == sp for sc in scores)]
        for key in self._item_keys():
            out[key] = _mean(sc.metrics.get(key) for sc in scores)
            for sp in present:
                out[f"{key}.{sp}"] = _mean(sc.metrics.get(key) for sc in scores if split_of.get(sc.sample_id) == sp)
        if "ap" in self.metrics:
            for suffix, subset in [("", scores)] + [(f".{sp}", [sc for sc in scores if split_of.get(sc.sample_id) == sp]) for sp in present]:
                stats = self._ap([sc for sc in subset if sc.sample_id in samples], samples)
                for k in AP_KEYS:
                    out[f"{k}{suffix}"] = stats.get(k)
        out["n_items"] = len(scores)
        out["n_failures"] = sum(1 for sc in scores if sc.failures)
        return out

    def _ap(self, scores: Sequence[Score], samples: Mapping[str, Sample]) -> dict[str, float]:
        images = []
        for sc in scores:
            sample = samples[sc.sample_id]
            if not sample.has_layout or sc.metrics.get("iou") is None:
                continue  # no boxes to compare against, or no detector output (failed item)
            w, h = sample.width, sample.height
            truths = [GroundTruth(to_pixels(sub.box, w, h), normalize_label(sub.class_word)) for sub in sample.subjects]
            dets = [Detected(to_pixels(d["box_norm"], w, h), normalize_label(d["label"]), float(d["score"])) for d in sc.detections]
            images.append(EvalImage((sc.sample_id, sc.seed), w, h, truths, dets))
        return average_precision(images, self.ap_backend) if images else {}
