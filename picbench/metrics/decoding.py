"""Decoding for the metric engine: each generated image and each reference is decoded once and
preprocessed for every model (whole image, target-box crops, the metrics' regions), refusing what
cannot be scored (no image, unreadable, non-finite, blank) with a reason that names it. The job
classes are index-able so :func:`picbench.metrics.parallel.decode_batches` runs them on threads."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from picbench.errors import ImageError
from picbench.imaging import load_rgb
from picbench.metrics.boxes import to_pixels
from picbench.records import BoxXYXY, Sample


@dataclass(frozen=True)
class ScoreItem:
    """One generation to score: the sample and seed it answers, and its image (a file, or the fresh
    generation in memory) or the reason there is none."""

    sample: Sample
    seed: int
    image_path: Path | None  # None: the method failed to produce an image
    uses_references: bool = True  # False for methods given no references: identity metrics are not applicable (None)
    failure: str | None = None  # generation failure reason, carried into the Score
    image: Image.Image | None = None  # the fresh generation itself: scored from memory, its file not decoded again


@dataclass
class DecodedItem:
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


class GeneratedImages:
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

    def __getitem__(self, index: int) -> DecodedItem:
        item = self.items[index]
        if item.failure is not None or (item.image_path is None and item.image is None):
            return DecodedItem(index, error=item.failure or "the method produced no image")
        try:
            if item.image is not None:
                image = refuse_blank(item.image.convert("RGB"), f"of sample {item.sample.id} seed {item.seed}")
            else:
                image = decode_generated(Path(item.image_path))  # type: ignore[arg-type]
        except ImageError as exc:
            return DecodedItem(index, error=str(exc))
        out = DecodedItem(index, image=image if self.keep_image else None, size=image.size)
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


class ReferenceImages:
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
