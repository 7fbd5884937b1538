"""``images``: score images that some other program already generated.

Expected layout (``--param dir=FOLDER``)::

    FOLDER/seed<SEED>/<SAMPLE_ID>.<png|jpg|jpeg|webp>

one file per sample and seed, e.g. ``gens/seed0/dog_007.png`` for sample ``dog_007`` and seed 0 (a
sample id holding ``/`` maps to sub-folders). A missing, ambiguous (two extensions) or corrupt file
is a failure of that sample, recorded and reported, never a crash. An image may have any size of
the sample's aspect ratio (e.g. 2048x2048 for a 1024x1024 sample): it is scored at its own size,
boxes being normalized, and the run's samples.jsonl records that size (``image_size``);
``--param resize=true`` resizes it to the sample's width x height first (bicubic). An image of
another aspect ratio fails, naming the sample and both sizes. Each item's cache key holds its own
file (path, size, content hash; or why there is none), so adding, replacing or removing one image
re-scores only that image's items, and a file no sample reads changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from picbench.errors import ImageError, UnsafePathError
from picbench.imaging import load_rgb
from picbench.methods.base import Capabilities, Method, same_aspect
from picbench.paths import resolve_contained
from picbench.records import Sample, file_sha256

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


class ImagesMethod(Method):
    name = "images"
    version = "2"  # 2: each item keyed by its own file (1: by the whole folder's listing)
    capabilities = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=True)
    default_params = {"dir": None, "resize": False}
    exact_size = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.params["dir"]:
            raise ValueError("method images needs --param dir=FOLDER holding FOLDER/seed<SEED>/<SAMPLE_ID>.png")
        self.folder = Path(self.params["dir"]).expanduser().resolve()
        if not self.folder.is_dir():
            raise ValueError(f"method images: folder {self.folder} does not exist")
        self.params["dir"] = str(self.folder)
        self.params["resize"] = str(self.params["resize"]).lower() in ("1", "true", "yes")

    def item_params(self, sample: Sample, seed: int) -> dict[str, Any]:
        """The one file this item reads: its path in the folder, size and SHA-256 (or, with no
        usable file, why), so that only a change to that file changes the item's key."""
        try:
            path = self.image_path(sample, seed)
        except ImageError as exc:
            return {"image": None, "problem": str(exc)}
        return {"image": os.path.relpath(path, self.folder), "size": path.stat().st_size, "sha256": file_sha256(path)}

    def image_path(self, sample: Sample, seed: int) -> Path:
        """The one file holding ``sample`` at ``seed``; ImageError when none or several exist, or
        when the id cannot name a file inside ``seed<N>/`` (``.``, ``..``, empty parts, absolute, or
        a symlink leading out)."""
        seed_dir = self.folder / f"seed{seed}"
        if any(part in ("", ".", "..") for part in sample.id.replace("\\", "/").split("/")):
            raise ImageError(f"sample id {sample.id!r} cannot name a file inside {seed_dir}: it has an empty, '.' or '..' part")
        try:
            candidates = [resolve_contained(seed_dir, sample.id + ext) for ext in EXTENSIONS]
        except UnsafePathError as exc:
            raise ImageError(f"sample id {sample.id!r} cannot name a file inside {seed_dir}: {exc}") from None
        stem = seed_dir / sample.id
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise ImageError(f"no image for sample {sample.id!r} seed {seed}: expected {stem}.png (or {', '.join(EXTENSIONS[1:])})")
        if len(found) > 1:
            raise ImageError(f"several images for sample {sample.id!r} seed {seed}: {', '.join(p.name for p in found)}; keep one")
        return found[0]

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        images = []
        for sample in samples:
            path = self.image_path(sample, seed)
            image = load_rgb(path)
            if not same_aspect(image.size, (sample.width, sample.height)):
                raise ImageError(
                    f"sample {sample.id!r} seed {seed}: {path} is {image.width}x{image.height}, the bench's sample is "
                    f"{sample.width}x{sample.height}: another aspect ratio, so its boxes cannot be mapped onto it"
                )
            if self.params["resize"] and image.size != (sample.width, sample.height):
                image = image.resize((sample.width, sample.height), Image.Resampling.BICUBIC)
            images.append(image)
        return images
