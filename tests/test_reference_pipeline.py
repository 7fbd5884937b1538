"""PositionIC on FLUX with tiny random-weight components: processors, pipeline, UNO LoRA, bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from picbench.errors import MissingWeightsError
from picbench.imaging import load_rgb
from picbench.reference_impl.attention import SdpaAttention
from picbench.reference_impl.lora import convert_uno_lora, load_uno_lora, random_uno_lora, uno_lora_layout
from picbench.reference_impl.pipeline import PositionICPipeline
from picbench.reference_impl.processors import VAA_KWARG, JointMask, PositionICAttnProcessor, set_positionic_processors
from picbench.tiny.flux import tiny_components

# Two subjects, overlapping, the dog in front.
BOXES = [(0.05, 0.30, 0.55, 0.95), (0.40, 0.10, 0.95, 0.70)]
DEPTHS = [0, 1]
FAST = dict(num_inference_steps=2, width=64, height=64, ref_long_side=32)


@pytest.fixture(scope="module")
def pipe() -> PositionICPipeline:
    p = PositionICPipeline(**tiny_components(seed=0))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def refs(data_dir: Path) -> list:
    root = data_dir / "dreambench" / "dataset"
    return [load_rgb(root / "dog" / "00.jpg"), load_rgb(root / "backpack" / "00.jpg")]


def _seed(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _transformer_inputs(n_img: int = 16, n_text: int = 7) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(n_img, 3)
    ids[:, 1], ids[:, 2] = torch.arange(n_img) // 4, torch.arange(n_img) % 4
    return dict(
        hidden_states=torch.randn(1, n_img, 16, generator=g),
        encoder_hidden_states=torch.randn(1, n_text, 32, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.7]),
        img_ids=ids,
        txt_ids=torch.zeros(n_text, 3),
        guidance=torch.tensor([4.0]),
        return_dict=False,
    )


def test_processors_equal_diffusers_default_without_vaa() -> None:
    transformer = tiny_components(seed=3)["transformer"]
    inputs = _transformer_inputs()
    with torch.no_grad():
        reference = transformer(**inputs)[0]
        set_positionic_processors(transformer)
        ours = transformer(**inputs)[0]
    kinds = {type(p) for p in transformer.attn_processors.values()}
    assert kinds == {PositionICAttnProcessor}
    assert len(transformer.attn_processors) == 2  # one double-stream and one single-stream block
    assert torch.equal(reference, ours)


def test_masked_path_with_an_all_open_mask_equals_unmasked() -> None:
    """The [B, L, H, D] <-> [B, H, L, D] hand-off to the backend keeps tokens and heads in place."""
    transformer = tiny_components(seed=4)["transformer"]
    set_positionic_processors(transformer)
    inputs = _transformer_inputs(n_img=16, n_text=7)
    open_mask = JointMask(SdpaAttention(), torch.zeros(23, 23))
    closed = torch.zeros(23, 23)
    closed[7:, :7] = float("-inf")  # image tokens may not see the text
    with torch.no_grad():
        plain = transformer(**inputs)[0]
        masked = transformer(**inputs, joint_attention_kwargs={VAA_KWARG: open_mask})[0]
        blind = transformer(**inputs, joint_attention_kwargs={VAA_KWARG: JointMask(SdpaAttention(), closed)})[0]
    torch.testing.assert_close(masked, plain, rtol=1e-5, atol=1e-6)
    assert (blind - plain).abs().max() > 1e-3


def test_tiny_pipeline_on_dreambench_pair_is_seeded(pipe: PositionICPipeline, refs: list) -> None:
    a = pipe("a dog and a backpack on the grass", refs, BOXES, DEPTHS, generator=_seed(7), **FAST).images[0]
    b = pipe("a dog and a backpack on the grass", refs, BOXES, DEPTHS, generator=_seed(7), **FAST).images[0]
    c = pipe("a dog and a backpack on the grass", refs, BOXES, DEPTHS, generator=_seed(8), **FAST).images[0]
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(a), _pixels(c))


def test_output_has_the_exact_requested_size(pipe: PositionICPipeline, refs: list) -> None:
    image = pipe(
        "a dog and a backpack", refs, BOXES, DEPTHS, generator=_seed(0), num_inference_steps=1, width=72, height=40, ref_long_side=32
    ).images[0]
    assert image.size == (72, 40)


def test_vaa_mask_changes_the_result(pipe: PositionICPipeline, refs: list) -> None:
    with_vaa = pipe("a dog and a backpack", refs, BOXES, DEPTHS, generator=_seed(5), vaa=True, **FAST).images[0]
    without = pipe("a dog and a backpack", refs, BOXES, DEPTHS, generator=_seed(5), vaa=False, **FAST).images[0]
    swapped = pipe("a dog and a backpack", refs, BOXES, [1, 0], generator=_seed(5), vaa=True, **FAST).images[0]
    assert not np.array_equal(_pixels(with_vaa), _pixels(without))
    assert not np.array_equal(_pixels(with_vaa), _pixels(swapped))  # depth order reaches the mask


def test_vaa_settings_record_carries_all_four_settings(pipe: PositionICPipeline, refs: list) -> None:
    """`vaa=True/False` is the default record on/off; sigma, delta and the backend each reach the mask;
    the method's and the trainer's defaults are the record's."""
    from picbench.adapters.positionic import PositionICMethod
    from picbench.reference_impl.training.config import ModelConfig
    from picbench.reference_impl.vaa import VAASettings

    def latents(vaa: VAASettings | bool) -> torch.Tensor:
        return pipe("a dog and a backpack", refs, BOXES, DEPTHS, generator=_seed(5), vaa=vaa, output_type="latent", **FAST).images

    default = latents(VAASettings())
    assert torch.equal(default, latents(True)) and torch.equal(latents(VAASettings(vaa=False)), latents(False))
    assert not torch.equal(default, latents(False))
    with pytest.raises(ValueError, match="'sdpaa'"):
        latents(VAASettings(attention_backend="sdpaa"))
    for changed in (VAASettings(sigma=0.3), VAASettings(delta=0.2)):
        assert not torch.equal(default, latents(changed)), changed
    assert ModelConfig().vaa_settings == VAASettings() == PositionICMethod(models="tiny")._vaa_settings()


