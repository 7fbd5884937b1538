"""``paste-pairs``: a small real pair set with no generative model, the layout step of BMPDS alone.

DreamBench subjects are pasted at seeded random boxes onto MS-Bench scene images
(``msbench/images/scene/``: barn, forest, mountain, waterfall), back to front. It is a fixture and
a sanity set: a model trained on it must learn to put references in their boxes. Rules, all drawn
from ``random.Random(seed)`` so the same seed gives the same bytes (pairs.jsonl and every PNG):

* multi pairs: 2 subjects, or 3 with ``THREE_SUBJECT_SHARE``; boxes, overlaps (``OVERLAP_SHARE``
  put the first two boxes over each other) and depth ranks by positionic-open's rules
  (``picbench.layouts.multi_layout``); single pairs: one box by its single rule;
* compositing: ``picbench.imaging.paste_subjects`` (stretch to the box, back to front) onto
  the scene, centre-cropped and resized to ``SIZE`` square;
* the pasted picture of a subject is one of its DreamBench images *other than* its reference
  (drawn by the rng), so a target is never a copy of its reference; the reference is the image
  UNO's DreamBench list gives (as in positionic-open), copied byte for byte into the pair set;
* prompt "<a c0>, <a c1> and <a c2> with a <scene> in the background" (MS-Bench's scene
  template), subjects in list order.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageOps

from picbench.atomic import atomic_write
from picbench.benches.dreambench import PROMPTS_FILE, parse_prompts_and_classes, single_references, subject_images
from picbench.benches.msbench import read_spec, subject_files
from picbench.errors import PicbenchError
from picbench.imaging import load_rgb, paste_subjects
from picbench.layouts import OVERLAP_SHARE, SINGLE_AREA, THREE_SUBJECT_SHARE, listed, multi_layout, noun_phrase, random_box
from picbench.pairs import TARGETS_DIR, write_pairs
from picbench.paths import resolve_in_root
from picbench.records import PAIRS_KIND, Bench, Sample, Subject

NAME = "paste-pairs"
VERSION = "1"
SIZE = 512
DEFAULT_MULTI = 24
DEFAULT_SINGLE = 8


def scene_images(data_root: Path) -> list[tuple[str, str]]:
    """(scene class word, relative path) of every MS-Bench scene image present, sorted."""
    spec = read_spec(data_root)
    types, paths, missing = subject_files(data_root, spec)
    scenes = [(spec["subject_classes"][n], paths[n]) for n in sorted(types) if types[n] == "scene" and n not in missing]
    if not scenes:
        raise PicbenchError(f"no MS-Bench scene images under {data_root}/msbench/images/scene: paste-pairs needs at least one")
    return scenes


def build_paste_pairs(data_root: Path, out: Path, seed: int = 0, n_multi: int = DEFAULT_MULTI, n_single: int = DEFAULT_SINGLE) -> Bench:
    """Build the pair set into the folder ``out`` (see the module docstring); returns it rooted there."""
    if n_multi < 0 or n_single < 0 or n_multi + n_single == 0:
        raise PicbenchError(f"paste-pairs needs a positive number of pairs, got {n_multi} multi and {n_single} single")
    data_root, out = Path(data_root), Path(out)
    spec = parse_prompts_and_classes(data_root / PROMPTS_FILE)
    refs = single_references(data_root)
    names = sorted(spec.classes)
    scenes = scene_images(data_root)
    rng = random.Random(seed)
    samples: list[Sample] = []
    plans = [("single", 1)] * n_single + [("multi", 3 if rng.random() < THREE_SUBJECT_SHARE else 2) for _ in range(n_multi)]
    for i, (split, k) in enumerate(plans):
        chosen = rng.sample(names, k)
        scene_word, scene = rng.choice(scenes)
        if split == "single":
            overlap, boxes, depths = False, [random_box(rng, SINGLE_AREA)], [0]
        else:
            overlap = rng.random() < OVERLAP_SHARE
            boxes, depths = multi_layout(rng, k, overlap)
        pasted = [rng.choice([p for p in subject_images(data_root, n) if p != refs[n]] or [refs[n]]) for n in chosen]
        nouns = [noun_phrase(spec.classes[n]) for n in chosen]
        sample_id = f"paste-{i:04d}-{'+'.join(chosen)}"
        subjects = tuple(Subject(n, spec.classes[n], (refs[n],), (), b, d) for n, b, d in zip(chosen, boxes, depths))
        sample = Sample(
            sample_id,
            f"{listed(nouns)} with a {scene_word} in the background",
            SIZE,
            SIZE,
            split,
            subjects,
            {"builder": NAME, "seed": seed, "scene": scene, "pasted": pasted, "overlap": overlap},
            target=f"{TARGETS_DIR}/{sample_id}.png",
        )
        _write_target(sample, data_root, out, pasted)
        samples.append(sample)
    pairs = Bench(
        NAME,
        VERSION,
        tuple(samples),
        data_root,
        description=(
            f"paste-pairs (seed {seed}): {n_single} single + {n_multi} multi training pairs, DreamBench subjects pasted at "
            "seeded boxes, back to front, onto MS-Bench scenes; no generative model (a fixture and a layout sanity set)."
        ),
        kind=PAIRS_KIND,
    )
    return write_pairs(pairs, out)


def _write_target(sample: Sample, data_root: Path, out: Path, pasted: list[str]) -> None:
    scene = ImageOps.fit(
        load_rgb(resolve_in_root(data_root, str(sample.meta["scene"]))), (sample.width, sample.height), Image.Resampling.BICUBIC
    )
    to_paste = replace(sample, subjects=tuple(replace(s, references=(p,)) for s, p in zip(sample.subjects, pasted)))
    image = paste_subjects(scene, to_paste, data_root)
    assert sample.target is not None
    with atomic_write(out / sample.target, "wb") as fh:
        image.save(fh, format="PNG")
