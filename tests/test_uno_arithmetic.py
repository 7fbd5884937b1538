"""`uno` and `positionic` compute as UNO's own code does (bytedance/UNO @ d305981), pinned formula by formula.

Each test writes the authors' expression out (file:line cited) and compares picbench's result with
it on small tensors, in bfloat16 on the CPU where rounding is the point. The whole-pipeline
comparison with UNO's own code is the parity suite's; these pin each place where bf16 rounding
differed before (issue 20).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from picbench.imaging import load_rgb
from picbench.reference_impl.conditioning import encode_image_tokens, fit_reference, uno_ref_long_side
from picbench.reference_impl.lora import load_uno_lora, random_uno_lora
from picbench.reference_impl.pipeline import PositionICPipeline
from picbench.reference_impl.schedule import sampling_mu, sampling_times
from picbench.tiny.flux import tiny_components

BF16 = torch.bfloat16


def _bf16_pipe(seed: int = 0) -> PositionICPipeline:
    """A tiny pipeline as the methods run it on CUDA: transformer and text encoders bf16, VAE float32."""
    pipe = PositionICPipeline(**tiny_components(seed=seed)).to(dtype=BF16)
    pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def refs(data_dir: Path) -> list[Image.Image]:
    root = data_dir / "dreambench" / "dataset"
    return [load_rgb(root / name / "00.jpg") for name in ("dog", "backpack", "cat", "clock")]


def _record_calls(pipe: PositionICPipeline) -> tuple[list[dict], list[torch.Tensor], object, object]:
    """Hooks recording each transformer call's keyword inputs and its output."""
    inputs: list[dict] = []
    outputs: list[torch.Tensor] = []
    pre = pipe.transformer.register_forward_pre_hook(lambda _m, _a, kw: inputs.append(dict(kw)), with_kwargs=True)
    post = pipe.transformer.register_forward_hook(lambda _m, _a, out: outputs.append(out[0]))
    return inputs, outputs, pre, post


@pytest.mark.parametrize("n_refs", [1, 2, 3, 4])
def test_reference_long_side_is_unos_rule(n_refs: int) -> None:
    """inference.py:94-95 (`512 if len(ref_imgs)==1 else 320`) and uno/flux/pipeline.py:225
    (`512 if len(ref_imgs) <= 1 else 320`): 320 for 3 and 4 references, not 256."""
    assert uno_ref_long_side(n_refs) == (512 if n_refs <= 1 else 320)


