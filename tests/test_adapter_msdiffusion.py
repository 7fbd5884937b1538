"""MS-Diffusion adapter: tiny end-to-end runs on real DreamBench references, the argument
translation, the box-masked cross-attention, and the ms_adapter.bin loader on a random state dict
in the released key layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from picbench.adapters.msdiffusion import (
    SDXL_REPO,
    TINY_RESAMPLER,
    TINY_VERSION,
    BoxMaskedIPAttnProcessor,
    GroundingResampler,
    MSDiffusionMethod,
    PerceiverAttention,
    ResamplerConfig,
    attention_grid,
    box_token_masks,
    build_tiny_checkpoints,
    install_ms_processors,
    load_ms_adapter,
    native_size,
    resampler_shape,
    translate_sample,
    write_random_adapter,
)
from picbench.errors import MissingWeightsError
from picbench.records import Sample, Subject

BOXES = ((0.0, 0.1, 0.5, 0.9), (0.5, 0.2, 1.0, 1.0))


def dreambench_sample(data_dir: Path, index: int, *, boxes=None, width: int = 64, height: int = 64) -> Sample:
    """Entry ``index`` of UNO's dreambench_multiip.json (the common evaluation list) as a Sample."""
    entry = json.loads((data_dir / "dreambench/dreambench_multiip.json").read_text())[index]
    subjects = []
    for i, path in enumerate(entry["image_paths"]):
        rel = path.replace("./dreambooth/dataset/", "dreambench/dataset/")
        name = rel.split("/")[2]
        subjects.append(Subject(name, name.split("_")[-1], (rel,), box=boxes[i] if boxes else None))
    return Sample(f"multi-{index}", entry["prompt"], width, height, "multi", tuple(subjects))


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("msd_home")


@pytest.fixture(scope="module")
def tiny_method(tiny_home: Path) -> MSDiffusionMethod:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PICBENCH_HOME", str(tiny_home))
        method = MSDiffusionMethod(models="tiny")  # smoke defaults: 2 steps on a 64 px canvas
        method.load()
    return method


def test_end_to_end_on_real_dreambench_samples(tiny_method: MSDiffusionMethod, data_dir: Path) -> None:
    pair = dreambench_sample(data_dir, 0, boxes=BOXES)
    unboxed_portrait = dreambench_sample(data_dir, 5, width=48, height=64)  # no layout: full-image boxes
    images = tiny_method.generate([pair, unboxed_portrait], seed=3, data_root=data_dir)
    assert [im.size for im in images] == [(64, 64), (48, 64)]
    assert all(im.mode == "RGB" for im in images)
    assert tiny_method.smoke and tiny_method.cache_params()["steps"] == 2 and tiny_method.params["guidance"] == 7.5
    assert MSDiffusionMethod(models="tiny", params={"steps": 5}).params["steps"] == 5
    assert MSDiffusionMethod().params["steps"] == 30


def test_translation_follows_the_authors_inference_script(data_dir: Path) -> None:
    sample = dreambench_sample(data_dir, 0, boxes=BOXES, width=512, height=256)
    x = translate_sample(sample, data_dir, MSDiffusionMethod.default_params)
    assert x.prompt == "best quality, high quality, " + sample.prompt
    assert x.negative_prompt == "monochrome, lowres, bad anatomy, worst quality, low quality"
    assert x.phrases == tuple(s.class_word for s in sample.subjects)
    assert x.boxes == BOXES
    assert x.references == tuple((data_dir / s.references[0]).resolve() for s in sample.subjects)
    assert (x.out_width, x.out_height) == (512, 256)
    assert x.width % 32 == 0 and x.height % 32 == 0 and abs(x.width / x.height - 2) < 0.1
    assert abs(x.width * x.height - 1024**2) / 1024**2 < 0.05
    no_layout = translate_sample(dreambench_sample(data_dir, 0), data_dir, MSDiffusionMethod.default_params)
    assert no_layout.boxes == ((0.0, 0.0, 1.0, 1.0),) * 2
    assert native_size(1024, 1024, 1024) == (1024, 1024)


