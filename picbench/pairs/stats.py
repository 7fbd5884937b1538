"""What a pair set holds: counts per stage (BMPDS stage, else the builder) and per filter level,
and histograms of the filter's scores. A BMPDS build folder adds ``candidates.jsonl`` (every unit,
kept, dropped or failed), so the counts cover what the filter removed too; a plain pair set
counts its pairs as kept."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picbench.benches.jsonl import iter_json_lines
from picbench.errors import BenchFormatError
from picbench.pairs import bmpds_meta, pairs_file, read_pairs
from picbench.problems import RaiseFirst
from picbench.records import BENCH_SCHEMA, PAIRS_KIND, Bench

CANDIDATES_FILE = "candidates.jsonl"
SCORE_NAMES = ("clip_i", "dino", "vlm", "clip_t")
"""The BMPDS filter's score names in ``candidates.jsonl`` (reference_impl/bmpds/build.py writes
them): crop CLIP-I and DINO, the VLM judge's grade, CLIP-T. Filter fields, not metric keys (the
metric keys are ``clip_i_crop``, ``dino_crop``, ``vlm_judge``), so they are not the registry's."""
HISTOGRAM_BINS = 10
SCORE_BOUND = 1e6
"""Scores are similarities and probabilities; one beyond this is damage, not a score to bin."""


@dataclass
class PairStats:
    name: str
    n_pairs: int
    splits: dict[str, int]
    stages: dict[str, dict[str, int]]  # stage -> status ("kept", "dropped", "failed") -> count
    levels: dict[str, int]  # filter level -> dropped (or failed) count
    reasons: dict[str, int]  # first words of each failure reason -> count
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)  # score -> {"edges", "counts", "n"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_pairs": self.n_pairs,
            "splits": self.splits,
            "stages": self.stages,
            "levels": self.levels,
            "reasons": self.reasons,
            "histograms": self.histograms,
        }


def _stage(sample: Any, file: Path) -> str:
    return str(bmpds_meta(sample, file).get("stage") or sample.meta.get("builder") or "unknown")


def _reason_kind(reason: str) -> str:
    """A failure reason without its numbers and names, so alike failures count together."""
    words = reason.split(" ")
    return " ".join(w for w in words[:6] if not any(ch.isdigit() for ch in w) and "'" not in w)


def pair_stats(path: str | Path) -> PairStats:
    """Stats of a pair set; a build whose filter kept nothing (a header-only pairs.jsonl) still
    counts its candidates."""
    file = pairs_file(path)
    header = _header_only(file)
    pairs = read_pairs(path) if header is None else Bench.from_header(header, (), file.parent)
    splits = Counter(s.split for s in pairs.samples)
    stages: dict[str, Counter[str]] = {}
    levels: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    values: dict[str, list[float]] = {name: [] for name in SCORE_NAMES}
    candidates = file.parent / CANDIDATES_FILE
    if candidates.is_file():
        for line, record in iter_json_lines(candidates, RaiseFirst(candidates)):
            stages.setdefault(str(record.get("stage")), Counter())[str(record.get("status"))] += 1
            if record.get("level"):
                levels[str(record["level"])] += 1
            if record.get("status") == "failed":
                reasons[_reason_kind(str(record.get("reason", "")))] += 1
            scores = record.get("scores") or {}
            if not isinstance(scores, dict):
                raise BenchFormatError(f"must be a table, got {type(scores).__name__}", file=candidates, line=line, field="scores")
            _collect(scores, values)
    else:
        for sample in pairs.samples:
            stages.setdefault(_stage(sample, file), Counter())["kept"] += 1
            _collect(bmpds_meta(sample, file).get("scores") or {}, values)
    histograms = {}
    for name, vals in values.items():
        if vals:
            if max(abs(v) for v in vals) > SCORE_BOUND:
                raise BenchFormatError(
                    f"a {name} score of {max(vals, key=abs):g} lies outside [-{SCORE_BOUND:g}, {SCORE_BOUND:g}]", file=file
                )
            counts, edges = np.histogram(np.asarray(vals, dtype=float), bins=HISTOGRAM_BINS)
            histograms[name] = {"n": len(vals), "edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}
    return PairStats(pairs.name, len(pairs), dict(splits), {k: dict(v) for k, v in stages.items()}, dict(levels), dict(reasons), histograms)


def _header_only(file: Path) -> dict[str, Any] | None:
    """The header of a pairs.jsonl that holds nothing else, else None (then the reader judges it)."""
    try:
        lines = [line for line in file.read_text(encoding="utf-8").split("\n") if line.strip()]
        header = json.loads(lines[0]) if len(lines) == 1 else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = (
        isinstance(header, dict)
        and header.get("schema") == BENCH_SCHEMA
        and header.get("kind") == PAIRS_KIND
        and isinstance(header.get("name"), str)
    )
    return header if ok and isinstance(header.get("version"), str) else None


def _collect(scores: dict[str, Any], values: dict[str, list[float]]) -> None:
    """Per-subject scores (lists) count once per subject; the caption score once per pair."""
    for name in SCORE_NAMES:
        v = scores.get(name)
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, (int, float)) and np.isfinite(x):
                values[name].append(float(x))
