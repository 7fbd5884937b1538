"""Forward scheduling and embedding caching for the metric engine.

Every forward pass is batched; on CPU every model's chunks run at once on single-threaded workers
while the next batch is decoded (:mod:`picbench.metrics.parallel`). Each reference image and prompt
is encoded once per model and kept in memory and in the on-disk
:class:`~picbench.metrics.cache.EmbeddingCache` (keyed by content hash); a reference refused once is
not decoded again. Waiting is counted: ``data_wait_seconds`` for decoded images, ``forward_seconds``
for forward passes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from picbench.environment import environment_cause
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.decoding import ReferenceImages
from picbench.metrics.detectors import Detector, DetectorOutput
from picbench.metrics.encoders import CPU_FORWARD_CHUNK, ClipEncoder, Encoder
from picbench.metrics.parallel import decode_batches, encode_all, torch_workers
from picbench.records import file_sha256


def detect_or_fail(detector: Detector, images: list[Image.Image], classes: list[list[str]]) -> list[DetectorOutput]:
    """The images' detections in one ``detect_batch`` call; when it raises, image by image, so a
    detector that fails on one image fails that item, not the run. A lost device or memory is the
    run's problem and propagates."""
    try:
        outputs = list(detector.detect_batch(images, classes))
        if len(outputs) != len(images):
            raise ValueError(f"detect_batch returned {len(outputs)} outputs for {len(images)} images")
        return outputs
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        if environment_cause(exc) is not None:  # out of memory, a lost device: the run's problem, never stored
            raise
        if len(images) > 1:
            return [out for image, asked in zip(images, classes) for out in detect_or_fail(detector, [image], [asked])]
        return [DetectorOutput((), None, (f"detector {detector.name} failed: {type(exc).__name__}: {exc}",), failed=True)]


