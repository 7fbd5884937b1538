"""Encoders as the references compute them (issue 19, items 6 and 8): fp32 by default, bf16 autocast
opt-in and never sharing cached embeddings with fp32; OpenAI CLIP weights always run with
QuickGELU, read from the loaded model's modules; a failed detector output counts as IoU 0."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from picbench.errors import PicbenchError
from picbench.metrics.cache import TABLE, EmbeddingCache
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.encoders import (
    HFClipEncoder,
    OpenClipEncoder,
    checked_activation,
    clip_activation,
    load_clip,
    load_dino,
    names_openai,
)
from picbench.metrics.engine import CONVENTIONS, MetricEngine
from picbench.records import Sample, Subject
from picbench.tiny.metric_models import tiny_weights

DOG = "dreambench/dataset/dog/00.jpg"
DOG_EVAL = ("dreambench/dataset/dog/00.jpg", "dreambench/dataset/dog/01.jpg", "dreambench/dataset/dog/02.jpg")


def _without_quick_gelu(tmp_path: Path, name: str) -> Path:
    """The tiny open_clip model in a folder called ``name`` whose open_clip_config.json lacks quick_gelu."""
    folder = tmp_path / name
    shutil.copytree(tiny_weights("clip"), folder)
    config = json.loads((folder / "open_clip_config.json").read_text())
    del config["model_cfg"]["quick_gelu"]
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


def test_quick_gelu_is_forced_whatever_the_open_clip_config_says(tmp_path: Path) -> None:
    plain = _without_quick_gelu(tmp_path, "some-clip")
    assert not names_openai(plain) and load_clip(plain).activation == "gelu"  # a folder that says nothing: the config alone
    assert OpenClipEncoder(plain, openai=False).activation == "gelu"
    forced = OpenClipEncoder(plain, openai=True)
    assert forced.activation == "quick_gelu" and clip_activation(forced.model) == "quick_gelu"
    assert any(type(m).__name__ == "QuickGELU" for m in forced.model.modules())
    assert not any(isinstance(m, torch.nn.GELU) for m in forced.model.modules())
    # a folder that says it holds OpenAI's weights (the hub cache folder's name) is forced without being told
    named = _without_quick_gelu(tmp_path, "models--timm--vit_base_patch32_clip_224.openai")
    detected = load_clip(named)
    assert detected.openai_weights and detected.activation == "quick_gelu"
    assert detected.provenance()["activation"] == "quick_gelu" and detected.model_id != OpenClipEncoder(plain, openai=False).model_id


def test_quick_gelu_is_forced_in_the_bare_checkpoint_and_transformers_paths(tmp_path: Path) -> None:
    import open_clip

    configs, bare = tmp_path / "configs", tmp_path / "bare"
    configs.mkdir()
    bare.mkdir()
    shutil.copy(tiny_weights("clip") / "open_clip_model.safetensors", bare / "open_clip_model.safetensors")
    model_cfg = json.loads((tiny_weights("clip") / "open_clip_config.json").read_text())["model_cfg"]
    del model_cfg["quick_gelu"]
    (configs / "picbench-tiny-clip.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(configs)  # an architecture name open_clip knows, as ViT-B-32 is for OpenAI's ViT-B-32.pt
    # an architecture name with a bare checkpoint: QuickGELU for OpenAI weights even when the caller asks for none
    assert OpenClipEncoder(bare, arch="picbench-tiny-clip", quick_gelu=False, openai=False).activation == "gelu"
    assert OpenClipEncoder(bare, arch="picbench-tiny-clip", quick_gelu=False, openai=True).activation == "quick_gelu"
    hf = tmp_path / "hf-clip"
    shutil.copytree(tiny_weights("hf_clip"), hf)
    config = json.loads((hf / "config.json").read_text())
    for tower in ("text_config", "vision_config"):
        config[tower]["hidden_act"] = "gelu"
    (hf / "config.json").write_text(json.dumps(config))
    assert HFClipEncoder(hf, openai=False).activation == "gelu"
    assert HFClipEncoder(hf, openai=True).activation == "quick_gelu"


def test_a_loaded_model_of_those_weights_without_quick_gelu_is_refused(tmp_path: Path) -> None:
    model = OpenClipEncoder(_without_quick_gelu(tmp_path, "plain"), openai=False).model
    with pytest.raises(PicbenchError, match="need QuickGELU"):
        checked_activation(model, True, tmp_path)
    assert checked_activation(model, False, tmp_path) == "gelu"


def test_encoders_default_to_fp32_and_bf16_is_a_different_model_id() -> None:
    fp32, bf16 = load_dino(tiny_weights("dino")), load_dino(tiny_weights("dino"), precision="bf16")
    assert fp32.precision == "fp32" and fp32.model_id.endswith(":fp32:cpu") and bf16.model_id.endswith(":bf16:cpu")
    pixels = torch.rand(2, 3, 224, 224)
    a, b = fp32.encode_images(pixels), bf16.encode_images(pixels)
    assert a.dtype == b.dtype == torch.float32
    assert not torch.equal(a, b) and torch.allclose(a, b, atol=0.05)  # autocast really ran in bf16
    with pytest.raises(PicbenchError, match="precision"):
        load_dino(tiny_weights("dino"), precision="fp16")


def test_the_cache_never_mixes_precisions(tmp_path: Path, data_dir: Path) -> None:
    """fp32 then bf16 autocast on one cache: two entries per reference image and encoder, and the
    bf16 run reads none of the fp32 embeddings."""
    sample = Sample("dog", "a dog", 512, 512, "single", (Subject("dog", "dog", (DOG,), DOG_EVAL),))
    image = data_dir / DOG_EVAL[-1]
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    scores = {}
    for precision in ("fp32", "bf16"):
        engine = MetricEngine(models="tiny", metrics=("clip_i", "dino"), detector=None, cache=cache, precision=precision)
        scores[precision] = next(engine.score([ScoreItem(sample, 0, image)], data_dir))
        assert engine.reference_encodes == 2 * len(DOG_EVAL)  # nothing served from the other precision's entries
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        model_ids = [row[0] for row in db.execute(f"SELECT DISTINCT model_id FROM {TABLE}")]
    assert len(model_ids) == 4 and {m.rsplit(":", 2)[1] for m in model_ids} == {"fp32", "bf16"}
    assert cache.count() == 4 * len(DOG_EVAL)
    assert scores["fp32"].metrics["dino"] != scores["bf16"].metrics["dino"]
    assert scores["fp32"].metrics["dino"] == pytest.approx(scores["bf16"].metrics["dino"], abs=0.05)


def test_a_failed_detector_output_counts_as_iou_zero(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 8: the faithful behaviour, as CONVENTIONS says: the item's subjects count as IoU 0 in the
    mean, the item is counted in n_failures, and an item without an image is left out."""
    positioned = Sample("pos", "a dog on the left", 512, 512, "single", (Subject("dog", "dog", (DOG,), box=(0.0, 0.1, 0.6, 0.9)),))
    engine = MetricEngine(models="tiny", metrics=("iou",), detector="grounding-dino")

    def broken(image, classes):
        raise RuntimeError("the detector's answer could not be decoded")

    monkeypatch.setattr(engine.detector, "detect", broken)
    items = [ScoreItem(positioned, 0, data_dir / DOG), ScoreItem(positioned, 1, None, failure="generation failed")]
    scores = list(engine.score(items, data_dir))
    assert scores[0].metrics["iou"] == 0.0 and any("detector grounding-dino failed" in f for f in scores[0].failures)
    assert scores[1].metrics["iou"] is None
    aggregate = engine.aggregate(scores, {positioned.id: positioned})
    assert aggregate["iou"] == 0.0 and aggregate["n_failures"] == 2
    assert "count as IoU 0 in the means" in CONVENTIONS and "excluded from means" not in CONVENTIONS
    assert np.isfinite(aggregate["iou"])
