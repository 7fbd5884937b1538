"""One PositionIC transformer call and what conditions it, in one place for the pipeline and the trainer.

A call sees the joint sequence `[text, target, ref_1 .. ref_K]`. Its conditioning is the token
layout, UnoPE position ids for the image tokens, and (with VAA) the VWR weights of each batch
element's boxes turned into a prepared mask for the chosen attention backend, handed to every
double- and single-stream block through `joint_attention_kwargs`. Inference
(:class:`~picbench.reference_impl.pipeline.PositionICPipeline`) and training
(:mod:`picbench.reference_impl.training`) both call :func:`build_conditioning`,
:func:`encode_image_tokens` and :func:`transformer_step`, so what the model learns from is exactly
what it is sampled with.

Reference preprocessing follows UNO's `preprocess_ref` (bytedance/UNO @ d305981,
`uno/flux/pipeline.py:70-98`): the long side becomes `long_side`, the short side is *floored*
(`int(long_side / long * short)`), then both are center-cropped down to multiples of 16.
Images are encoded as UNO's `UNOPipeline.forward` encodes references (`uno/flux/pipeline.py:266-272`):
by the VAE in its own dtype (float32 in the methods), a posterior *sample*, then cast to the
transformer's dtype. UNO draws that sample from torch's unseeded global RNG; here it comes from
the caller's generator, so a seed fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import FluxPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from picbench.reference_impl.attention import get_backend
from picbench.reference_impl.layout import TokenLayout
from picbench.reference_impl.processors import VAA_KWARG, JointMask
from picbench.reference_impl.unope import unope_image_ids
from picbench.reference_impl.vaa import VAASettings
from picbench.reference_impl.vwr import volume_weights

PATCH = 16
"""Pixels per transformer token: the VAE's 8x downsampling times FLUX's 2x2 latent packing."""

Box = Sequence[float]


def uno_ref_long_side(n_refs: int) -> int:
    """UNO's reference size by count: 512 for one, 320 for two or more (bytedance/UNO @ d305981,
    `inference.py:94-95` and `uno/flux/pipeline.py:225`)."""
    return 512 if n_refs <= 1 else 320


def fit_reference(image: Image.Image, long_side: int) -> Image.Image:
    """UNO's `preprocess_ref`: long side to `long_side`, short side floored, center-cropped to multiples of 16."""
    w, h = image.size
    if w >= h:
        new_w, new_h = long_side, int(long_side / w * h)
    else:
        new_w, new_h = int(long_side / h * w), long_side
    new_w, new_h = max(PATCH, new_w), max(PATCH, new_h)
    image = image.convert("RGB").resize((new_w, new_h), Image.Resampling.LANCZOS)
    crop_w, crop_h = new_w // PATCH * PATCH, new_h // PATCH * PATCH
    left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


