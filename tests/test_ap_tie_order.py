"""AP with tied scores: COCOeval ranks tied detections in image order, so picbench hands it the images
sorted by a hash of (sample id, seed). A single run, a sharded-and-merged run, a killed-and-resumed
run and a run of the same items listed in another order give the identical AP.

The detector is the weight-free ``blobs`` plug-in (tests/metrics_plugin.py), which scores every box
0.9 like Vision-R1 scores every box 0.99, on the ``paste`` method's images: each sample pastes a dog
and a cat side by side; blobs labels the regions left to right with the asked classes, so a sample
that lists its right-hand subject first gets both labels wrong. True and false positives then share
one score, and AP depends on their order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from run_bench_helpers import CAT, DOG, write_tiny_bench

from picbench.metrics.coco import average_precision, tie_order_key
from picbench.metrics.detectors import DETECTORS
from picbench.metrics.layout import AveragePrecision, eval_images
from picbench.records import Sample, Subject
from picbench.results import iter_sample_scores
from picbench.runner import RunConfig, Shard, merge, run

LEFT, RIGHT = (0.05, 0.2, 0.45, 0.8), (0.55, 0.2, 0.95, 0.8)
WRONG = {"t00", "t01", "t03", "t06"}


def _samples() -> list[Sample]:
    """Ten two-subject samples; those whose index is in WRONG list the right-hand subject first."""
    samples = []
    for i in range(10):
        wrong = f"t{i:02d}" in WRONG
        dog = Subject("dog", "dog", (DOG,), box=RIGHT if wrong else LEFT, depth=0)
        cat = Subject("cat", "cat", (CAT,), box=LEFT if wrong else RIGHT, depth=1)
        samples.append(Sample(f"t{i:02d}", "a dog and a cat", 48, 48, "multi", (dog, cat)))
    return samples


@pytest.fixture(scope="module", autouse=True)
def blobs() -> None:
    if "blobs" not in DETECTORS:
        DETECTORS.register("blobs", "metrics_plugin:BlobDetector", "test detector: every box scored 0.9")


def _config(bench: Path, data_dir: Path, out: Path, **kw) -> RunConfig:
    return RunConfig(
        "paste",
        str(bench),
        out,
        seeds=(0, 1),
        models="tiny",
        data_dir=data_dir,
        detector="blobs",
        metrics=("iou", "ap"),
        batch_size=3,
        **kw,
    )


def _ap(out: Path) -> dict[str, float]:
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if k.startswith("ap")}


def test_tie_order_is_a_hash_of_sample_id_and_seed() -> None:
    assert tie_order_key("t00", 1) == hashlib.sha256(b"t00\x001").hexdigest()
    assert tie_order_key("t00", 1) != tie_order_key("t001", 0) != tie_order_key("t0", 0)  # the separator keeps them apart


def test_single_sharded_resumed_and_reordered_runs_give_the_identical_ap(tmp_path: Path, data_dir: Path) -> None:
    samples = _samples()
    bench = write_tiny_bench(tmp_path, data_dir, samples=samples, name="ties")
    single = tmp_path / "single"
    run(_config(bench, data_dir, single))
    reference = _ap(single)
    assert reference["ap"] is not None and 0.0 < reference["ap50"] < 1.0  # true and false positives, all tied
    scores = [sc for sc, _ in iter_sample_scores(single)]
    assert {d["score"] for sc in scores for d in sc.detections} == {0.9}

    # the fixture is order-sensitive: the same detections with the right-labelled images first, or last, score otherwise
    images = eval_images(scores, {s.id: s for s in samples})
    right = [im for im in images if im.key[0] not in WRONG]
    wrong = [im for im in images if im.key[0] in WRONG]
    assert average_precision(right + wrong)["ap"] > average_precision(wrong + right)["ap"] + 0.1
    hashed = sorted(images, key=lambda im: tie_order_key(*im.key))
    assert average_precision(hashed, "faster-coco-eval") == pytest.approx(
        average_precision(hashed)
    )  # the bootstrap's backend ranks ties alike
    in_run = AveragePrecision().aggregate(scores, {s.id: s for s in samples})
    assert {k: average_precision(hashed)[k] for k in ("ap", "ap50", "ap75")} == {k: in_run[k] for k in ("ap", "ap50", "ap75")}

    sharded = tmp_path / "sharded"
    for part in ("1/2", "0/2"):
        run(_config(bench, data_dir, sharded, shard=Shard.parse(part)))
    merge(sharded)
    assert _ap(sharded) == reference

    resumed = tmp_path / "resumed"
    run(_config(bench, data_dir, resumed, limit=4))  # a store holding part of the items, as a killed run leaves it
    assert _ap(resumed) != reference
    run(_config(bench, data_dir, resumed))
    assert _ap(resumed) == reference

    reordered_bench = write_tiny_bench(tmp_path / "reordered", data_dir, samples=samples[::-1], name="ties")
    reordered = tmp_path / "reordered-run"
    run(_config(reordered_bench, data_dir, reordered))
    assert _ap(reordered) == reference
