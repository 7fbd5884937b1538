"""Training pairs in, micro-batches out: stage filters, resolution buckets, grouping, a resumable order.

Pairs come from a pair set (:mod:`picbench.pairs`: bench JSONL whose samples carry a `target`).
Before any step runs, every pair of every stage is checked: layout (by the pair reader), and the
header of its target and reference images (exists, readable, a size), so a missing or unreadable
file fails with its path, pair and field. A file that is corrupt past its header is met later:
that pair is skipped, counted and named in the log, and the run goes on.

Each pair goes to the resolution bucket nearest its aspect ratio (the target is resized to the
bucket, not cropped, so its normalized boxes stay exact); each reference is fitted as at inference
(`conditioning.fit_reference`, UNO's long side by count). A micro-batch holds pairs of one bucket,
one reference count and equal reference token grids (token tensors must stack). The order is a
pure function of (seed, stage, epoch): micro-batch `m` of a stage is always the same, so a resumed
or multi-process run sees exactly the batches an uninterrupted single process sees.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from picbench.errors import BenchFormatError
from picbench.imaging import load_rgb
from picbench.pairs import pairs_file, read_pairs, reference_paths, target_path
from picbench.records import Bench, Sample
from picbench.reference_impl.conditioning import PATCH, fit_reference, uno_ref_long_side
from picbench.reference_impl.training.config import Config, StageConfig


@dataclass(frozen=True)
class PairEntry:
    """One pair as the trainer plans with it: where its files are and how its tokens are shaped."""

    sample: Sample
    target: Path
    references: tuple[Path, ...]
    bucket: tuple[int, int]
    ref_sizes: tuple[tuple[int, int], ...]
    """Fitted reference sizes in pixels (width, height)."""

    @property
    def group(self) -> tuple:
        return (self.bucket, self.ref_sizes)


@dataclass(frozen=True)
class LoadedPair:
    prompt: str
    target: Image.Image
    references: tuple[Image.Image, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    depths: tuple[int, ...]


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log ratio) to width / height."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), b))


def fitted_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The size `fit_reference` gives an image of this size (without decoding it)."""
    if width >= height:
        new_w, new_h = long_side, int(long_side / width * height)
    else:
        new_w, new_h = int(long_side / height * width), long_side
    return max(PATCH, new_w) // PATCH * PATCH, max(PATCH, new_h) // PATCH * PATCH


def _header_size(path: Path, sample: Sample, field: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            size = im.size
    except Image.DecompressionBombError as exc:
        raise BenchFormatError(
            f"image {path} is too large to decode safely ({exc}); downscale it", sample_id=sample.id, field=field
        ) from None
    except FileNotFoundError:
        raise BenchFormatError(f"image {path} does not exist", sample_id=sample.id, field=field) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BenchFormatError(f"image {path} cannot be read: {exc}", sample_id=sample.id, field=field) from None
    if Image.MAX_IMAGE_PIXELS and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
        raise BenchFormatError(
            f"image {path} is too large to decode safely ({size[0]}x{size[1]} pixels, more than PIL's decompression-bomb "
            f"limit of {Image.MAX_IMAGE_PIXELS}); downscale it",
            sample_id=sample.id,
            field=field,
        )
    return size


class PairSource:
    """The pair set, checked, with each stage's pairs planned into buckets and groups."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.path = config.resolve(config.data.pairs)
        self.file = pairs_file(self.path)
        self.pairs: Bench = read_pairs(self.path)
        self.pairs_hash = hashlib.sha256(self.file.read_bytes()).hexdigest()[:16]
        """What a checkpoint records of the pair set, so a resume can tell it changed."""
        self.entries = [self._entry(s) for s in self.pairs.samples]
        self.by_stage = {stage.name: [e for e in self.entries if _selected(e.sample, stage)] for stage in config.stages}
        for stage in config.stages:
            if len(self.by_stage[stage.name]) < config.train.micro_batch:
                raise BenchFormatError(
                    f"stage {stage.name!r} selects {len(self.by_stage[stage.name])} pair(s) (split {stage.split!r}, "
                    f"{stage.min_subjects}..{stage.max_subjects} subjects), fewer than train.micro_batch {config.train.micro_batch}",
                    file=self.path,
                )

    def _entry(self, sample: Sample) -> PairEntry:
        target = target_path(self.pairs, sample)
        refs = tuple(reference_paths(self.pairs, sample))
        _header_size(target, sample, "target")
        long_side = self.config.data.ref_long_side or uno_ref_long_side(len(refs))
        sizes = tuple(fitted_size(*_header_size(p, sample, f"subjects[{i}].references[0]"), long_side) for i, p in enumerate(refs))
        return PairEntry(sample, target, refs, nearest_bucket(sample.width, sample.height, self.config.data.buckets), sizes)

    def load(self, entry: PairEntry) -> LoadedPair:
        """Decode a pair's images, fitted as the model sees them (raises ImageError or OSError on a bad file)."""
        long_side = self.config.data.ref_long_side or uno_ref_long_side(len(entry.references))
        target = load_rgb(entry.target).resize(entry.bucket, Image.Resampling.LANCZOS)
        refs = tuple(fit_reference(load_rgb(p), long_side) for p in entry.references)
        subjects = entry.sample.subjects
        return LoadedPair(entry.sample.prompt, target, refs, tuple(s.box for s in subjects), tuple(int(s.depth) for s in subjects))


def _selected(sample: Sample, stage: StageConfig) -> bool:
    n = len(sample.subjects)
    return (stage.split == "all" or sample.split == stage.split) and stage.min_subjects <= n <= stage.max_subjects


class MicroBatchOrder:
    """Micro-batch `m` of a stage as a pure function of (seed, stage, m): shuffled each epoch,
    grouped (one bucket and reference shape per micro-batch), incomplete groups dropped."""

    def __init__(self, entries: Sequence[PairEntry], micro_batch: int, seed: int, stage: str) -> None:
        self.entries, self.micro_batch, self.seed, self.stage = list(entries), micro_batch, seed, stage
        self._epochs: list[list[list[PairEntry]]] = []

    def _epoch(self, epoch: int) -> list[list[PairEntry]]:
        while len(self._epochs) <= epoch:
            rng = random.Random(f"{self.seed}/{self.stage}/{len(self._epochs)}")
            order = list(range(len(self.entries)))
            rng.shuffle(order)
            open_groups: dict[tuple, list[PairEntry]] = {}
            batches: list[list[PairEntry]] = []
            for i in order:
                group = open_groups.setdefault(self.entries[i].group, [])
                group.append(self.entries[i])
                if len(group) == self.micro_batch:
                    batches.append(group)
                    open_groups[self.entries[i].group] = []
            if not batches:
                raise BenchFormatError(
                    f"stage {self.stage!r}: no {self.micro_batch} pairs share a bucket and reference shape, so no micro-batch "
                    "can be formed; lower train.micro_batch or add buckets"
                )
            self._epochs.append(batches)
        return self._epochs[epoch]

    def __getitem__(self, m: int) -> list[PairEntry]:
        epoch = 0
        while m >= len(self._epoch(epoch)):
            m -= len(self._epoch(epoch))
            epoch += 1
        return self._epoch(epoch)[m]
