"""Nothing computed without a component is kept as if complete: AP's bootstrap falls back to
pycocotools where faster-coco-eval is missing (the same numbers), an interval set computed without
a component is not cached, and a method or metric that finds a package missing stops the run
(exit 2) instead of being stored as a sample's failure."""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

import pytest
from run_bench_helpers import tiny_samples, write_tiny_bench

from picbench.errors import EnvironmentProblem
from picbench.methods import METHODS
from picbench.methods.paste import PasteMethod
from picbench.metrics import METRICS
from picbench.metrics.base import Metric
from picbench.metrics.bootstrap import run_level_intervals
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.engine import MetricEngine
from picbench.metrics.layout import AveragePrecision, resample_backend
from picbench.records import Sample, Score
from picbench.runner import RunConfig, run


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


class NeedsAPackage(PasteMethod):
    """paste whose generation imports a package this machine lacks."""

    name = "needs-a-package"

    def generate(self, samples, seed, data_root):
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")


class NeedsAPackageMetric(Metric):
    name = "needs_a_package"
    summary = "imports a package this machine lacks"
    needs = frozenset({"image"})
    default = False  # registered for the whole session: runs that ask for the default metrics must not get it

    def item(self, features, subjects):
        raise ModuleNotFoundError("No module named 'skimage'", name="skimage")


@pytest.mark.parametrize("where", ["method", "metric"])
def test_a_missing_package_stops_the_run_and_stores_no_outcome(where: str, tmp_path: Path, data_dir: Path) -> None:
    METHODS.register("needs-a-package", f"{__name__}:NeedsAPackage")
    METRICS.register("needs_a_package", f"{__name__}:NeedsAPackageMetric")
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    config = RunConfig(
        method="needs-a-package" if where == "method" else "paste", bench=str(bench), out=tmp_path / "run", data_dir=data_dir,
        models="tiny", detector=None, metrics=("needs_a_package",) if where == "metric" else ("clip_i",),
    )  # fmt: skip
    missing = "cv2" if where == "method" else "skimage"
    with pytest.raises(EnvironmentProblem, match=f"a missing package \\({missing}\\)"):
        run(config)
    with sqlite3.connect(tmp_path / "run" / "store.sqlite") as db:
        generations = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        scores = db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    assert scores == 0  # nothing recorded as an outcome: the rerun where the package is installed computes it
    assert generations == (0 if where == "method" else 2)
