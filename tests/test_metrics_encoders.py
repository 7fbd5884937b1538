"""Encoders: tiny models in the real on-disk formats, each model's original preprocessing."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import transforms as T

from picbench.imaging import load_rgb
from picbench.metrics.encoders import IMAGENET_MEAN, IMAGENET_STD, HFClipEncoder, OpenClipEncoder, load_clip, load_dino
from picbench.tiny.metric_models import OPENAI_MEAN, OPENAI_STD, tiny_weights

PROMPTS = ["a backpack in the jungle", "A DOG's toy, with 3 balls!!", "a red cube on top of a blue cube"]


@pytest.fixture(scope="module")
def photo(data_dir: Path):
    return load_rgb(data_dir / "dreambench/dataset/dog/00.jpg")


def test_tiny_models_are_saved_in_the_real_loaders_formats():
    clip, dino, hf = tiny_weights("clip"), tiny_weights("dino"), tiny_weights("hf_clip")
    assert (clip / "open_clip_config.json").is_file() and (clip / "open_clip_model.safetensors").is_file()
    assert json.loads((dino / "config.json").read_text())["architecture"] == "vit_small_patch16_224"
    assert (dino / "model.safetensors").is_file()
    assert json.loads((hf / "config.json").read_text())["model_type"] == "clip"
    assert isinstance(load_clip(clip), OpenClipEncoder) and isinstance(load_clip(hf), HFClipEncoder)


def test_dino_preprocessing_is_dreambooths_protocol(photo):
    enc = load_dino(tiny_weights("dino"))
    reference = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    assert torch.allclose(enc.preprocess(photo), reference(photo), atol=1e-6)
    assert enc.preprocessing["crop_pct"] == 224 / 256 and enc.preprocessing["interpolation"] == "bicubic"


def test_clip_preprocessing_is_openais(photo):
    enc = load_clip(tiny_weights("clip"))
    reference = T.Compose(
        [T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)]
    )
    assert torch.allclose(enc.preprocess(photo), reference(photo), atol=1e-6)


def test_embeddings_are_unit_norm_float32(photo):
    for enc in (load_clip(tiny_weights("clip")), load_dino(tiny_weights("dino"))):
        emb = enc.encode_images(torch.stack([enc.preprocess(photo), enc.preprocess(photo.rotate(90))]))
        assert emb.dtype == torch.float32
        assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
        assert enc.forward_seconds > 0


def test_hf_clip_tokenizer_is_clips_bpe():
    import open_clip

    enc = load_clip(tiny_weights("hf_clip"))
    for prompt in PROMPTS:
        ours = enc.processor.tokenizer(prompt)["input_ids"]
        theirs = open_clip.tokenize([prompt])[0].tolist()
        assert ours == theirs[: len(ours)] and theirs[len(ours)] == 0


@pytest.mark.parametrize("role", ["clip", "hf_clip"])
def test_long_prompts_are_truncated_with_a_warning(role, caplog):
    enc = load_clip(tiny_weights(role))
    long_prompt = " ".join(["a very small red dog"] * 30)
    with caplog.at_level(logging.WARNING, logger="picbench.metrics.encoders"):
        emb = enc.encode_texts([long_prompt, "a dog"])
    assert emb.shape[0] == 2 and "truncated to 77" in caplog.text


def test_model_id_follows_the_weights(tmp_path):
    original = load_dino(tiny_weights("dino"))
    changed = tmp_path / "dino"
    shutil.copytree(tiny_weights("dino"), changed)
    from safetensors.torch import load_file, save_file

    state = load_file(changed / "model.safetensors")
    state["cls_token"] = state["cls_token"] + 1.0
    save_file(state, changed / "model.safetensors")
    other = load_dino(changed)
    assert other.model_id != original.model_id and other.weights_sha256 != original.weights_sha256
    assert other.preprocessing == original.preprocessing


def test_hub_snapshot_prefers_open_clips_checkpoint_over_timms(tmp_path):
    from picbench.metrics.encoders import _bare_checkpoint

    for name in ("model.safetensors", "open_clip_pytorch_model.bin", "ViT-B-32.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert _bare_checkpoint(tmp_path).name == "open_clip_pytorch_model.bin"
    (tmp_path / "open_clip_pytorch_model.bin").unlink()
    assert _bare_checkpoint(tmp_path).name == "ViT-B-32.pt"


def test_an_embedding_does_not_depend_on_its_batch():
    """A batch of one takes another CPU kernel; padded to two, every row equals its row in any batch."""
    import torch

    from picbench.metrics.encoders import MIN_BATCH

    assert MIN_BATCH == 2
    torch.manual_seed(0)
    pixels = torch.randn(5, 3, 224, 224)
    for encoder in (load_clip(tiny_weights("clip")), load_dino(tiny_weights("dino"))):
        whole = encoder.encode_images(pixels)
        for start, size in ((0, 1), (4, 1), (1, 2), (2, 3)):
            assert torch.equal(encoder.encode_images(pixels[start : start + size]), whole[start : start + size])
    clip = load_clip(tiny_weights("clip"))
    texts = ["a cat in front of a backpack", "a dog on the grass", "a bowl of berries"]
    together = clip.encode_texts(texts)
    assert all(torch.equal(clip.encode_texts([t])[0], together[i]) for i, t in enumerate(texts))


def test_cpu_chunks_give_the_rows_of_one_batch():
    """CPU forwards go CPU_FORWARD_CHUNK images at a time; 9 images (a chunk and a chunk of one)
    come out as each image alone, padded, would."""
    import torch

    from picbench.metrics.encoders import CPU_FORWARD_CHUNK

    torch.manual_seed(1)
    pixels = torch.randn(CPU_FORWARD_CHUNK + 1, 3, 224, 224)
    for encoder in (load_clip(tiny_weights("clip")), load_dino(tiny_weights("dino"))):
        together = encoder.encode_images(pixels)
        assert together.shape[0] == CPU_FORWARD_CHUNK + 1
        alone = torch.cat([encoder.encode_images(pixels[i : i + 1]) for i in range(len(pixels))])
        assert torch.equal(together, alone)
