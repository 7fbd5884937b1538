"""A benchmark Sample as PositionIC's conditioning inputs: reference images, boxes and depth ranks.

One rule for the `positionic` and `uno` methods and for the trainer's validation, so a sample
reaches the pipeline the same way in a run and during training:
- each subject gives its first reference image (read with `load_rgb` from the data root) and its
  box; reference k is paired with box k;
- depth ranks come from the subjects; a sample with no ranks uses the listing order (first =
  front); a sample where some subjects have a rank and some do not is refused;
- a sample without boxes (DreamBench), or a caller that takes no layout (UNO), gets no boxes and
  no ranks: references in context with UnoPE only.
The layout is checked (:func:`sample_layout`, no file read) before any reference is read; a bad
one is a `BenchFormatError` naming the sample and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from PIL import Image

from picbench.errors import BenchFormatError
from picbench.imaging import load_rgb
from picbench.paths import resolve_in_root
from picbench.records import BoxXYXY, Sample
from picbench.reference_impl.layout import validate_layout


class SampleLayout(NamedTuple):
    """Normalized xyxy boxes and depth ranks (0 = front), one per subject, in subject order."""

    boxes: list[BoxXYXY]
    depths: list[int]


class SampleInputs(NamedTuple):
    """What the pipeline takes from a sample: `references` plus, with a layout, `boxes` and `depths`."""

    references: list[Image.Image]
    boxes: list[BoxXYXY] | None
    depths: list[int] | None


def sample_layout(sample: Sample) -> SampleLayout | None:
    """The sample's checked boxes and depth ranks; None when it has no boxes."""
    if not sample.has_layout:
        return None
    boxes = [s.box for s in sample.subjects if s.box is not None]
    ranks = [s.depth for s in sample.subjects]
    if all(d is None for d in ranks):
        depths = list(range(len(boxes)))
    elif any(d is None for d in ranks):
        raise BenchFormatError("some subjects have a depth rank and some do not", sample_id=sample.id, field="subjects.depth")
    else:
        depths = [d for d in ranks if d is not None]
    try:
        validate_layout(boxes, depths, len(sample.subjects), sample.width, sample.height)
    except ValueError as exc:
        raise BenchFormatError(str(exc), sample_id=sample.id, field="subjects") from exc
    return SampleLayout(boxes, depths)


def sample_inputs(sample: Sample, data_root: Path, *, with_layout: bool = True) -> SampleInputs:
    """References (one per subject) and, when `with_layout` and the sample has boxes, its checked layout."""
    layout = sample_layout(sample) if with_layout else None
    refs = [load_rgb(resolve_in_root(data_root, s.references[0])) for s in sample.subjects]
    return SampleInputs(refs, *(layout if layout is not None else (None, None)))
