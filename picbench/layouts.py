"""Subject layouts: box geometry, the seeded layout sampler, the depth-rank rules and the prompt
words that name a layout's subjects.

One home for what the positionic-open bench, the paste-pairs builder and BMPDS draw layouts with
(the sampling rules are listed in ``picbench/benches/positionic.py``'s docstring), and for the one
box intersection that the bench, the occlusion metric and IoU share. Boxes are xyxy tuples,
normalized or in pixels alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from picbench.records import BoxXYXY, Sample

SINGLE_AREA = (0.04, 0.5)  # share of the image a single-subject box covers (log-uniform)
MULTI_AREA = (0.03, 0.3)  # the same for each box of a multi-subject layout
THREE_SUBJECT_SHARE = 0.4  # share of multi-subject layouts with three subjects (the rest have two)
OVERLAP_SHARE = 0.4  # share of multi-subject layouts whose first two boxes overlap
MIN_VISIBLE = 0.4  # every subject keeps at least this share of its box uncovered
_NOUN_PHRASES = {"glasses": "a pair of glasses"}


def intersection(a: Sequence[float], b: Sequence[float]) -> BoxXYXY | None:
    """The overlap of two xyxy boxes, or None when they do not overlap with a positive area."""
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def area(box: Sequence[float] | None) -> float:
    """Area of an xyxy box; 0 for None (no overlap) and for an inverted box."""
    return 0.0 if box is None else max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def depth_rank_problem(depths: Sequence[int]) -> str | None:
    """Why a sample's depth ranks are not 0..n-1 (None when they are): the one wording of the rule."""
    ranks = sorted(depths)
    return None if ranks == list(range(len(ranks))) else f"depth ranks must be 0..{len(ranks) - 1}, got {ranks}"


def layout_problems(sample: Sample) -> list[str]:
    """What keeps a sample from having a full layout, a box and a depth rank 0..n-1 for every
    subject (empty when it has one)."""
    problems = [f"subject {s.name!r} has no box" for s in sample.subjects if s.box is None]
    depths = [s.depth for s in sample.subjects if s.depth is not None]
    if len(depths) != len(sample.subjects):
        problems.append("every subject needs a depth rank")
    elif (problem := depth_rank_problem(depths)) is not None:
        problems.append(problem)
    return problems


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def random_box(rng: random.Random, area_range: tuple[float, float]) -> BoxXYXY:
    """A normalized box of log-uniform area and aspect (w/h in [0.5, 2]), uniform position, 4 decimals."""
    a = _log_uniform(rng, *area_range)
    aspect = _log_uniform(rng, 0.5, 2.0)
    w, h = min(math.sqrt(a * aspect), 0.95), min(math.sqrt(a / aspect), 0.95)
    x0, y0 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
    return (round(x0, 4), round(y0, 4), round(min(x0 + w, 1.0), 4), round(min(y0 + h, 1.0), 4))


def depth_order(boxes: Sequence[BoxXYXY]) -> list[int]:
    """Rank 0 for the box whose bottom edge is lowest (nearest an eye-level camera), ties by area."""
    order = sorted(range(len(boxes)), key=lambda i: (-boxes[i][3], -area(boxes[i]), i))
    ranks = [0] * len(boxes)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def visible_fraction(boxes: Sequence[BoxXYXY], depths: Sequence[int], i: int) -> float:
    """Share of box i not covered by boxes in front of it (at most two: inclusion-exclusion)."""
    front = [boxes[j] for j in range(len(boxes)) if depths[j] < depths[i]]
    covered = sum(area(intersection(boxes[i], f)) for f in front)
    if len(front) == 2 and (both := intersection(boxes[i], front[0])) is not None:
        covered -= area(intersection(both, front[1]))
    return 1.0 - covered / area(boxes[i])


def multi_layout(rng: random.Random, k: int, overlap: bool) -> tuple[list[BoxXYXY], list[int]]:
    """k boxes and their depth ranks: with ``overlap`` the first two boxes cover 15-60 % of the
    smaller one, all other pairs are disjoint, and every box keeps ``MIN_VISIBLE`` of itself."""
    while True:
        boxes = [random_box(rng, MULTI_AREA)]
        for n in range(1, k):
            for _ in range(200):
                box = random_box(rng, MULTI_AREA)
                shares = [area(intersection(box, b)) / min(area(box), area(b)) for b in boxes]
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


def noun_phrase(class_word: str) -> str:
    """'a <class>' (or the class's own phrase, e.g. 'a pair of glasses') for prompts."""
    return _NOUN_PHRASES.get(class_word, f"a {class_word}")


def listed(nouns: Sequence[str]) -> str:
    """Noun phrases as a prompt lists them: 'a dog', 'a dog and a cat', 'a dog, a cat and a vase'."""
    return nouns[0] if len(nouns) == 1 else f"{', '.join(nouns[:-1])} and {nouns[-1]}"


def template_contexts(templates: Sequence[str]) -> list[str]:
    """The trailing phrase of every 'a {0} {1} <context>' template (not the attribute ones)."""
    return [t.split("{1}", 1)[1].strip() for t in templates if t.startswith("a {0} {1} ")]
