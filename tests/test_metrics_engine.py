"""The metric engine end to end on tiny real-architecture models and real DreamBench images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from picbench.errors import MissingWeightsError, UnknownNameError
from picbench.imaging import load_rgb
from picbench.metrics.cache import EmbeddingCache
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.engine import MetricEngine
from picbench.metrics.layout import AP_KEYS
from picbench.records import Sample, Subject
from picbench.tiny.metric_models import tiny_weights

DOG = "dreambench/dataset/dog/00.jpg"
DOG_EVAL = ("dreambench/dataset/dog/00.jpg", "dreambench/dataset/dog/01.jpg")
BACKPACK = "dreambench/dataset/backpack/00.jpg"


@pytest.fixture(scope="module")
def generated(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real DreamBench photos standing in for generated images (downscaled: detectors are slow on
    2048 px), plus the broken outputs a method can leave behind."""
    out = tmp_path_factory.mktemp("generated")
    paths = {}
    for name, rel in {
        "cat": "dreambench/dataset/cat/00.jpg",
        "dog2": "dreambench/dataset/dog2/00.jpg",
        "bear": "dreambench/dataset/bear_plushie/00.jpg",
    }.items():
        load_rgb(data_dir / rel).resize((256, 256), Image.BICUBIC).save(out / f"{name}.png")
        paths[name] = out / f"{name}.png"
    (out / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    Image.new("RGB", (64, 64), (0, 0, 0)).save(out / "blank.png")
    nan = np.full((64, 64), np.nan, dtype=np.float32)
    Image.fromarray(nan, mode="F").save(out / "nan.tiff")
    paths.update(corrupt=out / "corrupt.png", blank=out / "blank.png", nan=out / "nan.tiff")
    return paths


SINGLE = Sample("single-dog", "a dog in the jungle", 512, 512, "single", (Subject("dog", "dog", (DOG,), DOG_EVAL),))
MULTI = Sample(
    "multi",
    "a dog beside a backpack",
    512,
    512,
    "multi",
    (
        Subject("dog", "dog", (DOG,), DOG_EVAL, box=(0.05, 0.2, 0.5, 0.95), depth=0),
        Subject("backpack", "backpack", (BACKPACK,), box=(0.5, 0.1, 0.95, 0.7), depth=1),
    ),
)
POSITIONED = Sample("single-pos", "a dog on the left", 512, 512, "single", (Subject("dog", "dog", (DOG,), box=(0.0, 0.1, 0.6, 0.9)),))
SAMPLES = {s.id: s for s in (SINGLE, MULTI, POSITIONED)}


@pytest.fixture(scope="module")
def engine() -> MetricEngine:
    eng = MetricEngine(models="tiny", detector="grounding-dino", batch_size=4)
    eng.detector.box_threshold = 0.0  # random weights score low: keep every box so matching and AP run
    return eng


@pytest.fixture(scope="module")
def run(engine: MetricEngine, generated: dict[str, Path], data_dir: Path):
    items = [
        ScoreItem(SINGLE, 0, generated["cat"]),
        ScoreItem(MULTI, 0, generated["dog2"]),
        ScoreItem(POSITIONED, 0, generated["bear"]),
        ScoreItem(MULTI, 1, None, failure="CUDA out of memory"),
        ScoreItem(SINGLE, 1, generated["corrupt"]),
        ScoreItem(SINGLE, 2, generated["blank"]),
        ScoreItem(SINGLE, 3, generated["nan"]),
        ScoreItem(MULTI, 2, generated["cat"], uses_references=False),
    ]
    return items, list(engine.score(items, data_dir))


def test_one_score_per_item_in_order_marked_smoke(run):
    items, scores = run
    assert [(s.sample_id, s.seed) for s in scores] == [(i.sample.id, i.seed) for i in items]
    assert all(s.smoke for s in scores)


def test_scores_are_cosines_on_a_unit_scale(run):
    _, scores = run
    for s in scores[:3]:
        for key in ("clip_i", "clip_t", "dino"):
            assert -1.0 <= s.metrics[key] <= 1.0
        assert len(s.subjects) == len(SAMPLES[s.sample_id].subjects)
    multi = scores[1]
    assert multi.metrics["clip_i"] == pytest.approx(np.mean([sub.metrics["clip_i"] for sub in multi.subjects]))


def test_box_metrics_apply_only_where_there_are_boxes(run):
    _, scores = run
    dreambench, multi, positioned = scores[:3]
    assert dreambench.metrics["iou"] is None  # DreamBench has no target boxes: not applicable, not 0
    assert dreambench.metrics["clip_i_crop"] is not None or "found none" in " ".join(dreambench.failures)
    for s in (multi, positioned):
        assert 0.0 <= s.metrics["iou"] <= 1.0
        assert s.metrics["clip_i_crop"] is not None and s.metrics["dino_crop"] is not None
        for sub in s.subjects:
            assert sub.iou == sub.metrics["iou"]
            if sub.detected_box is None:
                assert sub.iou == 0.0  # unmatched subjects score 0
        assert all(set(d) >= {"label", "score", "box", "box_norm"} for d in s.detections)


def test_bad_inputs_become_recorded_failures(run):
    _, scores = run
    oom = next(s for s in scores if s.sample_id == "multi" and s.seed == 1)
    assert oom.failures == ("CUDA out of memory",) and all(v is None for v in oom.metrics.values())
    reasons = {s.seed: " ".join(s.failures) for s in scores if s.sample_id == "single-dog" and s.seed in (1, 2, 3)}
    assert "corrupt" in reasons[1]
    assert "blank" in reasons[2]
    assert "NaN" in reasons[3]


def test_identity_metrics_do_not_apply_without_references(run):
    _, scores = run
    no_refs = scores[-1]
    for key in ("clip_i", "dino", "clip_i_crop", "dino_crop"):
        assert no_refs.metrics[key] is None
    assert no_refs.metrics["clip_t"] is not None and no_refs.metrics["iou"] is not None


def test_aggregate_has_every_key_split_and_count(run, engine):
    _, scores = run
    agg = engine.aggregate(scores, SAMPLES)
    assert {"clip_i", "clip_t", "dino", "clip_i_crop", "dino_crop", "iou"} <= set(engine.item_keys())
    for key in (*engine.item_keys(), *AP_KEYS):
        assert key in agg and f"{key}.single" in agg and f"{key}.multi" in agg
    assert agg["n_items"] == len(scores)
    assert agg["n_failures"] == sum(1 for s in scores if s.failures) >= 4
    assert agg["iou.single"] == pytest.approx(scores[2].metrics["iou"])  # the one boxed single sample
    good = [s.metrics["clip_i"] for s in scores if s.metrics.get("clip_i") is not None]
    assert agg["clip_i"] == pytest.approx(np.mean(good))
    assert 0.0 <= agg["ap.multi"] <= 1.0


def test_dreambench_only_run_has_no_box_aggregates(engine, generated, data_dir):
    scores = list(engine.score([ScoreItem(SINGLE, 0, generated["cat"])], data_dir))
    agg = engine.aggregate(scores, SAMPLES)
    assert agg["iou"] is None and agg["ap"] is None
    assert "clip_i.multi" not in agg and agg["clip_i.single"] == agg["clip_i"]


def test_provenance_records_models_weights_and_preprocessing(engine):
    prov = engine.provenance()
    assert prov["smoke"] is True
    for role in ("clip", "dino"):
        assert len(prov["encoders"][role]["weights_sha256"]) == 64
        assert prov["encoders"][role]["preprocessing"]
    assert prov["detector"]["detector"] == "grounding-dino"


def _plain_cosines(model_fn, preprocess, gen: Path, refs: list[Path]) -> float:
    """What a research script does: one image at a time, references re-encoded every time."""
    with torch.no_grad():
        g = torch.nn.functional.normalize(model_fn(preprocess(load_rgb(gen))[None]), dim=-1)[0]
        sims = [float(g @ torch.nn.functional.normalize(model_fn(preprocess(load_rgb(r))[None]), dim=-1)[0]) for r in refs]
    return float(np.mean(sims))


def test_clip_i_and_dino_equal_a_plain_per_image_computation(generated, data_dir):
    import open_clip
    import timm
    from timm.data import create_transform

    engine = MetricEngine(models="tiny", metrics=["clip_i", "dino"], detector=None)
    score = next(engine.score([ScoreItem(SINGLE, 0, generated["cat"])], data_dir))
    refs = [data_dir / p for p in DOG_EVAL]
    clip, _, clip_pre = open_clip.create_model_and_transforms(f"local-dir:{tiny_weights('clip')}")
    dino = timm.create_model(f"local-dir:{tiny_weights('dino')}", pretrained=True, num_classes=0).eval()
    dino_pre = create_transform(
        input_size=224, interpolation="bicubic", crop_pct=0.875, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    assert score.metrics["clip_i"] == pytest.approx(_plain_cosines(clip.eval().encode_image, clip_pre, generated["cat"], refs), abs=1e-5)
    assert score.metrics["dino"] == pytest.approx(_plain_cosines(dino, dino_pre, generated["cat"], refs), abs=1e-5)


class _Transformers4Clip(torch.nn.Module):
    """CLIPModel answering get_*_features with tensors, as torchmetrics expects (transformers 5
    returns output objects, which torchmetrics' own loader cannot use)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_text_features(*args, **kwargs).pooler_output


def test_clip_t_equals_torchmetrics_clipscore(generated, data_dir):
    torchmetrics_clip = pytest.importorskip("torchmetrics.multimodal.clip_score")
    from torchvision.transforms.functional import pil_to_tensor
    from transformers import CLIPModel, CLIPProcessor

    folder = tiny_weights("hf_clip")
    engine = MetricEngine(models="tiny", metrics=["clip_t"], detector=None, weights={"clip": folder})
    assert engine.clip.arch.startswith("transformers/")
    prompts = [
        "a dog in the jungle",
        "a cat on a red sofa",
        "a teddy bear at the beach",
        "a photo of a backpack",
        "a dog wearing sunglasses",
        "a vase of flowers",
    ]
    samples = [Sample(f"p{i}", p, 256, 256, "single", (Subject("x", "dog", (DOG,)),)) for i, p in enumerate(prompts)]
    images = [generated["cat"], generated["dog2"], generated["bear"]]
    items = [ScoreItem(s, k, img) for s in samples for k, img in enumerate(images)]
    ours = [sc.metrics["clip_t"] for sc in engine.score(items, data_dir)]
    model, processor = _Transformers4Clip(CLIPModel.from_pretrained(folder).eval()), CLIPProcessor.from_pretrained(folder)
    positive = 0
    for item, value in zip(items, ours):
        metric = torchmetrics_clip.CLIPScore(model_name_or_path=lambda: (model, processor))
        metric.update(pil_to_tensor(load_rgb(item.image_path)), item.sample.prompt)
        reference = float(metric.compute()) / 100
        assert max(value, 0.0) == pytest.approx(reference, abs=1e-5)  # CLIPScore clamps at 0; we do not
        positive += value > 0
    assert positive > 0  # the comparison is not vacuous


def test_second_run_encodes_no_reference(tmp_path, generated, data_dir):
    items = [ScoreItem(SINGLE, 0, generated["cat"]), ScoreItem(MULTI, 0, generated["dog2"])]
    first = MetricEngine(
        models="tiny", metrics=["clip_i", "clip_t", "dino"], detector=None, cache=EmbeddingCache(tmp_path / "store.sqlite")
    )
    a = list(first.score(items, data_dir))
    assert first.reference_encodes == 3 * 2  # dog/00, dog/01, backpack/00, once per model (CLIP, DINO), though dog appears twice
    second = MetricEngine(
        models="tiny", metrics=["clip_i", "clip_t", "dino"], detector=None, cache=EmbeddingCache(tmp_path / "store.sqlite")
    )
    b = list(second.score(items, data_dir))
    assert second.reference_encodes == 0
    assert [s.metrics for s in a] == [s.metrics for s in b]


def test_workers_give_the_same_numbers(generated, data_dir):
    items = [ScoreItem(SINGLE, 0, generated["cat"]), ScoreItem(MULTI, 0, generated["dog2"]), ScoreItem(SINGLE, 1, generated["corrupt"])]
    serial = MetricEngine(models="tiny", metrics=["clip_i", "dino_crop"], detector=None, batch_size=2)
    parallel = MetricEngine(models="tiny", metrics=["clip_i", "dino_crop"], detector=None, batch_size=2, num_workers=2)
    a, b = list(serial.score(items, data_dir)), list(parallel.score(items, data_dir))
    assert [s.metrics for s in a] == [s.metrics for s in b]
    assert [s.failures for s in a] == [s.failures for s in b]


def test_scoring_streams_batch_by_batch(tmp_path, generated, data_dir):
    """The second image need not exist when the first score comes out: nothing is read ahead."""
    later = tmp_path / "later.png"
    engine = MetricEngine(models="tiny", metrics=["clip_i"], detector=None, batch_size=1)
    stream = engine.score([ScoreItem(SINGLE, 0, generated["cat"]), ScoreItem(SINGLE, 1, later)], data_dir)
    first = next(stream)
    assert first.failures == ()
    later.write_bytes(generated["dog2"].read_bytes())
    second = next(stream)
    assert second.failures == () and second.metrics["clip_i"] is not None


def test_missing_weights_offline_names_the_model_and_the_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)
    with pytest.raises(MissingWeightsError) as err:
        MetricEngine(models="default", metrics=["clip_i"], detector=None)
    message = str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai" in message
    assert "--weights clip=DIR" in message and "PICBENCH_WEIGHTS_DIR" in message
    with pytest.raises(MissingWeightsError, match="does not exist"):
        MetricEngine(models="default", metrics=["dino"], detector=None, weights={"dino": tmp_path / "nowhere"})


def test_weights_dir_env_is_used(monkeypatch, tmp_path):
    root = tmp_path / "weights"
    root.mkdir()
    os.symlink(tiny_weights("dino"), root / "dino")
    monkeypatch.setenv("PICBENCH_WEIGHTS_DIR", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = MetricEngine(models="default", metrics=["dino"], detector=None)
    assert engine.provenance()["smoke"] is False
    assert engine.dino.folder == root / "dino"


def test_unknown_metric_and_detector_are_refused():
    with pytest.raises(UnknownNameError, match="did you mean 'clip_i'"):
        MetricEngine(models="tiny", metrics=["clip-i"], detector=None)
    with pytest.raises(Exception, match="needs a detector"):
        MetricEngine(models="tiny", metrics=["iou"], detector=None)
    with pytest.raises(UnknownNameError, match="unknown detector"):
        MetricEngine(models="tiny", detector="yolo")


def test_unreadable_reference_is_a_subject_failure(tmp_path, generated, data_dir):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "good.jpg").write_bytes((data_dir / DOG).read_bytes())
    (tmp_path / "refs" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    sample = Sample(
        "refs",
        "a dog",
        256,
        256,
        "single",
        (Subject("dog", "dog", ("refs/good.jpg",), ("refs/good.jpg", "refs/bad.jpg", "refs/gone.jpg")),),
    )
    engine = MetricEngine(models="tiny", metrics=["clip_i"], detector=None)
    score = next(engine.score([ScoreItem(sample, 0, generated["cat"])], tmp_path))
    assert score.metrics["clip_i"] is not None  # scored against the readable reference
    assert "bad.jpg" in score.subjects[0].failure and "gone.jpg" in score.subjects[0].failure
    assert any("bad.jpg" in f for f in score.failures)


def test_vision_r1_in_the_engine_records_its_raw_answer(generated, data_dir):
    engine = MetricEngine(models="tiny", metrics=["iou", "ap"], detector="vision-r1")
    engine.detector.max_new_tokens = 8
    score = next(engine.score([ScoreItem(POSITIONED, 0, generated["bear"])], data_dir))
    assert isinstance(score.detector_raw, str)
    if not score.detections:  # random weights: gibberish, recorded as the failure; the subject scores IoU 0
        assert score.metrics["iou"] == 0.0 and any("unparseable" in f or "found none" in f for f in score.failures)
    assert engine.provenance()["detector"]["prompt"] == "Locate every {category} in the image and output the coordinates in JSON format."
    assert engine.provenance()["detector"]["query_mode"] == "one query per category"
    assert engine.fingerprint()["detector_queries"]["query_mode"] == "one query per category"  # a change of query mode rescores


def test_the_fingerprint_keeps_the_field_names_stored_keys_are_made_of():
    """The fingerprint's hash keys every stored score (runner._scorer_key, BMPDS' scorer key), the
    cached intervals and the cached provenance: a renamed field would rescore every run made
    before (docs/metrics.md, "Inside the metric engine")."""
    engine = MetricEngine(models="tiny", metrics=["clip_i", "clip_t"], detector=None, identity_sets=("default", "references"))
    fingerprint = engine.fingerprint()
    assert list(fingerprint) == [
        "smoke",
        "models",
        "detector",
        "detector_queries",
        "metrics",
        "weights",
        "metric_models",
        "clip_arch",
        "clip_openai",
        "precision",
        "identity_sets",
    ]
    assert fingerprint["identity_sets"] == ["default", "references"] and set(fingerprint["weights"]) == {"clip"}
    assert not engine.built  # known without building a model
