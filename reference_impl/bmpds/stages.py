"""The three generation stages of BMPDS. Each turns one planned unit into a pair (or a failure
reason) and writes its images into the build folder, which is the pair set's own data root.

* **single** (inject the spatial signal): the subject model renders the subject from its
  reference ("a photo of <a class>"); the detector boxes it; SAM, prompted with that box, cuts it
  out; the cut-out is placed at a seeded box (positionic-open's single rule, its aspect kept
  inside the box, and the pair's box is where it landed); FLUX Fill repaints everything but the
  subject (mask white = repaint) from the caption. Pair: the reference, the target, the box.
* **forward**: 2 or 3 single-stage cut-outs placed together at positionic-open's multi layout
  (overlaps, depth ranks), pasted back to front (``picbench.imaging.back_to_front``) and
  outpainted the same way. References: those of the single-stage pairs.
* **backward**: the caption writer (a local LM, or a seeded template) writes a multi-subject
  caption; FLUX renders it; the detector finds each subject's class word; each crop is re-rendered
  by the subject model ("a photo of <a class>", the crop as reference), so references are not
  copies of the target. Boxes come from the detections, depth from their bottom edges.

A subject the detector or segmenter cannot find, an output of the wrong size or with non-finite
pixels: a :class:`UnitFailure` with its reason, recorded for that unit; the build goes on.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from picbench.imaging import back_to_front
from picbench.layouts import OVERLAP_SHARE, SINGLE_AREA, THREE_SUBJECT_SHARE, depth_order, listed, multi_layout, noun_phrase, random_box
from picbench.metrics.boxes import normalize_label
from picbench.records import BoxXYXY, Sample, Subject, canonical_json

MIN_MASK_SHARE = 0.002  # a segment smaller than this share of the rendered image is "not found"
STAGES = ("single", "forward", "backward")


class UnitFailure(Exception):
    """A unit that cannot give a pair, with the reason recorded for it."""


@dataclass(frozen=True)
class SubjectSource:
    """A real subject a build draws from: its reference (data-root path) and caption contexts."""

    name: str
    class_word: str
    reference: str
    source: str
    contexts: tuple[str, ...]


@dataclass(frozen=True)
class Unit:
    stage: str
    index: int
    key: str

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index:05d}"

    def rng(self) -> random.Random:
        """This unit's own random stream: the same unit draws the same choices in any order, shard or rerun."""
        return random.Random(f"bmpds:{self.key}")

    def torch_seed(self, offset: int = 0) -> int:
        return int(hashlib.sha256(f"{self.key}:{offset}".encode()).hexdigest()[:8], 16)


@dataclass
class StageContext:
    """What a stage needs: the folder, where source images live, the roles' models (built on first use),
    the build's size, and how images are saved (atomically, smoke-marked in tiny builds)."""

    out: Path
    data_root: Path
    roles: Any  # reference_impl.bmpds.build.Roles
    size: int
    save_image: Callable[[Image.Image, str], str]
    copy_source: Callable[[str], str]


def unit_key(stage: str, index: int, fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"bmpds": 1, "stage": stage, "index": index, "config": fingerprint}).encode()).hexdigest()


def checked_image(array: np.ndarray, size: int, what: str) -> Image.Image:
    """An HxWx3 float array in [0, 1] from a pipeline (``output_type="np"``) as an image, or a
    failure when it has the wrong size or non-finite pixels."""
    if array.ndim != 3 or array.shape[:2] != (size, size):
        raise UnitFailure(f"{what} returned an image of shape {tuple(array.shape)}, expected {size}x{size}")
    if not np.isfinite(array).all():
        raise UnitFailure(f"{what} returned non-finite pixels")
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8))


def best_detection(output: Any, class_word: str, what: str) -> tuple[float, float, float, float]:
    if output.failed:
        raise UnitFailure(f"detector failed on the {what}: {'; '.join(output.problems) or 'no answer'}")
    found = [d for d in output.detections if normalize_label(d.label) == normalize_label(class_word)]
    if not found:
        raise UnitFailure(f"detector found no {class_word!r} in the {what}")
    return max(found, key=lambda d: d.score).box


def cut_out(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The masked subject as RGBA, cropped to the mask's bounding box."""
    if mask.shape != (image.height, image.width) or mask.mean() < MIN_MASK_SHARE:
        raise UnitFailure(f"segmenter found no subject in the box (mask covers {mask.mean():.2%} of the image)")
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray((mask * 255).astype(np.uint8)))
    return rgba.crop((x0, y0, x1, y1))