@pytest.mark.parametrize(
    ("boxes", "depths", "n_refs", "match"),
    [
        ([(0.1, 0.1, 1.2, 0.5), (0.2, 0.2, 0.6, 0.6)], [0, 1], 2, "outside"),
        ([(0.6, 0.1, 0.2, 0.5), (0.2, 0.2, 0.6, 0.6)], [0, 1], 2, "inverted"),
        ([(0.1, 0.1, 0.5, 0.5)], [0], 2, "only 1 boxes"),
        ([(0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6)], [1, 1], 2, "depth rank 1"),
    ],
)
def test_bad_layout_fails_before_any_model_runs(pipe: PositionICPipeline, refs: list, boxes, depths, n_refs, match) -> None:
    calls: list[str] = []
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(lambda *_a, _n=name: calls.append(_n))
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2")
    ]
    try:
        with pytest.raises(ValueError, match=match):
            pipe("a dog", (refs * 2)[:n_refs], boxes, depths, generator=_seed(0), **FAST)
    finally:
        for h in hooks:
            h.remove()
    assert calls == []


def test_vaa_without_boxes_is_refused(pipe: PositionICPipeline, refs: list) -> None:
    with pytest.raises(ValueError, match="VAA needs one box per reference"):
        pipe("a dog", refs, None, generator=_seed(0), **FAST)


