"""picbench's reference-file handling (EXIF orientation, transparency on white, palette to RGB) against
the authors' `Image.open` as it is: identical for plain RGB files, which every DreamBench and
MS-Bench reference is; different only for the files picbench's handling exists for (docs/methods.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from picbench.imaging import load_rgb
from picbench.reference_impl.conditioning import fit_reference


def _unos_preprocess_ref(raw_image: Image.Image, long_size: int) -> Image.Image:
    """bytedance/UNO @ d305981 uno/flux/pipeline.py:70-98, written out: resize first, RGB last."""
    image_w, image_h = raw_image.size
    if image_w >= image_h:
        new_w, new_h = long_size, int((long_size / image_w) * image_h)
    else:
        new_h, new_w = long_size, int((long_size / image_h) * image_w)
    raw_image = raw_image.resize((new_w, new_h), resample=Image.LANCZOS)
    target_w, target_h = new_w // 16 * 16, new_h // 16 * 16
    left, top = (new_w - target_w) // 2, (new_h - target_h) // 2
    return raw_image.crop((left, top, left + target_w, top + target_h)).convert("RGB")


def _reference_files(data_dir: Path) -> list[Path]:
    files = sorted((data_dir / "dreambench" / "dataset").rglob("*.jpg"))
    files += sorted(p for p in (data_dir / "msbench" / "images").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files


def test_every_dreambench_and_msbench_reference_goes_through_both_paths_identically(data_dir: Path) -> None:
    files = _reference_files(data_dir)
    assert len(files) >= 190  # 197 in the shared data: DreamBench's 30 subjects and MS-Bench's images
    for path in files:
        ours = load_rgb(path)
        with Image.open(path) as raw:
            raw.load()
            assert raw.getexif().get(0x0112, 1) in (0, 1), f"{path}: EXIF-rotated"
            assert raw.mode == "RGB" or (raw.mode == "RGBA" and raw.getchannel("A").getextrema() == (255, 255)), path
            assert np.array_equal(np.asarray(ours), np.asarray(raw.convert("RGB"))), path
            assert np.array_equal(np.asarray(fit_reference(ours, 320)), np.asarray(_unos_preprocess_ref(raw, 320))), path


@pytest.mark.parametrize("kind", ["palette", "exif-rotated", "transparent"])
def test_files_that_are_not_plain_rgb_differ_from_the_authors_path(tmp_path: Path, kind: str) -> None:
    """What docs/methods.md states: for these files the authors' code sees other pixels than picbench."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = tmp_path / ("ref.jpg" if kind == "exif-rotated" else "ref.png")
    if kind == "palette":
        Image.fromarray(pixels).quantize(16).save(path)
    elif kind == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        Image.fromarray(pixels).save(path, exif=exif)
    else:
        alpha = np.zeros((48, 64, 1), dtype=np.uint8)
        Image.fromarray(np.concatenate([pixels, alpha], axis=2)).save(path)
    ours = fit_reference(load_rgb(path), 32)
    with Image.open(path) as raw:
        theirs = _unos_preprocess_ref(raw, 32)
    assert ours.size != theirs.size or not np.array_equal(np.asarray(ours), np.asarray(theirs))
