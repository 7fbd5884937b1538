"""AP through our COCO conversion must equal pycocotools run on COCO's own files, exactly."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from picbench.metrics.coco import STAT_NAMES, Detected, EvalImage, GroundTruth, average_precision, coco_stats


def _reference_stats(gt: dict, dets: list[dict]) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def _xyxy(bbox: list[float]) -> tuple[float, float, float, float]:
    return (bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3])


def _as_eval_images(gt: dict, dets: list[dict]) -> tuple[list[EvalImage], list[str]]:
    """COCO files -> our records (what the engine builds from a run)."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    images = []
    for im in sorted(gt["images"], key=lambda i: i["id"]):
        truths = [
            GroundTruth(_xyxy(a["bbox"]), names[a["category_id"]], bool(a.get("iscrowd", 0)), a.get("area"))
            for a in gt["annotations"]
            if a["image_id"] == im["id"]
        ]
        found = [Detected(_xyxy(d["bbox"]), names[d["category_id"]], d["score"]) for d in dets if d["image_id"] == im["id"]]
        images.append(EvalImage(im["id"], im["width"], im["height"], truths, found))
    return images, [names[k] for k in sorted(names)]


@pytest.fixture(scope="module")
def fake100(data_dir: Path) -> tuple[dict, list[dict]]:
    folder = data_dir / "coco_fake100"
    gt = json.loads((folder / "instances_val2014_100.json").read_text())
    dets = json.loads((folder / "instances_val2014_fakebbox100_results.json").read_text())
    return gt, dets


def test_fake100_matches_pycocotools_exactly(fake100):
    gt, dets = fake100
    assert sum(a["iscrowd"] for a in gt["annotations"]) > 0  # crowd regions take part
    expected = _reference_stats(gt, dets)
    images, categories = _as_eval_images(gt, dets)
    ours = average_precision(images, categories=categories)
    assert [ours[name] for name in STAT_NAMES] == expected


def test_fake100_faster_coco_eval_agrees(fake100):
    pytest.importorskip("faster_coco_eval")
    images, categories = _as_eval_images(*fake100)
    reference = average_precision(images, categories=categories)
    faster = average_precision(images, "faster-coco-eval", categories=categories)
    assert faster.keys() == reference.keys()
    for name in reference:
        assert faster[name] == pytest.approx(reference[name], abs=1e-12), name


def _random_case(rng: random.Random) -> tuple[dict, list[dict]]:
    names = rng.sample(["dog", "cat", "backpack", "vase", "teddy bear"], rng.randint(1, 4))
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    dets: list[dict] = []
    for img_id in range(1, rng.randint(2, 12)):
        w, h = rng.randint(64, 1024), rng.randint(64, 1024)
        gt["images"].append({"id": img_id, "width": w, "height": h})
        for _ in range(rng.randint(0, 4)):
            bw, bh = round(rng.uniform(2, w / 2), 2), round(rng.uniform(2, h / 2), 2)
            x, y = round(rng.uniform(0, w - bw), 2), round(rng.uniform(0, h - bh), 2)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": img_id,
                    "category_id": rng.randint(1, len(names)),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
            for _ in range(rng.randint(0, 3)):  # jittered detections of it, some with the wrong class
                jitter = [round(v + rng.uniform(-0.3, 0.3) * s, 2) for v, s in zip([x, y, bw, bh], [bw, bh, bw, bh])]
                jitter[2], jitter[3] = max(jitter[2], 1.0), max(jitter[3], 1.0)
                dets.append(
                    {"image_id": img_id, "category_id": rng.randint(1, len(names)), "bbox": jitter, "score": round(rng.random(), 3)}
                )
        for _ in range(rng.randint(0, 2)):  # false positives
            dets.append(
                {
                    "image_id": img_id,
                    "category_id": rng.randint(1, len(names)),
                    "bbox": [round(rng.uniform(0, w / 2), 2), round(rng.uniform(0, h / 2), 2), 10.0, 12.5],
                    "score": round(rng.random(), 3),
                }
            )
    return gt, dets


@pytest.mark.parametrize("seed", range(25))
def test_random_cases_match_pycocotools(seed):
    gt, dets = _random_case(random.Random(seed))
    images, categories = _as_eval_images(gt, dets)
    ours = average_precision(images, categories=categories)
    if not gt["annotations"]:
        assert ours == {}
        return
    if not dets:
        assert ours["ap"] == 0.0
        return
    expected = dict(zip(STAT_NAMES, _reference_stats(gt, dets)))
    assert ours == {k: v for k, v in expected.items() if v >= 0}
    faster = average_precision(images, "faster-coco-eval", categories=categories)
    assert faster == pytest.approx(ours, abs=1e-12)


def test_perfect_detections_score_one_and_none_score_zero():
    truths = [GroundTruth((10.0, 20.0, 110.0, 220.0), "dog"), GroundTruth((200.0, 40.0, 300.0, 90.0), "backpack")]
    perfect = [EvalImage(0, 400, 300, truths, [Detected(t.box, t.category, 1.0) for t in truths])]
    assert average_precision(perfect)["ap"] == pytest.approx(1.0)
    assert average_precision([EvalImage(0, 400, 300, truths, [])])["ap"] == 0.0
    assert coco_stats({"images": [], "annotations": [], "categories": []}, []) == {}


def test_unknown_backend_is_refused():
    images = [EvalImage(0, 10, 10, [GroundTruth((1.0, 1.0, 5.0, 5.0), "dog")], [Detected((1.0, 1.0, 5.0, 5.0), "dog", 0.5)])]
    with pytest.raises(ValueError, match="unknown AP backend"):
        average_precision(images, "detectron")  # type: ignore[arg-type]
