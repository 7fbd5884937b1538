"""The samples every suite runs on: real DreamBench references, one two-subject sample whose boxes
overlap at different depth ranks, and one single-subject portrait (another size and aspect)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from picbench.paths import find_data_dir
from picbench.records import Sample, Subject

DOG, BACKPACK = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/backpack/00.jpg"


def conformance_samples() -> list[Sample]:
    pair = Sample(
        "pair",
        "a dog and a backpack in the jungle",
        64,
        64,
        "multi",
        (
            Subject("dog", "dog", (DOG,), box=(0.05, 0.3, 0.55, 0.95), depth=0),
            Subject("backpack", "backpack", (BACKPACK,), box=(0.4, 0.1, 0.95, 0.7), depth=1),
        ),
    )
    portrait = Sample(
        "portrait",
        "a backpack on a beach",
        48,
        64,
        "single",
        (Subject("backpack", "backpack", (BACKPACK,), box=(0.1, 0.2, 0.9, 0.8), depth=0),),
    )
    return [pair, portrait]


def data_root(explicit: str | Path | None = None) -> Path:
    """The data root holding DreamBench (``picbench data fetch``): the argument, else picbench's lookup."""
    root = find_data_dir(explicit)
    assert root is not None
    if not (root / DOG).is_file():
        raise AssertionError(f"the conformance suites need DreamBench's images under {root} ({DOG} is missing): run `picbench data fetch`")
    return root


def write_sample_images(folder: Path, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """Random pixels for every conformance sample as ``FOLDER/seed<S>/<id>.png``, other pixels per
    seed: the input of a method that scores images already on disk (``images``)."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for sample in conformance_samples():
            (folder / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (sample.height, sample.width, 3), dtype=np.uint8)).save(
                folder / f"seed{seed}" / f"{sample.id}.png"
            )
    return folder