def test_box_masks_use_floor_and_ceil_per_axis() -> None:
    masks = box_token_masks(torch.tensor([[[0.3, 0.0, 0.6, 0.5]]]), (2, 4))  # 2 rows, 4 cols
    grid = masks.view(2, 4)
    # cols floor(1.2)=1 .. ceil(2.4)=3 (exclusive), rows 0 .. ceil(1.0)=1 (exclusive)
    assert grid.tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert box_token_masks(torch.zeros(1, 1, 4), (4, 4)).sum() == 0  # the unconditional "no box"


def test_attention_grid_follows_unet_downsampling() -> None:
    assert attention_grid(128 * 128, (128, 128)) == (128, 128)
    assert attention_grid(32 * 24, (64, 48)) == (32, 24)
    assert attention_grid(3 * 2, (5, 3)) == (3, 2)  # stride-2 convs round up
    with pytest.raises(ValueError):
        attention_grid(7, (8, 8))


def _attention_and_states(num_tokens: int, seed: int = 0):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(seed)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=2, dim_head=16).eval()
    proc = BoxMaskedIPAttnProcessor(32, 16, num_tokens, scale=0.6)
    hidden = torch.randn(1, 16, 32)  # a 4x4 latent grid
    encoder = torch.randn(1, 77 + 4 + 2 * num_tokens, 16)
    return attn, proc, hidden, encoder


def test_image_tokens_reach_only_their_box() -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn, proc, hidden, encoder = _attention_and_states(num_tokens=3)
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    call = lambda enc: proc(attn, hidden, enc, boxes=boxes, latent_hw=(4, 4))[0].view(4, 4, -1)  # noqa: E731
    base = call(encoder)
    perturbed = encoder.clone()
    perturbed[:, 77 + 4 + 3 :] += 5.0  # subject 2's tokens only
    moved = call(perturbed)
    assert torch.allclose(base[:2, :2], moved[:2, :2], atol=1e-6)  # subject 1's box ignores subject 2
    assert not torch.allclose(base[2:, 2:], moved[2:, 2:], atol=1e-3)  # subject 2's box sees it
    text_only = AttnProcessor2_0()(attn, hidden, encoder[:, :77])[0].view(4, 4, -1)
    background = [(0, 2), (0, 3), (1, 2), (3, 0), (2, 1)]
    for r, c in background:  # outside every box: text attention only
        assert torch.allclose(base[r, c], text_only[r, c], atol=1e-5)
    assert not torch.allclose(base[0, 0], text_only[0, 0], atol=1e-4)


def test_fourier_box_embedding_is_frequency_major() -> None:
    cfg = ResamplerConfig(embedding_dim=8, output_dim=8, phrase_dim=4, dim=8, depth=1, dim_head=4, heads=2, num_queries=2)
    emb = GroundingResampler(cfg).fourier(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))[0]
    freqs = 100 ** (torch.arange(8) / 8)
    assert emb.shape == (8 * 2 * 4,)
    assert torch.allclose(emb[4:8], torch.cos(torch.tensor([0.1, 0.2, 0.3, 0.4]) * freqs[0]))
    assert torch.allclose(emb[8:12], torch.sin(torch.tensor([0.1, 0.2, 0.3, 0.4]) * freqs[1]))


def test_dropped_grounding_uses_the_learned_latents() -> None:
    cfg = ResamplerConfig(embedding_dim=8, output_dim=8, phrase_dim=4, dim=8, depth=1, dim_head=4, heads=2, num_queries=2)
    resampler = GroundingResampler(cfg).eval()
    features, phrases = torch.randn(2, 5, 8), torch.randn(2, 4)
    boxes_a, boxes_b = torch.rand(2, 4), torch.rand(2, 4)
    kept = resampler(features, boxes_a, phrases, torch.tensor([False, False]))
    assert not torch.allclose(kept, resampler(features, boxes_b, phrases, torch.tensor([False, False])))
    dropped_a = resampler(features, boxes_a, phrases, torch.tensor([True, True]))
    assert torch.allclose(dropped_a, resampler(features, boxes_b, phrases, torch.tensor([True, True])))


@pytest.fixture(scope="module")
def tiny_unet(tiny_home: Path, tiny_method: MSDiffusionMethod):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_home / "tiny" / TINY_VERSION / "sdxl" / "unet")


