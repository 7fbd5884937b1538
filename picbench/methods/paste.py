"""``paste``: each subject's first reference image pasted into its target box, back to front, on a
plain background.

It is a documented bound, not a generator: its layout is as good as a layout can be (every subject
fills exactly its box, in depth order), and its realism is as poor as an image can be (no scene, no
blending). Scores of a real method should fall below paste on position metrics and may beat it on
prompt alignment. Rules:

- ``fit="stretch"`` (default) resizes the reference to the box; ``"contain"`` keeps its aspect ratio
  and centres it in the box.
- Subjects are drawn from the largest depth rank (back) to rank 0 (front); subjects without a depth
  rank are drawn in list order, after the ranked ones (the compositing is
  ``picbench.imaging.paste_subjects``, shared with the paste-pairs builder).
- A sample without boxes (DreamBench) gets the fallback layout of ``Sample.with_fallback_layout``:
  one equal-width column per subject, left to right.
- The seed is ignored: paste is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageColor

from picbench.imaging import FITS, load_rgb, paste_subjects
from picbench.methods.base import Capabilities, Method
from picbench.records import Sample


class PasteMethod(Method):
    name = "paste"
    version = "1"
    capabilities = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=True)
    default_params = {"background": "#7f7f7f", "fit": "stretch"}
    seeded = False

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        if self.params["fit"] not in FITS:
            raise ValueError(f"method paste: fit must be one of {FITS}, got {self.params['fit']!r}")
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