def test_three_references_enter_the_transformer_at_320(refs: list[Image.Image]) -> None:
    pipe = _bf16_pipe()
    inputs, _, pre, post = _record_calls(pipe)
    try:
        pipe("a dog, a backpack and a cat", refs[:3], vaa=False, num_inference_steps=1, width=32, height=32, output_type="latent")
    finally:
        pre.remove(), post.remove()
    ref_tokens = sum((w // 16) * (h // 16) for w, h in (fit_reference(r, 320).size for r in refs[:3]))
    assert inputs[0]["hidden_states"].shape[1] == 4 + ref_tokens  # 32x32 target = 2x2 tokens
    assert all(fit_reference(r, 320).size == (320, 320) for r in refs[:3])  # the DreamBench crops are square


def test_time_reaches_the_embedding_as_unos() -> None:
    """UNO: `t_vec = torch.full(..., t_curr, dtype=img.dtype)` (uno/flux/sampling.py:227), then
    `t = time_factor * t` and the sinusoid in float32 (uno/flux/modules/layers.py:43-64). picbench
    hands the transformer the same bf16 tensor; diffusers' FluxTransformer2DModel multiplies by 1000
    after its cast. The old hand-over (`bf16(1000 t) / 1000`) is off at 9 of 25 steps at 512 px."""
    pipe = _bf16_pipe()
    times = sampling_times(25, sampling_mu(512, 512))
    embed = pipe.transformer.time_text_embed.time_proj
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    old_off = 0
    for t_curr in times[:-1]:
        uno_t = 1000.0 * torch.full((1,), t_curr, dtype=BF16)
        args = uno_t[:, None].float() * freqs[None]
        uno_embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(uno_t)
        ours = torch.full([1], t_curr, dtype=BF16).to(BF16) * 1000  # transformer_flux.py: timestep.to(dtype) * 1000
        assert torch.equal(ours, uno_t)
        assert torch.equal(embed(ours).to(BF16), uno_embedding)
        old = (torch.tensor([t_curr * 1000], dtype=torch.float32).to(BF16) / 1000).to(BF16) * 1000
        old_off += int(not torch.equal(old, uno_t))
    assert old_off == 9


def test_euler_update_is_unos_in_bf16(refs: list[Image.Image]) -> None:
    """UNO's `denoise`: `img = img + (t_prev - t_curr) * pred` in the model dtype over get_schedule's
    float32 grid (uno/flux/sampling.py:226-239), not the scheduler's float32 step."""
    pipe = _bf16_pipe()
    inputs, outputs, pre, post = _record_calls(pipe)
    try:
        final = pipe("a dog", refs[:1], vaa=False, num_inference_steps=3, width=32, height=32, ref_long_side=32, output_type="latent")
    finally:
        pre.remove(), post.remove()
    latents = final.images
    n = latents.shape[1]
    times = sampling_times(3, sampling_mu(32, 32))
    img = inputs[0]["hidden_states"][:, :n]
    for k, (t_curr, t_prev) in enumerate(zip(times[:-1], times[1:])):
        assert torch.equal(inputs[k]["hidden_states"][:, :n], img)
        assert torch.equal(inputs[k]["timestep"], torch.full((1,), t_curr, dtype=img.dtype))
        img = img + (t_prev - t_curr) * outputs[k][:, :n]
    assert img.dtype == BF16 and torch.equal(latents, img)


def test_references_are_encoded_as_uno_with_the_seeded_generator(refs: list[Image.Image]) -> None:
    """UNO: `ae.encode(x.to(float32)).to(bfloat16)` (uno/flux/pipeline.py:266-272), its encoder a
    posterior sample `mean + exp(0.5 * logvar) * randn` then `scale * (z - shift)`
    (uno/flux/modules/autoencoder.py:283-287,317-320). picbench draws the sample from the caller's
    generator: after the initial noise, so the noise is UNO's draw."""
    pipe = _bf16_pipe()
    image = fit_reference(refs[0], 32)
    tokens, hw = encode_image_tokens(pipe, image, "cpu", BF16, torch.Generator().manual_seed(5))

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None] * 2.0 - 1.0  # TVF.to_tensor * 2 - 1
    mean, logvar = torch.chunk(pipe.vae.encoder(x), 2, dim=1)  # the tiny VAE, like FLUX's, has no quant_conv
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    z = (pipe.vae.config.scaling_factor * (z - pipe.vae.config.shift_factor)).to(BF16)
    expected = z.reshape(1, 4, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 4, 16)  # "b c (h ph) (w pw) -> b (h w) (c ph pw)"
    assert hw == (2, 2) and torch.equal(tokens, expected)

    inputs, _, pre, post = _record_calls(pipe)
    try:
        pipe(
            "a dog",
            [refs[0]],
            vaa=False,
            num_inference_steps=1,
            width=32,
            height=32,
            ref_long_side=32,
            generator=torch.Generator().manual_seed(9),
        )
    finally:
        pre.remove(), post.remove()
    g = torch.Generator().manual_seed(9)
    torch.randn((1, 4, 4, 4), generator=g, dtype=BF16)  # the initial noise comes first
    again, _ = encode_image_tokens(pipe, image, "cpu", BF16, g)
    assert torch.equal(inputs[0]["hidden_states"][:, 4:], again)


@pytest.mark.parametrize("file_dtype", [torch.float32, BF16])
def test_lora_branch_runs_in_the_files_precision_as_uno(tmp_path: Path, file_dtype: torch.dtype) -> None:
    """UNO's `LoRALinearLayer.forward` (uno/flux/modules/layers.py:115-125) casts the input to the
    LoRA's dtype (the file's: `load_state_dict(..., assign=True)`, uno/flux/util.py:290,311), casts
    `up(down(x))` back, and the processor adds `* lora_weight` to the fused qkv projection in the
    model dtype (layers.py:204)."""
    pipe = _bf16_pipe()
    transformer = pipe.transformer
    uno = {k: (v * 10).to(file_dtype) for k, v in random_uno_lora(transformer, rank=4, seed=3).items()}
    save_file(uno, str(tmp_path / "dit_lora.safetensors"))
    load_uno_lora(pipe, tmp_path / "dit_lora.safetensors")
    attn = transformer.transformer_blocks[0].attn
    assert attn.to_q.lora_A["uno"].weight.dtype == file_dtype

    x = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(4)).to(BF16)
    layers = (attn.to_q, attn.to_k, attn.to_v)
    fused_w = torch.cat([layer.base_layer.weight for layer in layers])
    fused_b = torch.cat([layer.base_layer.bias for layer in layers])
    down, up = uno["double_blocks.0.processor.qkv_lora1.down.weight"], uno["double_blocks.0.processor.qkv_lora1.up.weight"]
    lora = F.linear(F.linear(x.to(down.dtype), down), up).to(x.dtype)
    qkv = F.linear(x, fused_w, fused_b) + lora * 1
    ours = torch.cat([layer(x) for layer in layers], dim=-1)
    assert ours.dtype == BF16 and torch.equal(ours, qkv)
    if file_dtype == torch.float32:  # peft's own arithmetic adds in float32 and rounds once: not UNO's
        peft_way = (F.linear(x, fused_w, fused_b) + F.linear(F.linear(x.float(), down), up)).to(BF16)
        assert not torch.equal(peft_way, qkv)


