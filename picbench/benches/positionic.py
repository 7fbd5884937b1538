"""PositionIC-Bench: its file format, loader, validator, and ``positionic-open``, a seeded
reconstruction built from DreamBench subjects.

The official PositionIC-Bench files are not public. Its format here is the picbench bench JSONL
(``picbench/benches/jsonl.py``, documented in ``docs/positionic_bench_format.md``) with one extra
rule: every subject carries a target ``box`` and a ``depth`` rank, and the ranks of a sample are
0..n-1. ``positionic`` loads ``<data root>/positionic/positionic_bench.jsonl`` (where a converted
official file would go); ``load_file`` loads any such file.

``positionic-open`` (reconstruction, ``Bench.reconstruction=True``) follows the paper's counts:
252 single-subject and 296 multi-subject samples. The rules, all drawn from ``random.Random(seed)``
so the same seed gives the same bytes (the box, overlap and depth rules live in ``picbench.layouts``,
shared with the pair builders):

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
from picbench.layouts import (
    OVERLAP_SHARE,
    SINGLE_AREA,
    THREE_SUBJECT_SHARE,
    layout_problems,
    listed,
    multi_layout,
    noun_phrase,
    random_box,
    template_contexts,
)
from picbench.records import Bench, BoxXYXY, Sample, Subject

OFFICIAL_FILE = "positionic/positionic_bench.jsonl"
OPEN_NAME = "positionic-open"
OPEN_VERSION = "1"
N_SINGLE = 252
N_MULTI = 296
OUTPUT_SIZE = 512


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
        box = random_box(rng, SINGLE_AREA)
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
        samples.append(
            Sample(
                f"multi-{i:03d}-{'+'.join(chosen)}",
                f"{listed(nouns)} {context}",
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
