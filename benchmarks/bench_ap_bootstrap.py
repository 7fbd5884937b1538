"""What AP's bootstrap interval costs on each COCO evaluator: faster-coco-eval (installed by the
``dev`` extra) against pycocotools (every install; the fallback of the eval-only install). Both
give the same interval; this measures the time. Scores are synthetic: each subject's box detected
with a seeded jitter, one in five missed, one to three subjects a sample.

Usage: python benchmarks/bench_ap_bootstrap.py [--n 100] [--resamples 50]"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from picbench.metrics.bootstrap import RUN_LEVEL_RESAMPLES, run_level_intervals
from picbench.metrics.layout import AveragePrecision
from picbench.records import Sample, Score, Subject

CLASSES = ("dog", "cat", "backpack", "vase", "teddy bear")


def synthetic_run(n: int, seed: int = 0) -> tuple[dict[str, Sample], list[Score]]:
    rng = random.Random(seed)
    samples, scores = {}, []
    for i in range(n):
        subjects = []
        for k in range(rng.randint(1, 3)):
            x0, y0 = rng.uniform(0, 0.5), rng.uniform(0, 0.5)
            box = (x0, y0, x0 + rng.uniform(0.2, 0.5), y0 + rng.uniform(0.2, 0.5))
            subjects.append(Subject(f"s{k}", rng.choice(CLASSES), ("ref.jpg",), box=box, depth=k))
        sample = Sample(f"x{i:04d}", "a prompt", 512, 512, "single" if len(subjects) == 1 else "multi", tuple(subjects))
        samples[sample.id] = sample
        detections = [
            {"label": s.class_word, "score": rng.random(), "box_norm": [min(max(v + rng.uniform(-0.06, 0.06), 0), 1) for v in s.box]}
            for s in subjects
            if rng.random() > 0.2
        ]
        scores.append(Score(sample.id, 0, {"iou": 0.5}, detections=tuple(detections)))
    return samples, scores


def timed(backend: str, samples: dict[str, Sample], scores: list[Score], resamples: int) -> tuple[float, dict]:
    metric = AveragePrecision()
    start = time.perf_counter()
    intervals = run_level_intervals(scores, lambda r: metric.aggregate(r, samples, backend=backend), resamples=resamples)
    return time.perf_counter() - start, intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="samples (one seed each)")
    parser.add_argument("--resamples", type=int, default=50, help=f"bootstrap resamples (a run uses {RUN_LEVEL_RESAMPLES})")
    args = parser.parse_args()
    samples, scores = synthetic_run(args.n)
    slow, reference = timed("pycocotools", samples, scores, args.resamples)
    try:
        fast, faster = timed("faster-coco-eval", samples, scores, args.resamples)
    except ImportError:
        fast, faster = float("nan"), reference
    same = faster.keys() == reference.keys() and all(abs(a - b) <= 1e-12 for k in reference for a, b in zip(reference[k], faster[k]))
    per_run = RUN_LEVEL_RESAMPLES / args.resamples
    print(f"AP bootstrap, {args.n} samples, {args.resamples} resamples (x{per_run:g} for a run's {RUN_LEVEL_RESAMPLES}):")
    print(f"  pycocotools {slow:.2f} s ({slow * per_run:.1f} s a run)   faster-coco-eval {fast:.2f} s ({fast * per_run:.1f} s a run)")
    print(f"  same intervals: {same}")
    print(
        json.dumps(
            {
                "n": args.n,
                "resamples": args.resamples,
                "pycocotools_s": round(slow, 3),
                "faster_coco_eval_s": round(fast, 3),
                "ratio": round(slow / fast, 2),
                "same_intervals": same,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