@torch.no_grad()
def test_uno_decodes_in_float32_and_truncates_to_8_bits() -> None:
    """uno/flux/pipeline.py:297-303: `unpack(x.float())`, `ae.decode` (z / scale + shift), then
    `(127.5 * (x.clamp(-1, 1) + 1.0)).byte()`: truncation, half a grey level below rounding."""
    pipe = _bf16_pipe()
    latents = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(2)).to(BF16)  # 64x64 px
    image = pipe._decode(latents, 64, 64, "truncate")
    z = latents.float().reshape(1, 4, 4, 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, 4, 8, 8)  # unpack
    x = pipe.vae.decode(z / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
    expected = (127.5 * (x.clamp(-1, 1)[-1].permute(1, 2, 0) + 1.0)).byte().numpy()
    assert np.array_equal(np.asarray(image), expected)
    rounded = np.asarray(pipe._decode(latents, 64, 64, "round"), dtype=np.float64)
    assert 0.3 < rounded.mean() - expected.mean() < 0.7


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_uno_noise_draw_equals_the_float32_draw_on_cpu(refs: list[Image.Image], dtype: torch.dtype) -> None:
    """UNO's `get_noise` (uno/flux/sampling.py:28-45): `torch.randn(..., dtype=bfloat16,
    generator=torch.Generator(device).manual_seed(seed))`. On the CPU it equals picbench's earlier
    float32 draw cast to the model dtype (on CUDA it does not: benchmarks/gpu_check.py checks it there)."""
    pipe = PositionICPipeline(**tiny_components(seed=0)).to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(vaa=False, num_inference_steps=1, width=32, height=32, ref_long_side=32, output_type="latent")
    uno = pipe("a dog", refs[:1], generator=torch.Generator("cpu").manual_seed(3407), noise="uno", **kw).images
    old = pipe("a dog", refs[:1], generator=torch.Generator("cpu").manual_seed(3407), noise="float32", **kw).images
    assert torch.equal(uno, old)
    shape = (1, 4, 4, 4)
    a = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(3407), dtype=dtype)
    b = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(3407), dtype=torch.float32).to(dtype)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["uno", "positionic"])
def test_methods_pass_unos_choices(name: str) -> None:
    from picbench.methods import METHODS

    method = METHODS.get(name)(models="tiny")
    assert method.params["noise"] == "uno"
    assert method._generator(3407).device == torch.device("cpu") and method._generator(3407).initial_seed() == 3407
    assert method._call_params()["noise"] == "uno"
    assert method._call_params().get("to_8bit", "round") == ("truncate" if name == "uno" else "round")
    assert method.load().vae.dtype == torch.float32
    with pytest.raises(ValueError, match="noise"):
        METHODS.get(name)(models="tiny", params={"noise": "gpu"})


def test_trainer_draws_posterior_samples_as_unos_train(refs: list[Image.Image]) -> None:
    """UNO's train.py:364-365 encodes target and references with the sampling autoencoder (float32);
    picbench keeps each pair's posterior (mean, std tokens, shifted and scaled) and every
    micro-batch draws `mean + std * n` from its generator."""
    from picbench.reference_impl.training.data import LoadedPair
    from picbench.reference_impl.training.objective import encode_pair

    pipe = PositionICPipeline(**tiny_components(seed=0))
    target, ref = refs[0].resize((32, 32)), fit_reference(refs[1], 32)
    pair = encode_pair(pipe, LoadedPair("a dog", target, (ref,), ((0.0, 0.0, 1.0, 1.0),), (0,)))
    pixels = pipe.image_processor.preprocess(target, height=32, width=32).contiguous()  # NCHW, as UNO's TVF.to_tensor
    posterior = pipe.vae.encode(pixels).latent_dist
    scale, shift = pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor
    pack = PositionICPipeline._pack_latents
    assert torch.equal(pair.target, pack((posterior.mean - shift) * scale, 1, 4, 4, 4))
    assert torch.equal(pair.target_std, pack(posterior.std * scale, 1, 4, 4, 4))
    x0, drawn_refs = pair.sample(torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(x0, pair.target + pair.target_std * torch.randn(pair.target.shape, generator=g))
    assert torch.equal(drawn_refs, pair.references + pair.references_std * torch.randn(pair.references.shape, generator=g))
    assert not torch.equal(x0, pair.sample(torch.Generator().manual_seed(2))[0])
