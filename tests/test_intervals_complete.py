"""Every install computes every interval: AP's bootstrap falls back to pycocotools where
faster-coco-eval is missing (the same numbers), and an interval set computed without a component
is never cached as if complete."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from run_bench_helpers import tiny_samples

from picbench.metrics.bootstrap import run_level_intervals
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.engine import MetricEngine
from picbench.metrics.layout import AveragePrecision, resample_backend
from picbench.records import Sample, Score


def _scored(samples: list[Sample], seeds: int = 2) -> list[Score]:
    """Scores with detections near each target box (jittered, seeded), some subjects missed."""
    rng = random.Random(0)
    scores = []
    for sample in samples:
        for seed in range(seeds):
            detections = []
            for subject in sample.subjects:
                if rng.random() < 0.2:
                    continue
                x0, y0, x1, y1 = subject.box
                box = [min(max(v + rng.uniform(-0.08, 0.08), 0.0), 1.0) for v in (x0, y0, x1, y1)]
                detections.append({"label": subject.class_word, "score": rng.random(), "box_norm": box})
            scores.append(Score(sample.id, seed, {"iou": 0.5}, detections=tuple(detections)))
    return scores


def test_ap_interval_without_faster_coco_eval_is_pycocotools_and_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faster_coco_eval")
    samples = {s.id: s for s in tiny_samples(12)}
    scores = _scored(list(samples.values()))
    metric = AveragePrecision()
    assert resample_backend() == "faster-coco-eval"
    faster = run_level_intervals(scores, lambda r: metric.bootstrap_statistic(r, samples), resamples=30)
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as on the eval-only install: import fails
    assert resample_backend() == "pycocotools"
    fallback = run_level_intervals(scores, lambda r: metric.bootstrap_statistic(r, samples), resamples=30)
    assert {"ap", "ap50", "ap75", "ap.single", "ap.multi"} <= set(fallback)
    assert fallback.keys() == faster.keys()
    for key in faster:
        assert fallback[key] == pytest.approx(faster[key], abs=1e-12), key
    assert fallback["ap"][0] < fallback["ap"][1]


def test_intervals_computed_without_a_component_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no COCO evaluator importable AP gets no interval and nothing is cached; once one is
    there, the same call computes AP's interval and only then caches the set."""
    samples = {s.id: s for s in tiny_samples(6)}
    scores = _scored(list(samples.values()))
    cache = EmbeddingCache(tmp_path / "store.sqlite")
    engine = MetricEngine(models="tiny", metrics=["iou", "ap"], detector="grounding-dino", cache=cache)
    stored: list[str] = []
    put_json = cache.put_json
    monkeypatch.setattr(cache, "put_json", lambda kind, key, value: (stored.append(kind), put_json(kind, key, value)))
    with monkeypatch.context() as missing:
        missing.setitem(sys.modules, "faster_coco_eval", None)
        missing.setitem(sys.modules, "pycocotools", None)
        missing.setitem(sys.modules, "pycocotools.coco", None)
        partial = engine.intervals(scores, samples)
    assert "iou" in partial and "ap" not in partial
    assert stored == []  # the partial set was not cached
    complete = engine.intervals(scores, samples)
    assert "ap" in complete and complete["iou"] == partial["iou"]
    assert stored == ["intervals"]
    assert engine.intervals(scores, samples) == complete and stored == ["intervals"]  # now served from the cache