class Scheduler:
    """Where and when one engine's forward passes and decoding run, and its embedding caches."""

    def __init__(
        self,
        *,
        device: str,
        batch_size: int,
        num_workers: int,
        n_encoders: int,
        own_models: bool,
        cache: EmbeddingCache | None,
    ) -> None:
        """``own_models``: a detector or a metric's own model runs on the calling thread's OpenMP threads."""
        self.device, self.batch_size, self.num_workers = device, batch_size, num_workers
        self.n_encoders, self.own_models, self.cache = n_encoders, own_models, cache
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._sha: dict[Path, str] = {}
        self._reference_errors: dict[Path, str] = {}
        self.reference_encodes = 0  # reference images actually run through a model (0 on a warm cache)
        self.data_wait_seconds = 0.0  # time spent waiting for decoded images (decoding threads, or in-process decoding)
        self.forward_seconds = 0.0  # wall time spent waiting for forward passes (encoders and detector)
        self.pool: ThreadPoolExecutor | None = None  # the forward workers of the score call under way (CPU)
        self._pool_torch_threads = 1

    @contextmanager
    def forward_workers(self) -> Iterator[None]:
        """On CPU, the threads one ``score`` call runs its forward passes on (see
        :mod:`picbench.metrics.parallel`): one single-threaded worker per core, fewer (with more
        torch threads each) where a batch has fewer chunks than there are cores."""
        if torch.device(self.device).type != "cpu":
            yield
            return
        cores = torch.get_num_threads()
        chunks = max(1, self.n_encoders) * -(-self.batch_size // CPU_FORWARD_CHUNK)
        workers = max(1, min(cores, chunks))
        self._pool_torch_threads = max(1, cores // workers)
        with torch_workers(workers, self._pool_torch_threads, "picbench-forward") as pool:
            self.pool = pool
            try:
                yield
            finally:
                self.pool = None

    @property
    def overlap(self) -> bool:
        """Decode the next batch during this one's forward passes, unless OpenMP threads would
        share the cores with the decoders (see decode_batches): forward workers of several torch
        threads each, or a detector or a metric's own model, which run on the calling thread."""
        if torch.device(self.device).type != "cpu":
            return True
        return self.pool is not None and self._pool_torch_threads == 1 and not self.own_models

    def batches(self, jobs: Any, num_workers: int | None = None) -> Iterator[list[Any]]:
        """The decoded batches of ``jobs`` (:func:`~picbench.metrics.parallel.decode_batches`), the
        wait for each counted in ``data_wait_seconds``."""
        found = decode_batches(jobs, self.batch_size, self.num_workers if num_workers is None else num_workers, self.overlap)
        while True:
            start = time.perf_counter()
            batch = next(found, None)
            self.data_wait_seconds += time.perf_counter() - start
            if batch is None:
                return
            yield batch

    def encode(self, encoders: Mapping[str, Encoder], work: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, np.ndarray]:
        """role -> the embeddings of its preprocessed images, every model's forward passes at once on CPU."""
        stacked = [
            (encoders[role].encode_images, torch.stack(list(tensors)) if tensors else torch.zeros(0)) for role, tensors in work.items()
        ]
        return dict(zip(work, self.forward(stacked)))

    def forward(self, work: Sequence[tuple[Callable[[Any], torch.Tensor], Any]]) -> list[np.ndarray]:
        """:func:`~picbench.metrics.parallel.encode_all` on this score call's forward workers (CPU)
        or the calling thread, its wall time counted in ``forward_seconds``."""
        start = time.perf_counter()
        try:
            return encode_all(work, self.pool, self.batch_size)
        finally:
            self.forward_seconds += time.perf_counter() - start

    def detect(self, detector: Detector, images: list[Image.Image], classes: list[list[str]]) -> list[DetectorOutput]:
        """:func:`detect_or_fail`, its wall time counted in ``forward_seconds``."""
        start = time.perf_counter()
        try:
            return detect_or_fail(detector, images, classes)
        finally:
            self.forward_seconds += time.perf_counter() - start

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

    def references(
        self, encoders: Mapping[str, Encoder], paths: Iterable[Path]
    ) -> tuple[dict[str, dict[Path, np.ndarray]], dict[Path, str]]:
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
        found = {role: self._cached(enc.model_id, list(keys.values())) for role, enc in encoders.items()}
        todo = [p for p, k in keys.items() if any(k not in found[role] for role in encoders)]
        if todo:
            jobs = ReferenceImages(todo, {role: enc.preprocess for role, enc in encoders.items()})
            for batch in self.batches(jobs, min(self.num_workers, len(todo))):
                refused = {p: decoded for p, decoded in batch if isinstance(decoded, str)}
                errors.update(refused)
                self._reference_errors.update(refused)
                ok = [(p, tensors) for p, tensors in batch if isinstance(tensors, dict)]
                need = {role: [(p, t[role]) for p, t in ok if keys[p] not in found[role]] for role in encoders}
                vectors = self.encode(encoders, {role: [t for _, t in pairs] for role, pairs in need.items() if pairs})
                for role, vecs in vectors.items():
                    self.reference_encodes += len(vecs)
                    fresh = {keys[p]: v for (p, _), v in zip(need[role], vecs)}
                    self._store(encoders[role].model_id, fresh)
                    found[role].update(fresh)
        result = {role: {p: found[role][k] for p, k in keys.items() if k in found[role]} for role in encoders}
        return result, errors

    def prompts(self, clip: ClipEncoder, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """prompt -> its CLIP text embedding, each prompt encoded once per model."""
        model_id = f"{clip.model_id}:text"
        keys = {p: hashlib.sha256(p.encode()).hexdigest() for p in dict.fromkeys(prompts)}
        found = self._cached(model_id, list(keys.values()))
        todo = [p for p, k in keys.items() if k not in found]
        if todo:
            fresh = {keys[p]: v for p, v in zip(todo, self.forward([(clip.encode_texts, todo)])[0])}
            self._store(model_id, fresh)
            found.update(fresh)
        return {p: found[k] for p, k in keys.items()}
