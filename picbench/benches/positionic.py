"""PositionIC-Bench: its file format, loader, validator, and ``positionic-open``, a seeded
reconstruction built from DreamBench subjects.

The official PositionIC-Bench files are not public. Its format here is the picbench bench JSONL
(``picbench/benches/jsonl.py``, documented in ``docs/positionic_bench_format.md``) with one extra
rule: every subject carries a target ``box`` and a ``depth`` rank, and the ranks of a sample are
0..n-1. ``positionic`` loads ``<data root>/positionic/positionic_bench.jsonl`` (where a converted
official file would go); ``load_file`` loads any such file.

``positionic-open`` (reconstruction, ``Bench.reconstruction=True``) follows the paper's counts:
252 single-subject and 296 multi-subject samples. The rules, all drawn from ``random.Random(seed)``
so the same seed gives the same bytes:

* single: the 30 DreamBench subjects in a reshuffled cycle (8 or 9 samples each), prompt
  "a <class> <context>" with a context from the subject's own DreamBench templates;
* multi: 2 subjects (60 %) or 3 (40 %), distinct, prompt "a <c0>, a <c1> and a <c2> <context>"
  in box order, with a scene context from the object templates;
* boxes: area log-uniform (single 4-50 % of the image, multi 3-30 %), aspect w/h log-uniform in
  [0.5, 2], position uniform; 4 decimals;
* a share of multi samples (``OVERLAP_SHARE``) puts the first two boxes over each other
  (intersection 15-60 % of the smaller box); the others keep all boxes disjoint;
* depth: the box whose bottom edge is lower is nearer the camera (rank 0), ties by larger area;
  every subject keeps at least 40 % of its box visible, so none is fully hidden;
* output 512x512; ``references`` the image UNO's DreamBench list gives, ``eval_images`` all of
  the subject's images.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from picbench.benches.dreambench import (
    PROMPTS_FILE,
    parse_prompts_and_classes,
    single_references,
    subject_images,
)
from picbench.benches.jsonl import read_bench_jsonl, write_bench_jsonl
from picbench.errors import BenchFormatError, PicbenchError
from picbench.records import Bench, BoxXYXY, Sample, Subject

OFFICIAL_FILE = "positionic/positionic_bench.jsonl"
OPEN_NAME = "positionic-open"
OPEN_VERSION = "1"
N_SINGLE = 252
N_MULTI = 296
THREE_SUBJECT_SHARE = 0.4
OVERLAP_SHARE = 0.4
MIN_VISIBLE = 0.4
OUTPUT_SIZE = 512
_NOUN_PHRASES = {"glasses": "a pair of glasses"}


def layout_problems(sample: Sample) -> list[str]:
    """What keeps a sample from being a PositionIC-Bench sample (empty when it is one)."""
    problems = [f"subject {s.name!r} has no box" for s in sample.subjects if s.box is None]
    depths = sorted(s.depth for s in sample.subjects if s.depth is not None)
    if len(depths) != len(sample.subjects):
        problems.append("every subject needs a depth rank")
    elif depths != list(range(len(depths))):
        problems.append(f"depth ranks must be 0..{len(depths) - 1}, got {depths}")
    return problems


def load_file(path: str | Path, data_root: str | Path) -> Bench:
    """Read a PositionIC-Bench JSONL file; the first sample without a full layout is an error."""
    bench = read_bench_jsonl(path, data_root)
    for sample in bench.samples:
        problems = layout_problems(sample)
        if problems:
            raise BenchFormatError("; ".join(problems), file=path, sample_id=sample.id, field="subjects")
    return bench


def load(data_root: Path) -> Bench:
    path = Path(data_root) / OFFICIAL_FILE
    if not path.is_file():
        raise PicbenchError(
            f"PositionIC-Bench file {path} not found: the official benchmark is not public. Put a converted file "
            f"there, pass a .jsonl path, or build the open reconstruction with `picbench bench build {OPEN_NAME}` "
            f"and use the bench name {OPEN_NAME!r}"
        )
    return load_file(path, data_root)


def noun_phrase(class_word: str) -> str:
    """'a <class>' (or the class's own phrase, e.g. 'a pair of glasses') for prompts."""
    return _NOUN_PHRASES.get(class_word, f"a {class_word}")


def template_contexts(templates: tuple[str, ...]) -> list[str]:
    """The trailing phrase of every 'a {0} {1} <context>' template (not the attribute ones)."""
    return [t.split("{1}", 1)[1].strip() for t in templates if t.startswith("a {0} {1} ")]


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def random_box(rng: random.Random, area: tuple[float, float]) -> BoxXYXY:
    """A box of log-uniform area and aspect, uniform position (also used by the pair builders)."""
    a = _log_uniform(rng, *area)
    aspect = _log_uniform(rng, 0.5, 2.0)
    w, h = min(math.sqrt(a * aspect), 0.95), min(math.sqrt(a / aspect), 0.95)
    x0, y0 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
    return (round(x0, 4), round(y0, 4), round(min(x0 + w, 1.0), 4), round(min(y0 + h, 1.0), 4))


def _area(b: BoxXYXY) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a: BoxXYXY, b: BoxXYXY) -> BoxXYXY:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def depth_order(boxes: list[BoxXYXY]) -> list[int]:
    """Rank 0 for the box whose bottom edge is lowest (nearest an eye-level camera), ties by area."""
    order = sorted(range(len(boxes)), key=lambda i: (-boxes[i][3], -_area(boxes[i]), i))
    ranks = [0] * len(boxes)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def visible_fraction(boxes: list[BoxXYXY], depths: list[int], i: int) -> float:
    """Share of box i not covered by boxes in front of it (at most two: inclusion-exclusion)."""
    front = [boxes[j] for j in range(len(boxes)) if depths[j] < depths[i]]
    covered = sum(_area(_inter(boxes[i], f)) for f in front)
    if len(front) == 2:
        covered -= _area(_inter(_inter(boxes[i], front[0]), front[1]))
    return 1.0 - covered / _area(boxes[i])