def encode_image_tokens(
    pipe: FluxPipeline, image: Image.Image, device: torch.device | str, dtype: torch.dtype, generator: torch.Generator | None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Packed tokens [1, h*w, C*4] of an image whose sides are multiples of 16, and its token grid (h, w).

    As UNO: a posterior sample drawn from `generator` (None: torch's global RNG, as UNO), shifted
    and scaled in the VAE's dtype, then cast to `dtype`."""
    mean, std = encode_posterior(pipe, image, device)
    return pack_posterior_sample(pipe, mean, std, generator, dtype), (mean.shape[2] // 2, mean.shape[3] // 2)


def encode_posterior(pipe: FluxPipeline, image: Image.Image, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and standard deviation [1, C, H/8, W/8], in the VAE's dtype.

    The pixels are made contiguous (NCHW) as UNO's ``TVF.to_tensor`` gives them
    (`uno/flux/pipeline.py:268` @ d305981): diffusers' ``preprocess`` returns a channels-last view,
    and the convolutions then take another kernel path (7e-4 off in float32 on a tiny VAE, found by
    tests/parity/test_parity_uno.py)."""
    pixels = pipe.image_processor.preprocess(image, height=image.height, width=image.width).contiguous().to(device, pipe.vae.dtype)
    posterior = pipe.vae.encode(pixels).latent_dist
    return posterior.mean, posterior.std


def pack_posterior_sample(
    pipe: FluxPipeline, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype
) -> torch.Tensor:
    """`scale * ((mean + std * n) - shift)` packed to tokens and cast to `dtype`: UNO's `DiagonalGaussian`
    then `AutoEncoder.encode` (`uno/flux/modules/autoencoder.py:283-287,317-320` @ d305981)."""
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    latent = pipe.vae.config.scaling_factor * ((mean + std * noise) - pipe.vae.config.shift_factor)
    _, c, h, w = latent.shape
    return FluxPipeline._pack_latents(latent.to(dtype), 1, c, h, w)


@dataclass(frozen=True)
class Conditioning:
    """Everything a transformer call needs besides the tokens: layout, `img_ids`, `joint_attention_kwargs`."""

    layout: TokenLayout
    img_ids: torch.Tensor
    joint_attention_kwargs: dict[str, JointMask] | None


def build_conditioning(
    n_text: int,
    target_hw: tuple[int, int],
    ref_hws: Sequence[tuple[int, int]],
    layouts: Sequence[tuple[Sequence[Box], Sequence[int]]] | None,
    *,
    vaa: VAASettings = VAASettings(),
    device: torch.device | str,
    dtype: torch.dtype,
) -> Conditioning:
    """`layouts` holds (boxes, depth ranks) per batch element, reference k paired with box k (needed
    only with VAA on); `vaa.vaa` false: plain attention.

    One backend plan serves the whole batch when every element has the same boxes; otherwise each
    element gets its own plan (the VAA mask is per sample)."""
    layout = TokenLayout(n_text, tuple(target_hw), tuple(tuple(hw) for hw in ref_hws))
    img_ids = unope_image_ids(layout.target_hw, layout.ref_hws, device=device, dtype=dtype)
    if not vaa.vaa:
        return Conditioning(layout, img_ids, None)
    if layouts is None:
        raise ValueError("build_conditioning: VAA is on but no layouts (boxes and depth ranks) were given")
    backend = get_backend(vaa.attention_backend, device)
    plans: list[Any] = []
    for boxes, depths in _distinct(layouts):
        weights = volume_weights(boxes, depths, layout.target_hw, sigma=vaa.sigma, delta=vaa.delta).to(device)
        plans.append(backend.prepare(layout, weights, device=device, dtype=dtype))
    if len(plans) == 1:
        mask = JointMask(backend, plans[0])
    else:
        mask = JointMask(backend, tuple(plans), per_sample=True)
    return Conditioning(layout, img_ids, {VAA_KWARG: mask})


def _distinct(layouts: Sequence[tuple[Sequence[Box], Sequence[int]]]) -> list[tuple[list[tuple[float, ...]], list[int]]]:
    """The layouts as lists, collapsed to one when all elements share it."""
    as_lists = [([tuple(float(v) for v in b) for b in boxes], [int(d) for d in depths]) for boxes, depths in layouts]
    return as_lists[:1] if all(x == as_lists[0] for x in as_lists) else as_lists


def transformer_step(
    transformer: torch.nn.Module,
    target: torch.Tensor,
    references: torch.Tensor,
    timestep: torch.Tensor,
    conditioning: Conditioning,
    *,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    guidance: torch.Tensor | None,
) -> torch.Tensor:
    """The transformer on `[text, target, refs]`, keeping only the prediction for the target tokens.

    The reference tokens and the time (t in [0, 1]) are cast to the target's dtype first: the time
    is multiplied by 1000 inside the transformer after that cast, as UNO's `timestep_embedding`
    (bytedance/UNO @ d305981, `uno/flux/modules/layers.py:43-64`)."""
    out = transformer(
        hidden_states=torch.cat([target, references.to(target.dtype)], dim=1),
        timestep=timestep.to(target.dtype),
        guidance=guidance,
        pooled_projections=pooled,
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=conditioning.img_ids,
        joint_attention_kwargs=conditioning.joint_attention_kwargs,
        return_dict=False,
    )[0]
    return out[:, : target.shape[1]]
