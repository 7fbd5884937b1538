"""MS-Bench (MS-Diffusion) as the ``msbench`` bench: 13 combination types with fixed layouts.

The combination rule (it reproduces the authors' stated 1148 combinations / 4488 samples exactly):

* A subject's type is the folder of its image under ``msbench/images/<type>/``; subjects come from
  ``subject_classes``. A subject with no image file (``living/cat1.jpg`` is missing from the
  snapshot) still belongs to ``living``: the only ``subject_classes`` names without an image are
  placed by their class word (``cat``/``dog`` -> ``living``).
* For a type such as ``living_object_scene`` the subjects are the Cartesian product of the
  types' subject lists; where a type repeats (``living_living``, ``object_object_object``) the
  subjects are unordered combinations without repetition (``itertools.combinations``).
  Counts: 10 living, 10 object, 4 scene, 5 upwearing, 6 midwearing, 3 downwearing,
  2 wholewearing -> 45+100+45+50+60+20+18+40+40+120+120+400+90 = 1148 combinations.
* Each combination is crossed with its type's prompt templates (6, or 1 for the scene types):
  668 x 6 + 480 x 1 = 4488 samples; ``{0}, {1}, {2}`` are the class words in box order.

The 112 combinations with ``cat1`` (452 samples) are kept so the counts stay the authors': the
loader warns about the missing file and ``picbench validate msbench`` lists it as an error.

Depth (0 = front-most), a rule per subject role, ties broken by box order:
wearables (``*wearing``) are in front (0), then living and object subjects, then scenes (the
full-frame background, always last). So in the fully overlapping ``living_midwearing`` layout the
garment is in front of its wearer, and a dress covers the animal wearing it. Where boxes do not
overlap the order carries no occlusion meaning, it only keeps ranks unique.

Output size 1024x1024 (MS-Diffusion generates with SDXL at 1024).
"""

from __future__ import annotations

import itertools
import warnings
from collections import Counter
from pathlib import Path

from picbench.benches.jsonl import read_json
from picbench.errors import BenchFormatError
from picbench.records import Bench, Sample, Subject, check_box

VERSION = "1"
OUTPUT_SIZE = 1024
SPEC_FILE = "msbench/msbench.json"
IMAGES_DIR = "msbench/images"
STATED_COMBINATIONS = 1148
STATED_SAMPLES = 4488
_IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
_CLASS_TYPE_FALLBACK = {"cat": "living", "dog": "living"}
_ROLE_DEPTH = {"wearing": 0, "living": 1, "object": 1, "scene": 2}


class MissingImageWarning(UserWarning):
    """A bench refers to an image file its data root lacks."""


def _role(subject_type: str) -> str:
    return "wearing" if subject_type.endswith("wearing") else subject_type


def read_spec(data_root: Path) -> dict:
    path = data_root / SPEC_FILE
    spec = read_json(path)
    for key in (
        "subject_classes",
        "two_subject_combinations",
        "three_subject_combinations",
        "combination_boxes_xyxy_normalized",
        "combination_prompt_templates",
    ):
        if key not in spec:
            raise BenchFormatError(f"missing key {key!r}", file=path, field=key)
    return spec


def subject_files(data_root: Path, spec: dict) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(subject -> type, subject -> relative image path, subjects whose image is missing)."""
    found: dict[str, tuple[str, str]] = {}
    images = data_root / IMAGES_DIR
    for folder in sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else []:
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                found[file.stem] = (folder.name, f"{IMAGES_DIR}/{folder.name}/{file.name}")
    types: dict[str, str] = {}
    paths: dict[str, str] = {}
    missing: list[str] = []
    for subject, class_word in spec["subject_classes"].items():
        if subject in found:
            types[subject], paths[subject] = found[subject]
            continue
        subject_type = _CLASS_TYPE_FALLBACK.get(class_word)
        if subject_type is None:
            raise BenchFormatError(
                f"subject {subject!r} has no image and its type cannot be inferred",
                file=data_root / SPEC_FILE,
                field=f"subject_classes.{subject}",
            )
        types[subject], paths[subject] = subject_type, f"{IMAGES_DIR}/{subject_type}/{subject}.jpg"
        missing.append(subject)
    return types, paths, missing


def combinations_for(combination_type: str, by_type: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """Product over distinct types, combinations without repetition within a repeated type; the
    result is in box order (the order of the type name's parts)."""
    parts = combination_type.split("_")
    groups = [list(itertools.combinations(by_type.get(t, []), n)) for t, n in Counter(parts).items()]
    order = list(Counter(parts))
    combos = []
    for chosen in itertools.product(*groups):
        pools = {t: list(c) for t, c in zip(order, chosen)}
        combos.append(tuple(pools[t].pop(0) for t in parts))
    return combos


def depth_ranks(parts: list[str]) -> list[int]:
    keyed = sorted(range(len(parts)), key=lambda i: (_ROLE_DEPTH[_role(parts[i])], i))
    ranks = [0] * len(parts)
    for rank, i in enumerate(keyed):
        ranks[i] = rank
    return ranks


def load(data_root: Path) -> Bench:
    data_root = Path(data_root)
    spec = read_spec(data_root)
    file = data_root / SPEC_FILE
    types, paths, missing = subject_files(data_root, spec)
    if missing:
        warnings.warn(
            f"msbench: image(s) missing for {', '.join(paths[s] for s in missing)}; samples that use them are kept and will fail validation",
            MissingImageWarning,
            stacklevel=2,
        )
    by_type: dict[str, list[str]] = {}
    for subject in spec["subject_classes"]:
        by_type.setdefault(types[subject], []).append(subject)
    samples = []
    for combination_type in [*spec["two_subject_combinations"], *spec["three_subject_combinations"]]:
        parts = combination_type.split("_")
        boxes = spec["combination_boxes_xyxy_normalized"].get(combination_type)
        templates = spec["combination_prompt_templates"].get(combination_type)
        if not boxes or len(boxes) != len(parts) or not templates:
            raise BenchFormatError(
                f"type {combination_type!r} needs {len(parts)} boxes and at least one template", file=file, field=combination_type
            )
        boxes = [check_box(b, field_name=f"combination_boxes_xyxy_normalized.{combination_type}") for b in boxes]
        depths = depth_ranks(parts)
        for combo in combinations_for(combination_type, by_type):
            classes = [spec["subject_classes"][s] for s in combo]
            subjects = tuple(Subject(s, c, (paths[s],), (paths[s],), box, d) for s, c, box, d in zip(combo, classes, boxes, depths))
            for t, template in enumerate(templates):
                samples.append(
                    Sample(
                        id=f"{combination_type}/{'+'.join(combo)}/{t}",
                        prompt=template.format(*classes),
                        width=OUTPUT_SIZE,
                        height=OUTPUT_SIZE,
                        split="multi",
                        subjects=subjects,
                        meta={"combination_type": combination_type, "template": template, "template_index": t},
                    )
                )
    return Bench(
        "msbench",
        VERSION,
        tuple(samples),
        data_root,
        description=f"MS-Bench (MS-Diffusion): 13 combination types, fixed layouts; {STATED_COMBINATIONS} combinations / {STATED_SAMPLES} samples as stated by its authors.",
    )
