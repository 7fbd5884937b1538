"""Feature assembly: a decoded batch becomes each item's shared :class:`~picbench.metrics.base.Features`
(image and box-crop embeddings, the references' and prompt's embeddings, detections and their subject
matches, the regions metrics ask for), computed once for every metric. What is computed follows from
the metrics' ``needs``; every crop of a batch goes through each model in one pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from picbench.metrics.base import Features
from picbench.metrics.boxes import match_subjects, normalize_label, to_pixels
from picbench.metrics.decoding import DecodedItem, ScoreItem, crop_to_box
from picbench.metrics.detectors import Detector, DetectorOutput
from picbench.metrics.encoders import ClipEncoder, Encoder
from picbench.metrics.scheduling import Scheduler
from picbench.metrics.selection import MetricSelection, identity_images
from picbench.paths import resolve_in_root
from picbench.records import Sample


@dataclass(frozen=True)
class ItemFeatures:
    """One decoded item's features under each identity set (``views``: set -> features holding
    that set's reference embeddings), and the problems found with each subject's identity images."""

    views: Mapping[str, Features]
    reference_problems: Mapping[int, list[str]]


def assign_detections(sample: Sample, output: DetectorOutput, size: tuple[int, int]) -> dict[int, tuple[int | None, float | None]]:
    """Subject index -> (detection index, IoU). Boxed subjects: Hungarian on IoU per class word;
    unboxed subjects (DreamBench): the best-scored unused detection of their class, IoU None."""
    dets = output.detections
    boxed = [s for s, sub in enumerate(sample.subjects) if sub.box is not None]
    result: dict[int, tuple[int | None, float | None]] = {}
    matches = match_subjects(
        [to_pixels(sample.subjects[s].box, *size) for s in boxed],
        [sample.subjects[s].class_word for s in boxed],  # type: ignore[arg-type]
        [d.box for d in dets],
        [d.label for d in dets],
    )
    for s, m in zip(boxed, matches):
        result[s] = m
    used = {m[0] for m in matches if m[0] is not None}
    for s, sub in enumerate(sample.subjects):
        if sub.box is None:
            pick = max(
                (j for j, d in enumerate(dets) if j not in used and normalize_label(d.label) == normalize_label(sub.class_word)),
                key=lambda j: dets[j].score,
                default=None,
            )
            if pick is not None:
                used.add(pick)
            result[s] = (pick, None)
    return result


def batch_features(
    items: Sequence[ScoreItem],
    decoded: Sequence[DecodedItem],
    data_root: Path,
    *,
    selection: MetricSelection,
    encoders: Mapping[str, Encoder],
    detector: Detector | None,
    scheduler: Scheduler,
) -> list[ItemFeatures | None]:
    """Each item's features, None for an item that has no decoded image."""
    needs = selection.needs
    ok = [i for i, d in enumerate(decoded) if d.error is None]
    roles = list(encoders)
    whole = scheduler.encode(encoders, {role: [decoded[i].whole[role] for i in ok] for role in roles})
    row = {i: r for r, i in enumerate(ok)}

    detections: dict[int, DetectorOutput] = {}
    if detector is not None and ok:
        outputs = scheduler.detect(detector, [decoded[i].image for i in ok], [[s.class_word for s in items[i].sample.subjects] for i in ok])  # type: ignore[misc]
        detections = dict(zip(ok, outputs))
    matches = {i: assign_detections(items[i].sample, detections[i], decoded[i].size) for i in detections}

    # every crop of the batch (subject boxes, detected boxes where a subject has none, metric regions) in one pass per role
    crop_tensors: dict[str, list[torch.Tensor]] = {role: [] for role in roles}
    crop_row: dict[tuple[int, Any], int] = {}

    def add(key: tuple[int, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        crop_row[key] = len(crop_tensors[roles[0]]) if roles else 0
        for role in roles:
            crop_tensors[role].append(tensors[role])

    for i in ok:
        if "crops" in needs:
            for s, _ in enumerate(items[i].sample.subjects):
                tensors = decoded[i].crops.get(s)
                det = matches.get(i, {}).get(s)
                if tensors is None and det is not None and det[0] is not None:
                    crop = crop_to_box(decoded[i].image, detections[i].detections[det[0]].box)  # type: ignore[arg-type]
                    tensors = {role: encoders[role].preprocess(crop) for role in roles}
                if tensors is not None:
                    add((i, s), tensors)
        for key, tensors in decoded[i].regions.items():
            add((i, key), tensors)
    crop_emb = scheduler.encode(encoders, crop_tensors)

    wants_refs = "references" in needs and bool(roles)
    identity_refs = [
        resolve_in_root(data_root, p)
        for i in ok
        if items[i].uses_references and wants_refs
        for sub in items[i].sample.subjects
        for p in selection.images(sub)
    ]
    refs, ref_errors = scheduler.references(encoders, identity_refs) if identity_refs else ({}, {})
    clip: ClipEncoder | None = encoders.get("clip")  # type: ignore[assignment]
    texts = scheduler.prompts(clip, [items[i].sample.prompt for i in ok]) if "text" in needs and clip is not None and ok else {}

    found: list[ItemFeatures | None] = []
    for i, item in enumerate(items):
        if i not in row:
            found.append(None)
            continue
        sample = item.sample
        subject_refs: dict[str, dict[tuple[int, str], tuple[np.ndarray, ...]]] = {k: {} for k in selection.identity_sets}
        ref_problems: dict[int, list[str]] = {}
        if item.uses_references and wants_refs:
            for s, sub in enumerate(sample.subjects):
                ref_problems[s] = [ref_errors[p] for p in (resolve_in_root(data_root, q) for q in selection.images(sub)) if p in ref_errors]
                for identity in selection.identity_sets:
                    paths = [resolve_in_root(data_root, p) for p in identity_images(sub, identity)]
                    for role in roles:
                        subject_refs[identity][(s, role)] = tuple(refs[role][p] for p in paths if p in refs.get(role, {}))
        features = Features(
            sample=sample,
            seed=item.seed,
            uses_references=item.uses_references,
            size=decoded[i].size,
            data_root=data_root,
            embeddings={role: whole[role][row[i]] for role in roles},
            subject_crops={
                (s, role): crop_emb[role][r] for (j, s), r in crop_row.items() if j == i and isinstance(s, int) for role in roles
            },
            regions={(k, role): crop_emb[role][r] for (j, k), r in crop_row.items() if j == i and isinstance(k, str) for role in roles},
            references=subject_refs[selection.primary],
            prompt=texts.get(sample.prompt),
            detections=detections.get(i),
            matches=matches.get(i, {}),
            image=decoded[i].image if "image" in needs else None,
        )
        views = {k: features if k == selection.primary else replace(features, references=subject_refs[k]) for k in selection.identity_sets}
        found.append(ItemFeatures(views, ref_problems))
    return found