def place(
    cutouts: Sequence[Image.Image], boxes: Sequence[BoxXYXY], depths: Sequence[int], size: int
) -> tuple[Image.Image, Image.Image, list[BoxXYXY]]:
    """Paste cut-outs into their boxes back to front (each keeps its aspect, centred in its box) on a
    grey canvas. Returns the canvas, FLUX Fill's mask (white = repaint: everywhere no subject
    covers) and the boxes where the cut-outs landed (normalized, the pair's boxes)."""
    canvas = Image.new("RGB", (size, size), (127, 127, 127))
    keep = Image.new("L", (size, size), 0)
    placed: list[BoxXYXY] = [(0.0, 0.0, 1.0, 1.0)] * len(cutouts)
    # the one drawing order of picbench.imaging, on a stand-in sample whose subject i is cut-out i
    stand_in = Sample(
        "place",
        "place",
        size,
        size,
        "multi" if len(cutouts) > 1 else "single",
        tuple(Subject(str(i), "x", ("-",), (), b, d) for i, (b, d) in enumerate(zip(boxes, depths))),
    )
    for subject, box in back_to_front(stand_in):
        i = int(subject.name)
        cut = cutouts[i]
        bw, bh = (box[2] - box[0]) * size, (box[3] - box[1]) * size
        scale = min(bw / cut.width, bh / cut.height)
        w, h = max(1, round(cut.width * scale)), max(1, round(cut.height * scale))
        x0, y0 = round(box[0] * size + (bw - w) / 2), round(box[1] * size + (bh - h) / 2)
        resized = cut.resize((w, h), Image.Resampling.BICUBIC)
        canvas.paste(resized, (x0, y0), resized)
        keep.paste(255, (x0, y0), resized.getchannel("A").point(lambda a: 255 if a >= 128 else 0))
        placed[i] = (round(x0 / size, 4), round(y0 / size, 4), round(min(x0 + w, size) / size, 4), round(min(y0 + h, size) / size, 4))
    return canvas, keep.point(lambda v: 255 - v), placed


def provenance(ctx: StageContext, unit: Unit, stage_meta: dict[str, Any]) -> dict[str, Any]:
    return {"bmpds": {"stage": unit.stage, "unit": unit.name, "key": unit.key, "models": ctx.roles.provenance(unit.stage), **stage_meta}}


def run_single(unit: Unit, subject: SubjectSource, ctx: StageContext) -> tuple[Sample, dict[str, Any]]:
    rng = unit.rng()
    folder = f"images/{unit.name}"
    noun = noun_phrase(subject.class_word)
    reference = ctx.copy_source(subject.reference)
    context = rng.choice(subject.contexts)
    caption = f"{noun} {context}"
    render_seed = unit.torch_seed(0)
    rendered = ctx.roles.render_subject(reference, subject, render_seed)
    ctx.save_image(rendered, f"{folder}/render.png")
    box_px = best_detection(ctx.roles.detector.detect(rendered, [subject.class_word]), subject.class_word, "rendered subject")
    cutout = cut_out(rendered, ctx.roles.segmenter.segment(rendered, box_px))
    cutout_rel = ctx.save_image(cutout, f"{folder}/cutout.png")
    canvas, mask, (box,) = place([cutout], [random_box(rng, SINGLE_AREA)], [0], ctx.size)
    fill_seed = unit.torch_seed(1)
    target = checked_image(ctx.roles.outpainter.outpaint(caption, canvas, mask, fill_seed), ctx.size, "the outpainter")
    target_rel = ctx.save_image(target, f"{folder}/target.png")
    meta = provenance(
        ctx,
        unit,
        {
            "source": {"subject": subject.name, "from": subject.source, "reference": subject.reference},
            "context": context,
            "seeds": {"render": render_seed, "outpaint": fill_seed},
            "detected_box_px": [round(v, 2) for v in box_px],
        },
    )
    sample = Sample(
        unit.name,
        caption,
        ctx.size,
        ctx.size,
        "single",
        (Subject(subject.name, subject.class_word, (reference,), (), box, 0),),
        meta,
        target=target_rel,
    )
    return sample, {"cutout": cutout_rel}


def plan_forward(rng: random.Random, n_single: int) -> tuple[list[int], bool]:
    """Which single-stage units a forward unit combines (distinct), and whether boxes overlap;
    drawn from the unit's rng, which ``run_forward`` then goes on drawing from."""
    k = 3 if rng.random() < THREE_SUBJECT_SHARE else 2
    return rng.sample(range(n_single), min(k, n_single)), rng.random() < OVERLAP_SHARE