def test_loader_reads_the_released_key_layout(tiny_unet, tmp_path: Path) -> None:
    cfg = ResamplerConfig(embedding_dim=32, output_dim=64, phrase_dim=32, **TINY_RESAMPLER)
    path = tmp_path / "ms_adapter.bin"
    write_random_adapter(path, GroundingResampler(cfg), tiny_unet)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"image_proj", "ms_adapter", "dummy_image_tokens"}
    for key in (
        "grounding_latents",
        "latent_proj.0.weight",
        "latent_proj.2.bias",
        "latent_norm.weight",
        "proj_in.weight",
        "layers.0.0.to_kv.weight",
        "layers.0.0.norm2.bias",
        "layers.0.1.0.weight",
        "layers.0.1.3.weight",
        "norm_out.bias",
    ):
        assert key in state["image_proj"], key
    n_procs = len(tiny_unet.attn_processors)
    assert {k.split(".")[0] for k in state["ms_adapter"]} == {str(i) for i in range(1, n_procs, 2)}

    fresh = GroundingResampler(cfg)
    processors = install_ms_processors(tiny_unet, cfg.num_queries)
    dummy = load_ms_adapter(path, fresh, processors)
    assert torch.equal(dummy, state["dummy_image_tokens"])
    for key, value in state["image_proj"].items():
        assert torch.equal(fresh.state_dict()[key], value), key
    for index, proc in processors.items():
        assert torch.equal(proc.to_k_ip.weight, state["ms_adapter"][f"{index}.to_k_ip.weight"])
        assert torch.equal(proc.to_v_ip.weight, state["ms_adapter"][f"{index}.to_v_ip.weight"])

    del state["ms_adapter"]["1.to_v_ip.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1\.to_v_ip\.weight"):
        load_ms_adapter(path, fresh, processors)


def test_resampler_shape_is_read_off_the_checkpoint() -> None:
    """The released shape (MS-Diffusion @ 74eb2d6 inference.py: dim 1280, depth 4, 20 heads of 64,
    16 queries) comes back from its state dict; so does a small one with heads of 64."""
    released = ResamplerConfig(embedding_dim=1664, output_dim=2048, phrase_dim=1280)
    with torch.device("meta"):
        state = GroundingResampler(released).state_dict()
    shape = resampler_shape(state, 1280, source="released")
    assert shape == {"dim": 1280, "depth": 4, "dim_head": 64, "heads": 20, "num_queries": 16, "ff_mult": 4, "fourier_freqs": 8}
    small = ResamplerConfig(
        embedding_dim=32, output_dim=64, phrase_dim=32, dim=32, depth=2, dim_head=64, heads=1, num_queries=4, ff_mult=2, fourier_freqs=4
    )
    with torch.device("meta"):
        state = GroundingResampler(small).state_dict()
    assert resampler_shape(state, 32, source="small") == {
        "dim": 32,
        "depth": 2,
        "dim_head": 64,
        "heads": 1,
        "num_queries": 4,
        "ff_mult": 2,
        "fourier_freqs": 4,
    }
    with pytest.raises(ValueError, match="x.bin: image_proj lacks 'grounding_latents'"):
        resampler_shape({}, 32, source="x.bin")


def test_tiny_build_is_cached(tiny_home: Path, tiny_method: MSDiffusionMethod) -> None:
    folder = tiny_home / "tiny" / TINY_VERSION
    stamp = (folder / "built.json").stat().st_mtime_ns
    assert build_tiny_checkpoints(folder)["adapter"].is_file()
    assert (folder / "built.json").stat().st_mtime_ns == stamp


def test_offline_with_the_adapter_present_the_sdxl_base_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter file missing is the conformance suite's case; here the next checkpoint in line."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    (tmp_path / "MS-Diffusion").mkdir()
    (tmp_path / "MS-Diffusion" / "ms_adapter.bin").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match=SDXL_REPO):
        MSDiffusionMethod(weights_dir=tmp_path).load()