def multi_layout(rng: random.Random, k: int, overlap: bool) -> tuple[list[BoxXYXY], list[int]]:
    """k boxes and depth ranks by the module's multi rules (also used by the pair builders)."""
    area = (0.03, 0.3)
    while True:
        boxes = [random_box(rng, area)]
        for n in range(1, k):
            for _ in range(200):
                box = random_box(rng, area)
                shares = [_area(_inter(box, b)) / min(_area(box), _area(b)) for b in boxes]
                if overlap and n == 1:
                    ok = 0.15 <= shares[0] <= 0.6
                else:
                    ok = all(s == 0.0 for s in shares)
                if ok:
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) < k:
            continue
        depths = depth_order(boxes)
        if all(visible_fraction(boxes, depths, i) >= MIN_VISIBLE for i in range(k)):
            return boxes, depths


def build_open(data_root: Path, seed: int = 0) -> Bench:
    """The deterministic positionic-open reconstruction (252 single + 296 multi samples)."""
    data_root = Path(data_root)
    spec = parse_prompts_and_classes(data_root / PROMPTS_FILE)
    refs = single_references(data_root)
    names = sorted(spec.classes)
    evals = {n: subject_images(data_root, n) or (refs[n],) for n in names}
    scene_contexts = template_contexts(spec.object_templates)
    rng = random.Random(seed)

    def subject(name: str, box: BoxXYXY, depth: int) -> Subject:
        return Subject(name, spec.classes[name], (refs[name],), evals[name], box, depth)

    samples: list[Sample] = []
    cycle: list[str] = []
    for i in range(N_SINGLE):
        if not cycle:
            cycle = rng.sample(names, len(names))
        name = cycle.pop()
        context = rng.choice(template_contexts(spec.templates_for(name)))
        box = random_box(rng, (0.04, 0.5))
        samples.append(
            Sample(
                f"single-{i:03d}-{name}",
                f"{noun_phrase(spec.classes[name])} {context}",
                OUTPUT_SIZE,
                OUTPUT_SIZE,
                "single",
                (subject(name, box, 0),),
                {"context": context, "overlap": False, "seed": seed},
            )
        )
    n_three = round(N_MULTI * THREE_SUBJECT_SHARE)
    n_overlap = round(N_MULTI * OVERLAP_SHARE)
    sizes = [3] * n_three + [2] * (N_MULTI - n_three)
    overlaps = [True] * n_overlap + [False] * (N_MULTI - n_overlap)
    rng.shuffle(sizes)
    rng.shuffle(overlaps)
    for i, (k, overlap) in enumerate(zip(sizes, overlaps)):
        chosen = rng.sample(names, k)
        context = rng.choice(scene_contexts)
        boxes, depths = multi_layout(rng, k, overlap)
        nouns = [noun_phrase(spec.classes[n]) for n in chosen]
        listed = f"{nouns[0]} and {nouns[1]}" if k == 2 else f"{', '.join(nouns[:-1])} and {nouns[-1]}"
        samples.append(
            Sample(
                f"multi-{i:03d}-{'+'.join(chosen)}",
                f"{listed} {context}",
                OUTPUT_SIZE,
                OUTPUT_SIZE,
                "multi",
                tuple(subject(n, b, d) for n, b, d in zip(chosen, boxes, depths)),
                {"context": context, "overlap": overlap, "seed": seed},
            )
        )
    return Bench(
        OPEN_NAME,
        OPEN_VERSION,
        tuple(samples),
        data_root,
        description=(
            f"positionic-open: an open RECONSTRUCTION of PositionIC-Bench (the official files are not public), built from "
            f"DreamBench subjects with seed {seed}: {N_SINGLE} single + {N_MULTI} multi samples, seeded boxes, "
            f"{n_overlap} multi samples with overlapping boxes and explicit depth order."
        ),
        reconstruction=True,
    )


def write_open(data_root: Path, out: Path, seed: int = 0) -> Bench:
    """Build and write positionic-open; the same seed gives identical bytes."""
    bench = build_open(data_root, seed)
    write_bench_jsonl(bench, out)
    return bench
