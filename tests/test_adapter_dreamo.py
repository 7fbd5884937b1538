"""DreamO adapter: tiny end-to-end runs on real DreamBench references, the argument translation,
the token embeddings, and the loaders of DreamO's released files on random state dicts written in
their key layouts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from picbench.adapters.dreamo import (
    MAIN_FILE,
    T5_NEW_TOKENS,
    DreamOMethod,
    add_t5_tokens,
    area_resize,
    dreamo_lora_to_diffusers,
    fuse_loras,
    random_dreamo_lora,
    random_main_checkpoint,
    random_turbo_lora,
    reference_tensor,
    split_dreamo_lora,
    split_main_checkpoint,
    translate_sample,
)
from picbench.records import Sample, Subject


def dreambench_sample(data_dir: Path, index: int, *, width: int = 64, height: int = 64) -> Sample:
    """Entry ``index`` of UNO's dreambench_multiip.json (the common evaluation list) as a Sample."""
    entry = json.loads((data_dir / "dreambench/dreambench_multiip.json").read_text())[index]
    subjects = []
    for path in entry["image_paths"]:
        rel = path.replace("./dreambooth/dataset/", "dreambench/dataset/")
        name = rel.split("/")[2]
        subjects.append(Subject(name, name.split("_")[-1], (rel,)))
    return Sample(f"multi-{index}", entry["prompt"], width, height, "multi", tuple(subjects))


@pytest.fixture(scope="module")
def tiny_method(tmp_path_factory: pytest.TempPathFactory) -> DreamOMethod:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PICBENCH_HOME", str(tmp_path_factory.mktemp("dreamo_home")))
        method = DreamOMethod(models="tiny")  # smoke defaults: 2 steps, 64 px canvas and references
        method.load()
    return method


@pytest.fixture()
def tiny_pipe():
    from diffusers import FluxPipeline

    from picbench.tiny.flux import tiny_components

    return FluxPipeline(**tiny_components(seed=0))


def test_end_to_end_on_real_dreambench_pair(tiny_method: DreamOMethod, data_dir: Path) -> None:
    pair, portrait = dreambench_sample(data_dir, 0), dreambench_sample(data_dir, 7, width=48, height=64)
    images = tiny_method.generate([pair, portrait], seed=5, data_root=data_dir)
    assert [im.size for im in images] == [(64, 64), (48, 64)]
    assert tiny_method.cache_params() == {**DreamOMethod.default_params, **DreamOMethod.smoke_params, "models": "tiny"}


def test_translation_keeps_prompt_and_reference_order(data_dir: Path) -> None:
    sample = dreambench_sample(data_dir, 0, width=512, height=256)
    x = translate_sample(sample, data_dir, DreamOMethod.default_params)
    assert x.prompt == sample.prompt
    assert x.references == tuple((data_dir / s.references[0]).resolve() for s in sample.subjects)
    assert (x.out_width, x.out_height) == (512, 256)
    assert x.width % 16 == 0 and x.height % 16 == 0 and abs(x.width / x.height - 2) < 0.05
    square = translate_sample(dreambench_sample(data_dir, 0), data_dir, DreamOMethod.default_params)
    assert (square.width, square.height) == (1024, 1024)
    crowded = Sample(
        "c", "many things", 64, 64, "multi", tuple(Subject(f"s{i}", "dog", ("dreambench/dataset/dog/00.jpg",)) for i in range(10))
    )
    with pytest.raises(ValueError, match="at most 9"):
        translate_sample(crowded, data_dir, DreamOMethod.default_params)
    assert DreamOMethod.capabilities.boxes is False and DreamOMethod.capabilities.multi_subject