def test_resampler_attention_is_the_authors_formula_in_fp16() -> None:
    """MS-Diffusion @ 74eb2d6 msdiffusion/models/projection.py:96-117 written out: q and k scaled by
    dim_head^-1/4, explicit matmul, softmax in float32 cast back. SDPA rounds otherwise in fp16."""
    torch.manual_seed(0)
    block = PerceiverAttention(dim=64, dim_head=16, heads=4).half()
    x, latents = torch.randn(1, 40, 64).half(), torch.randn(1, 8, 64).half()
    xn, ln = block.norm1(x), block.norm2(latents)
    q = block.to_q(ln)
    k, v = block.to_kv(torch.cat((xn, ln), dim=-2)).chunk(2, dim=-1)
    reshape = lambda t: t.view(1, t.shape[1], 4, -1).transpose(1, 2).reshape(1, 4, t.shape[1], -1)  # noqa: E731
    q, k, v = reshape(q), reshape(k), reshape(v)
    scale = 1 / math.sqrt(math.sqrt(16))
    weight = (q * scale) @ (k * scale).transpose(-2, -1)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    expected = block.to_out((weight @ v).permute(0, 2, 1, 3).reshape(1, 8, -1))
    with torch.no_grad():
        assert torch.equal(block(x, latents), expected)
        sdpa = block.to_out(torch.nn.functional.scaled_dot_product_attention(q, k, v).permute(0, 2, 1, 3).reshape(1, 8, -1))
        assert not torch.equal(sdpa, expected)


def test_image_cross_attention_is_the_authors_formula_in_fp16() -> None:
    """attention_processor.py @ 74eb2d6: boxes to a -10000 bias (:136-170), text attention by SDPA
    (:314-327), image attention by `get_attention_scores`, probabilities zeroed outside every box,
    `bmm` (:364-382), `text + scale * image` (:384-385), then `to_out`."""
    attn, proc, hidden, encoder = _attention_and_states(num_tokens=2)
    attn, proc, hidden, encoder = attn.half(), proc.half(), hidden.half(), encoder.half()
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 1.0, 1.0]]], dtype=torch.float16)
    heads, n, side = 2, 16, 4
    start, end = torch.floor(boxes[:, :, 0:2] * side), torch.ceil(boxes[:, :, 2:4] * side)
    idx = torch.arange(side).unsqueeze(0)
    box_masks, dummy = [], torch.ones((1, n), dtype=torch.float16)
    for (x0, y0), (x1, y1) in zip(start[0].tolist(), end[0].tolist()):
        x_mask = ((idx >= x0) & (idx < x1)).half()
        y_mask = ((idx >= y0) & (idx < y1)).half()
        box_mask = torch.bmm(y_mask.unsqueeze(2), x_mask.unsqueeze(1)).reshape(1, -1)
        box_masks.append(box_mask)
        dummy = torch.clamp(dummy - box_mask, min=0)
    post_dummy = dummy.to(torch.bool).repeat_interleave(heads, dim=0)
    image_mask = (1 - torch.stack(box_masks, dim=-1).repeat_interleave(2, dim=-1)) * -10000.0
    image_mask = torch.cat([(1 - dummy.unsqueeze(-1).repeat_interleave(4, dim=-1)) * -10000.0, image_mask], dim=-1)
    image_mask = image_mask.repeat_interleave(heads, dim=0)
    with torch.no_grad():
        query = attn.to_q(hidden)
        text, image = encoder[:, :77], encoder[:, 77:]
        split = lambda t: t.view(1, -1, heads, 16).transpose(1, 2)  # noqa: E731
        text_out = torch.nn.functional.scaled_dot_product_attention(split(query), split(attn.to_k(text)), split(attn.to_v(text)))
        text_out = text_out.transpose(1, 2).reshape(1, -1, heads * 16).to(query.dtype)
        probs = attn.get_attention_scores(attn.head_to_batch_dim(query), attn.head_to_batch_dim(proc.to_k_ip(image)), image_mask)
        probs = torch.where(post_dummy.unsqueeze(-1), torch.zeros_like(probs), probs)
        image_out = attn.batch_to_head_dim(torch.bmm(probs, attn.head_to_batch_dim(proc.to_v_ip(image))))
        expected = attn.to_out[1](attn.to_out[0](text_out + proc.scale * image_out)) / attn.rescale_output_factor
        assert torch.equal(proc(attn, hidden, encoder, boxes=boxes, latent_hw=(4, 4)), expected)