def run_forward(
    unit: Unit, rng: random.Random, sources: Sequence[tuple[Sample, dict[str, Any]]], overlap: bool, ctx: StageContext
) -> tuple[Sample, dict[str, Any]]:
    folder = f"images/{unit.name}"
    k = len(sources)
    if k < 2:
        raise UnitFailure("the forward stage needs at least two single-stage results")
    boxes, depths = multi_layout(rng, k, overlap)
    cutouts = [Image.open(ctx.out / extra["cutout"]).convert("RGBA") for _, extra in sources]
    canvas, mask, placed = place(cutouts, boxes, depths, ctx.size)
    subjects = [s.subjects[0] for s, _ in sources]
    contexts = [str(s.meta["bmpds"]["context"]) for s, _ in sources]
    caption = f"{listed([noun_phrase(s.class_word) for s in subjects])} {rng.choice(contexts)}"
    fill_seed = unit.torch_seed(1)
    target = checked_image(ctx.roles.outpainter.outpaint(caption, canvas, mask, fill_seed), ctx.size, "the outpainter")
    target_rel = ctx.save_image(target, f"{folder}/target.png")
    meta = provenance(
        ctx, unit, {"source": {"single_units": [s.id for s, _ in sources]}, "seeds": {"outpaint": fill_seed}, "overlap": overlap}
    )
    sample = Sample(
        unit.name,
        caption,
        ctx.size,
        ctx.size,
        "multi",
        tuple(replace(sub, box=b, depth=d) for sub, b, d in zip(subjects, placed, depths)),
        meta,
        target=target_rel,
    )
    return sample, {}


def plan_backward(rng: random.Random, pool: Sequence[SubjectSource]) -> list[SubjectSource]:
    """2 or 3 subjects with distinct class words (the detector tells subjects apart by class),
    drawn from the unit's rng, which ``run_backward`` then goes on drawing from."""
    k = 3 if rng.random() < THREE_SUBJECT_SHARE else 2
    by_class: dict[str, SubjectSource] = {}
    for s in rng.sample(list(pool), len(pool)):
        by_class.setdefault(s.class_word, s)
    return list(by_class.values())[:k]


def run_backward(unit: Unit, rng: random.Random, chosen: Sequence[SubjectSource], ctx: StageContext) -> tuple[Sample, dict[str, Any]]:
    folder = f"images/{unit.name}"
    words = [s.class_word for s in chosen]
    caption = ctx.roles.captioner.write([noun_phrase(w) for w in words], words, [c for s in chosen for c in s.contexts], rng)
    render_seed = unit.torch_seed(0)
    target = checked_image(ctx.roles.renderer.render(caption.text, ctx.size, ctx.size, render_seed), ctx.size, "the renderer")
    target_rel = ctx.save_image(target, f"{folder}/target.png")
    detections = ctx.roles.detector.detect(target, words)
    subjects = []
    boxes: list[BoxXYXY] = []
    for j, word in enumerate(words):
        x0, y0, x1, y1 = best_detection(detections, word, "rendered caption")
        crop_rel = ctx.save_image(target.crop((math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))), f"{folder}/crop-{j}.png")
        name = f"{word.replace(' ', '_')}-{j}"
        source = SubjectSource(name, word, crop_rel, "backward-crop", ())
        reference = ctx.roles.render_subject(crop_rel, source, unit.torch_seed(10 + j))
        ref_rel = ctx.save_image(reference, f"{folder}/reference-{j}.png")
        box = (max(0.0, x0 / ctx.size), max(0.0, y0 / ctx.size), min(1.0, x1 / ctx.size), min(1.0, y1 / ctx.size))
        if not (box[0] < box[2] and box[1] < box[3]):
            raise UnitFailure(f"detected box {box} of {word!r} is empty")
        boxes.append(tuple(round(v, 4) for v in box))  # type: ignore[arg-type]
        subjects.append(Subject(name, word, (ref_rel,), (), None, None))
    depths = depth_order(boxes)
    meta = provenance(
        ctx,
        unit,
        {
            "source": {"classes": words, "drawn_from": [s.name for s in chosen]},
            "caption": {"source": caption.source, "note": caption.note},
            "seeds": {"render": render_seed},
        },
    )
    sample = Sample(
        unit.name,
        caption.text,
        ctx.size,
        ctx.size,
        "multi",
        tuple(replace(s, box=b, depth=d) for s, b, d in zip(subjects, boxes, depths)),
        meta,
        target=target_rel,
    )
    return sample, {}