def test_uno_lora_conversion_matches_unos_layer_semantics(tmp_path: Path) -> None:
    """The state dict is random, written in UNO's released key layout (bytedance/UNO
    uno/flux/util.py `set_lora` + uno/flux/modules/layers.py LoRA processors; see lora.py)."""
    components = tiny_components(seed=1)
    transformer = components["transformer"]
    uno = random_uno_lora(transformer, rank=4, seed=11)
    assert set(uno) == set(uno_lora_layout(transformer, rank=4))
    file = tmp_path / "dit_lora.safetensors"
    save_file(uno, str(file))
    pipe = PositionICPipeline(**components)
    load_uno_lora(pipe, file)

    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim

    def delta(module: torch.nn.Module) -> torch.Tensor:
        return module.lora_B["uno"].weight @ module.lora_A["uno"].weight * module.scaling["uno"]

    def unos(prefix: str) -> torch.Tensor:
        return uno[f"{prefix}.up.weight"] @ uno[f"{prefix}.down.weight"]

    block, single = transformer.transformer_blocks[0], transformer.single_transformer_blocks[0]
    checks = {
        "double_blocks.0.processor.qkv_lora1": [block.attn.to_q, block.attn.to_k, block.attn.to_v],
        "double_blocks.0.processor.qkv_lora2": [block.attn.add_q_proj, block.attn.add_k_proj, block.attn.add_v_proj],
        "single_blocks.0.processor.qkv_lora": [single.attn.to_q, single.attn.to_k, single.attn.to_v],
    }
    for prefix, modules in checks.items():
        full = unos(prefix)
        for part, module in enumerate(modules):
            torch.testing.assert_close(delta(module), full[part * dim : (part + 1) * dim])
    torch.testing.assert_close(delta(block.attn.to_out[0]), unos("double_blocks.0.processor.proj_lora1"))
    torch.testing.assert_close(delta(block.attn.to_add_out), unos("double_blocks.0.processor.proj_lora2"))
    torch.testing.assert_close(delta(single.proj_out), unos("single_blocks.0.processor.proj_lora"))


def test_uno_lora_outside_the_layout_is_refused() -> None:
    transformer = tiny_components(seed=1)["transformer"]
    uno = random_uno_lora(transformer, rank=2)
    with pytest.raises(ValueError, match="double_blocks.0.img_attn.qkv.lora_down.weight"):
        convert_uno_lora({**uno, "double_blocks.0.img_attn.qkv.lora_down.weight": torch.zeros(2, 2)}, source="x.safetensors")
    del uno["single_blocks.0.processor.proj_lora.up.weight"]
    with pytest.raises(ValueError, match="no matching 'single_blocks.0.processor.proj_lora.up.weight'"):
        convert_uno_lora(uno)


def test_saved_pipeline_loads_and_reproduces(pipe: PositionICPipeline, refs: list, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path / "tiny-flux")
    loaded = PositionICPipeline.from_pretrained(tmp_path / "tiny-flux")
    loaded.set_progress_bar_config(disable=True)
    a = pipe(
        "a dog and a backpack", refs, BOXES, DEPTHS, generator=_seed(3), num_inference_steps=1, width=32, height=32, ref_long_side=32
    ).images[0]
    b = loaded(
        "a dog and a backpack", refs, BOXES, DEPTHS, generator=_seed(3), num_inference_steps=1, width=32, height=32, ref_long_side=32
    ).images[0]
    assert np.array_equal(_pixels(a), _pixels(b))


def test_missing_weights_are_named(pipe: PositionICPipeline, tmp_path: Path) -> None:
    folder = tmp_path / "FLUX.1-dev"
    pipe.save_pretrained(folder)
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    shutil.rmtree(folder / "tokenizer_2")
    with pytest.raises(MissingWeightsError) as missing:
        PositionICPipeline.from_pretrained(folder)
    assert "transformer/ (weights" in str(missing.value) and "tokenizer_2/" in str(missing.value)
    assert "vae" not in str(missing.value).split("missing:")[1].split(";")[0]
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        PositionICPipeline.from_pretrained(tmp_path)
    with pytest.raises(MissingWeightsError, match="picbench-test/not-a-model"):
        PositionICPipeline.from_pretrained("picbench-test/not-a-model", local_files_only=True, cache_dir=str(tmp_path / "hub"))


def test_call_keeps_diffusers_names_and_output(pipe: PositionICPipeline, refs: list) -> None:
    """`num_inference_steps`, `guidance_scale`, `generator`, and an output object with `.images`."""
    from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput

    out = pipe(prompt="a dog and a backpack", references=refs, boxes=BOXES, generator=_seed(2), guidance_scale=3.0, **FAST)
    assert isinstance(out, FluxPipelineOutput) and len(out.images) == 1 and out.images[0].size == (64, 64)
    (images,) = pipe("a dog and a backpack", refs, BOXES, generator=_seed(2), guidance_scale=3.0, return_dict=False, **FAST)
    assert np.array_equal(_pixels(images[0]), _pixels(out.images[0]))
    latents = pipe("a dog and a backpack", refs, BOXES, generator=_seed(2), output_type="latent", **FAST).images
    assert latents.shape == (1, 16, 16)  # packed target tokens only: 4x4 grid at 64 px, 4 channels x 2x2
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe("a dog", refs, BOXES, num_inference_steps=0)


