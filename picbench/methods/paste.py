"""``paste``: each subject's first reference image pasted into its target box, back to front, on a
plain background.

It is a documented bound, not a generator: its layout is as good as a layout can be (every subject
fills exactly its box, in depth order), and its realism is as poor as an image can be (no scene, no
blending). Scores of a real method should fall below paste on position metrics and may beat it on
prompt alignment. Rules:

- ``fit="stretch"`` (default) resizes the reference to the box; ``"contain"`` keeps its aspect ratio
  and centres it in the box.
- Subjects are drawn from the largest depth rank (back) to rank 0 (front); subjects without a depth
  rank are drawn in list order, after the ranked ones.
- A sample without boxes (DreamBench) gets the fallback layout of ``Sample.with_fallback_layout``:
  one equal-width column per subject, left to right.
- The seed is ignored: paste is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageColor

from picbench.imaging import load_rgb
from picbench.methods.base import Capabilities, Method
from picbench.paths import resolve_in_root
from picbench.records import BoxXYXY, Sample, Subject

_FITS = ("stretch", "contain")


class PasteMethod(Method):
    name = "paste"
    version = "1"
    capabilities = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=True)
    default_params = {"background": "#7f7f7f", "fit": "stretch"}
    seeded = False

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        if self.params["fit"] not in _FITS:
            raise ValueError(f"method paste: fit must be one of {_FITS}, got {self.params['fit']!r}")
        try:
            self._background = ImageColor.getrgb(str(self.params["background"]))[:3]
        except ValueError:
            raise ValueError(f"method paste: background {self.params['background']!r} is not a colour (e.g. '#7f7f7f', 'white')") from None
        self._read_reference = lru_cache(maxsize=64)(load_rgb)

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        return [self._paste(sample, data_root) for sample in samples]

    def _paste(self, sample: Sample, data_root: Path) -> Image.Image:
        canvas = Image.new("RGB", (sample.width, sample.height), self._background)
        return paste_subjects(canvas, sample, data_root, fit=self.params["fit"], load=self._read_reference)


def paste_subjects(
    canvas: Image.Image, sample: Sample, data_root: Path, *, fit: str = "stretch", load: Callable[[Path], Image.Image] = load_rgb
) -> Image.Image:
    """Paste each subject's first reference into its box on ``canvas`` (the sample's size), back
    to front; shared by this method and the paste-pairs builder (``picbench.pairs.paste``)."""
    for subject, box in back_to_front(sample):
        x0, y0, x1, y1 = (
            round(box[0] * sample.width),
            round(box[1] * sample.height),
            round(box[2] * sample.width),
            round(box[3] * sample.height),
        )
        w, h = max(1, x1 - x0), max(1, y1 - y0)
        ref = load(resolve_in_root(data_root, subject.references[0]))
        if fit == "stretch":
            canvas.paste(ref.resize((w, h), Image.Resampling.BICUBIC), (x0, y0))
        else:
            scale = min(w / ref.width, h / ref.height)
            fitted = ref.resize((max(1, round(ref.width * scale)), max(1, round(ref.height * scale))), Image.Resampling.BICUBIC)
            canvas.paste(fitted, (x0 + (w - fitted.width) // 2, y0 + (h - fitted.height) // 2))
    return canvas


def back_to_front(sample: Sample) -> list[tuple[Subject, BoxXYXY]]:
    """(subject, box) from the largest depth rank to rank 0; unranked subjects last, in list order."""
    sample = sample.with_fallback_layout()
    order = sorted(range(len(sample.subjects)), key=lambda i: (sample.subjects[i].depth is None, -(sample.subjects[i].depth or 0), i))
    return [(sample.subjects[i], sample.subjects[i].box) for i in order]  # type: ignore[misc]