def _authors_resize_numpy_image_area(image: np.ndarray, area: int = 512 * 512) -> np.ndarray:
    """bytedance/DreamO @ 461e35b dreamo/utils.py:112-118, written out."""
    h, w = image.shape[:2]
    k = math.sqrt(area / (h * w))
    h = int(h * k) - (int(h * k) % 16)
    w = int(w * k) - (int(w * k) % 16)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def test_reference_preprocessing_matches_resize_area(data_dir: Path) -> None:
    """OpenCV's INTER_AREA as the authors resize; PIL's BOX filter (picbench before version 2) differs."""
    from picbench.imaging import load_rgb

    for name in ("dog/00.jpg", "backpack/00.jpg", "cat/00.jpg"):
        ref = load_rgb(data_dir / "dreambench/dataset" / name)
        resized = area_resize(ref, 512 * 512)
        expected = _authors_resize_numpy_image_area(np.array(ref))
        assert np.array_equal(np.asarray(resized), expected), name
        box = np.asarray(ref.resize(resized.size, Image.Resampling.BOX), dtype=np.int16)
        assert np.abs(box - expected).max() > 0, name
    w, h = resized.size
    assert w % 16 == 0 and h % 16 == 0 and w * h <= 512 * 512 and w * h > 0.9 * 512 * 512
    assert abs(w / h - ref.width / ref.height) < 0.05
    assert area_resize(Image.new("RGB", (1000, 500)), 512 * 512).size == (720, 352)  # int(724.08)-4, int(362.04)-10
    t = reference_tensor(Image.new("RGB", (16, 32), (255, 0, 128)))
    assert t.shape == (1, 3, 32, 16)
    assert torch.allclose(t[0, :, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)


def test_lora_layout_conversion_splits_fused_qkv(tiny_pipe) -> None:
    lora = random_dreamo_lora(tiny_pipe.transformer, rank=4, seed=1)
    assert "double_blocks_0.processor.qkv_lora1.down.weight" in lora and "single_blocks_0.processor.proj_lora.up.weight" in lora
    converted = dreamo_lora_to_diffusers(lora, source="test")
    down, up = lora["double_blocks_0.processor.qkv_lora1.down.weight"], lora["double_blocks_0.processor.qkv_lora1.up.weight"]
    for i, proj in enumerate(("to_q", "to_k", "to_v")):
        assert torch.equal(converted[f"transformer.transformer_blocks.0.attn.{proj}.lora_A.weight"], down)
        assert torch.equal(converted[f"transformer.transformer_blocks.0.attn.{proj}.lora_B.weight"], up.chunk(3)[i])
    assert torch.equal(
        converted["transformer.transformer_blocks.0.attn.to_add_out.lora_B.weight"], lora["double_blocks_0.processor.proj_lora2.up.weight"]
    )
    assert torch.equal(
        converted["transformer.single_transformer_blocks.0.proj_out.lora_A.weight"], lora["single_blocks_0.processor.proj_lora.down.weight"]
    )
    with pytest.raises(ValueError, match="single_blocks_0"):  # a double-stream site in a single block
        split_dreamo_lora({"single_blocks_0.processor.qkv_lora1.down.weight": torch.zeros(1, 1)}, source="test")
    with pytest.warns(UserWarning, match="not_a_lora"), pytest.raises(ValueError, match="no LoRA weights"):
        dreamo_lora_to_diffusers({"not_a_lora.weight": torch.zeros(1, 1)}, source="test")


def test_lora_keys_upstream_skips_or_passes_through_are_accepted_and_named(tiny_pipe) -> None:
    """bytedance/DreamO @ 461e35b convert_flux_lora_to_diffusers: keys holding "embedding" are
    skipped, other keys go to diffusers unchanged (which loads `transformer.*` LoRA keys and drops
    the rest); picbench does the same and names every ignored key in one warning."""
    lora = random_dreamo_lora(tiny_pipe.transformer, rank=4, seed=3)
    ready = "transformer.transformer_blocks.0.ff.net.2.lora_A.weight"
    extra = {
        "dreamo_extra_embedding.weight": torch.zeros(2, 2),
        "lora_te_text_model.alpha": torch.zeros(()),
        ready: torch.ones(4, 8),
        ready.replace("lora_A", "lora_B"): torch.ones(8, 4),
    }
    with pytest.warns(UserWarning, match=r"test: ignored 2 key\(s\).*dreamo_extra_embedding\.weight, lora_te_text_model\.alpha"):
        converted = dreamo_lora_to_diffusers({**lora, **extra}, source="test")
    assert torch.equal(converted[ready], extra[ready])
    assert converted.keys() - {ready, ready.replace("lora_A", "lora_B")} == dreamo_lora_to_diffusers(lora, source="test").keys()


def test_fused_lora_adds_weighted_low_rank_update(tiny_pipe) -> None:
    transformer = tiny_pipe.transformer
    before = transformer.transformer_blocks[0].attn.to_q.weight.detach().clone()
    lora = dreamo_lora_to_diffusers(random_dreamo_lora(transformer, rank=4, seed=2), source="test")
    fuse_loras(tiny_pipe, [("quality_neg", lora, -0.8)])
    a = lora["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"]
    b = lora["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
    after = transformer.transformer_blocks[0].attn.to_q.weight
    assert torch.allclose(after, before - 0.8 * b @ a, atol=1e-6)
    assert not any("lora" in name for name, _ in transformer.named_modules())  # fused and unloaded


def test_turbo_alpha_keys_are_applied_as_load_lora_weights_applies_them(tiny_pipe) -> None:
    """The authors load Turbo with `load_lora_weights` (dreamo/dreamo_pipeline.py:87-93), which turns
    a `.alpha` key into the scale alpha / rank; picbench before version 2 dropped them (scale 1)."""
    transformer = tiny_pipe.transformer
    before = transformer.transformer_blocks[0].attn.to_q.weight.detach().clone()
    turbo = random_turbo_lora(transformer, rank=4, seed=5, alpha=2.0)
    assert "transformer.transformer_blocks.0.attn.to_q.alpha" in turbo
    fuse_loras(tiny_pipe, [("turbo", turbo, 1.0)])
    a = turbo["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"]
    b = turbo["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"]
    after = transformer.transformer_blocks[0].attn.to_q.weight
    assert torch.allclose(after, before + (2.0 / 4) * b @ a, atol=1e-7)
    assert not torch.allclose(after, before + b @ a, atol=1e-7)


@pytest.mark.parametrize(
    ("version", "guidance", "loras"),
    [
        ("v1.1", 4.5, [("dreamo", 1.0), ("cfg", 1.0), ("turbo", 1.0), ("sft_lora", 1.0), ("dpo_lora", 1.25)]),
        ("v1", 3.5, [("dreamo", 1.0), ("cfg", 1.0), ("turbo", 1.0), ("quality_pos", 0.15), ("quality_neg", -0.8)]),
    ],
)
def test_versions_fuse_the_authors_loras_with_their_weights_and_guidance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, guidance: float, loras: list
) -> None:
    """v1.1 is the default (app.py:25, dreamo_generator.py:43, dreamo/dreamo_pipeline.py:47): SFT and DPO
    LoRAs at 1 and 1.25 (dreamo_pipeline.py:107-113), guidance 4.5 (app.py:171); v1: quality LoRAs at
    0.15 and -0.8 (dreamo_pipeline.py:97-106), guidance 3.5. The version is in the provenance."""
    import picbench.adapters.dreamo as dreamo

    monkeypatch.setenv("PICBENCH_HOME", str(tmp_path))
    fused: list = []
    original = dreamo.fuse_loras
    monkeypatch.setattr(dreamo, "fuse_loras", lambda pipe, given: (fused.extend(given), original(pipe, given)))
    method = DreamOMethod(models="tiny") if version == "v1.1" else DreamOMethod(models="tiny", params={"version": version})
    assert method.params["version"] == version and method.params["guidance"] == guidance
    assert f"ByteDance/DreamO {version} (" in method.checkpoints["dreamo"]
    method.load()
    assert [(name, weight) for name, _, weight in fused] == loras
    assert DreamOMethod(models="tiny", params={"version": "v1", "guidance": 5.0}).params["guidance"] == 5.0
    with pytest.raises(ValueError, match="version"):
        DreamOMethod(models="tiny", params={"version": "v2"})


def test_main_checkpoint_split_and_t5_tokens(tiny_pipe) -> None:
    state = random_main_checkpoint(tiny_pipe.transformer, tiny_pipe.text_encoder_2.config.d_model, seed=4)
    embeddings, lora = split_main_checkpoint(dict(state), source=MAIN_FILE)
    assert torch.equal(embeddings.task, state["dreamo_task_embedding.weight"])
    assert torch.equal(embeddings.index, state["dreamo_idx_embedding.weight"])
    assert not any(k.startswith("dreamo_") for k in lora) and len(lora) == len(state) - 3
    tok, enc = tiny_pipe.tokenizer_2, tiny_pipe.text_encoder_2
    add_t5_tokens(tok, enc, embeddings.t5_tokens)
    ids = tok("[ref#1]", add_special_tokens=False).input_ids
    assert len(ids) == 1
    assert torch.equal(enc.get_input_embeddings().weight[ids[0]], state["dreamo_t5_embedding.weight"][0])
    assert tok.convert_tokens_to_ids("[res]") == len(tok) - 1 and len(T5_NEW_TOKENS) == 10
    del state["dreamo_idx_embedding.weight"]
    with pytest.raises(ValueError, match="dreamo_idx_embedding"):
        split_main_checkpoint(state, source=MAIN_FILE)


def test_task_and_index_embeddings_reach_the_transformer(tiny_method: DreamOMethod) -> None:
    model = tiny_method.load()
    emb = model.token_embeddings(4, [2, 3])[0]
    assert emb.shape == (9, model.task.shape[1])
    assert torch.equal(emb[0], model.task[1]) and torch.equal(emb[3], model.task[1])
    assert torch.equal(emb[4], model.task[0] + model.index[1])
    assert torch.equal(emb[8], model.task[0] + model.index[2])
    x_embedder = model.pipe.transformer.x_embedder
    tokens = torch.randn(1, 9, x_embedder.in_features)
    model._token_embeddings = emb[None]
    try:
        hooked = x_embedder(tokens)
    finally:
        model._token_embeddings = None
    assert torch.allclose(hooked, x_embedder(tokens) + emb[None], atol=1e-6)