def test_uno_sampling_schedule_is_pinned(pipe: PositionICPipeline, refs: list) -> None:
    """bytedance/UNO @ d305981 uno/flux/pipeline.py:259-263: get_schedule(steps, (W//8)*(H//8)//(16*16));
    at 512x512 that is mu = 0.5 + (1.15-0.5)/(4096-256) * (16-256) = 0.459375. The times the
    transformer gets are UNO's float32 grid (uno/flux/sampling.py:179-207), to the bit."""
    from picbench.reference_impl.schedule import sampling_mu

    assert sampling_mu(512, 512) == pytest.approx(0.459375)
    assert sampling_mu(512, 512, "flux") == pytest.approx(0.63)  # diffusers' calculate_shift on 1024 packed tokens
    assert sampling_mu(1024, 1024) == pytest.approx(0.5 + 0.65 / 3840 * (64 - 256))
    seen: list[float] = []
    hook = pipe.transformer.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["timestep"].item()), with_kwargs=True)
    try:
        pipe("a dog", refs, BOXES, generator=_seed(0), **FAST)
    finally:
        hook.remove()
    m = (1.15 - 0.5) / (4096 - 256)  # UNO's get_lin_function and time_shift, written out
    mu = m * ((64 // 8) * (64 // 8) // (16 * 16)) + (0.5 - m * 256)
    assert mu == sampling_mu(64, 64)
    expected = (math.exp(mu) / (math.exp(mu) + (1 / torch.linspace(1, 0, 3) - 1) ** 1.0)).tolist()[:-1]
    assert seen == expected


def test_reference_resize_floors_the_short_side_as_uno() -> None:
    """bytedance/UNO @ d305981 uno/flux/pipeline.py preprocess_ref: short side int(long_size / long * short),
    then both sides center-cropped to multiples of 16."""
    from PIL import Image

    from picbench.reference_impl.conditioning import fit_reference

    assert fit_reference(Image.new("RGB", (500, 333)), 512).size == (512, 336)
    assert fit_reference(Image.new("RGB", (333, 500)), 320).size == (208, 320)  # int(320/500*333) = 213 -> 208
    # where the two differ after the crop: 512 * 656 / 1000 = 335.87 -> floor 335 -> 320 (rounding: 336 -> 336)
    assert fit_reference(Image.new("RGB", (1000, 656)), 512).size == (512, 320)
    assert fit_reference(Image.new("RGB", (656, 1000)), 512).size == (320, 512)


def test_per_sample_masks_equal_one_call_per_sample() -> None:
    """A training batch mixes boxes: each element gets its own plan, as if run alone."""
    from picbench.reference_impl.conditioning import build_conditioning
    from picbench.reference_impl.vaa import VAASettings

    layouts = [([(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)], [0, 1]), ([(0.2, 0.2, 0.9, 0.9), (0.0, 0.0, 0.4, 0.4)], [1, 0])]
    batch = build_conditioning(
        3, (4, 4), [(2, 2), (2, 2)], layouts, vaa=VAASettings(attention_backend="sdpa_lowrank"), device="cpu", dtype=torch.float32
    )
    alone = [
        build_conditioning(3, (4, 4), [(2, 2), (2, 2)], [x], vaa=VAASettings(attention_backend="sdpa"), device="cpu", dtype=torch.float32)
        for x in layouts
    ]
    q, k, v = torch.randn(3, 2, 2, 27, 8).unbind(0)
    mask = batch.joint_attention_kwargs["vaa"]
    assert mask.per_sample and len(mask.prepared) == 2
    out = mask(q, k, v)
    for i, cond in enumerate(alone):
        torch.testing.assert_close(
            out[i : i + 1], cond.joint_attention_kwargs["vaa"](q[i : i + 1], k[i : i + 1], v[i : i + 1]), rtol=1e-5, atol=1e-5
        )
    shared = build_conditioning(3, (4, 4), [(2, 2), (2, 2)], [layouts[0]] * 2, device="cpu", dtype=torch.float32)
    assert not shared.joint_attention_kwargs["vaa"].per_sample
