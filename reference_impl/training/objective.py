"""The training objective, as UNO trains (bytedance/UNO @ d305981, `train.py`), with VAA.

Per pair: the target image and the references are VAE-encoded (no grad) and packed
(:func:`encode_pair`), keeping the posterior's mean and standard deviation; each micro-batch draws
its latents as posterior samples from its generator (UNO's `train.py:364-365` @ d305981 encodes
with BFL's sampling autoencoder; UNO draws from the global RNG). Per micro-batch (:func:`prepare_inputs`): times t come from UNO's resolution-shifted schedule with mu from *this* bucket's packed
token count (`schedule.training_times`; UNO computes one mu for its single resolution); noise n
gives `x_t = (1 - t) x0 + t n` and the target `v = n - x0` (UNO: `x_t = (1 - t) x_1 + t x_0`,
loss `mse(pred, x_0 - x_1)` with its x_0 the noise). The transformer sees `[text, x_t, refs]`:
clean reference tokens in the same sequence, so they share the target's timestep modulation;
FLUX's guidance embedding is fixed at `guidance` (UNO: 1). The loss is the mean squared error on
target tokens only. The transformer call is `conditioning.transformer_step`, the one inference
makes. With VAA the conditioning (layout, UnoPE ids, VWR weights, backend plan) is
`conditioning.build_conditioning`, the function inference uses. Captions are dropped to "" with
probability `caption_dropout` (UNO's `text_dropout`). All randomness comes from the generator
passed in, so a micro-batch gets the same noise, times and dropout wherever and whenever it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import FluxPipeline
from PIL import Image

from picbench.reference_impl.conditioning import (
    Conditioning,
    build_conditioning,
    encode_posterior,
    transformer_step,
)
from picbench.reference_impl.schedule import training_times
from picbench.reference_impl.training.data import LoadedPair
from picbench.reference_impl.vaa import VAASettings


@dataclass
class ModelInputs:
    """One micro-batch as transformer inputs (everything but the LoRA weights)."""

    noisy: torch.Tensor  # [B, n_target, C]
    references: torch.Tensor  # [B, n_refs_tokens, C]
    velocity: torch.Tensor  # [B, n_target, C], the regression target n - x0
    times: torch.Tensor  # [B]
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor
    conditioning: Conditioning
    guidance: torch.Tensor | None


@dataclass(frozen=True)
class EncodedPair:
    """A pair's VAE posterior as tokens (mean and standard deviation, shifted and scaled as FLUX
    expects: deterministic, so they can be cached) and its layout. Without stds the means are used."""

    prompt: str
    target: torch.Tensor  # [1, n_target, C], the posterior mean
    target_hw: tuple[int, int]
    references: torch.Tensor  # [1, n_ref_tokens, C], references in subject order
    ref_hws: tuple[tuple[int, int], ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    depths: tuple[int, ...]
    target_std: torch.Tensor | None = None
    references_std: torch.Tensor | None = None

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Target and reference tokens drawn from the posterior (float32, on the CPU generator's draws)."""
        return _draw(self.target, self.target_std, generator), _draw(self.references, self.references_std, generator)


def _draw(mean: torch.Tensor, std: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    if std is None:
        return mean.float()
    return mean.float() + std.float() * torch.randn(mean.shape, generator=generator).to(mean.device)


@torch.no_grad()
def encode_pair(pipe: FluxPipeline, pair: LoadedPair) -> EncodedPair:
    device = pipe.transformer.device
    target, target_std, target_hw = _posterior_tokens(pipe, pair.target, device)
    refs = [_posterior_tokens(pipe, ref, device) for ref in pair.references]
    return EncodedPair(
        pair.prompt,
        target,
        target_hw,
        torch.cat([m for m, _, _ in refs], dim=1),
        tuple(hw for _, _, hw in refs),
        pair.boxes,
        pair.depths,
        target_std,
        torch.cat([s for _, s, _ in refs], dim=1),
    )


def _posterior_tokens(pipe: FluxPipeline, image: Image.Image, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Packed float32 tokens of `(mean - shift) * scale` and `std * scale`, and the token grid."""
    mean, std = encode_posterior(pipe, image, device)
    config = pipe.vae.config
    _, c, h, w = mean.shape
    pack = FluxPipeline._pack_latents
    return (
        pack(((mean - config.shift_factor) * config.scaling_factor).float(), 1, c, h, w),
        pack((std * config.scaling_factor).float(), 1, c, h, w),
        (h // 2, w // 2),
    )


@torch.no_grad()
def prepare_inputs(
    pipe: FluxPipeline,
    batch: Sequence[EncodedPair],
    generator: torch.Generator,
    *,
    caption_dropout: float,
    guidance: float,
    vaa: VAASettings,
    logit_normal: bool = False,
    max_sequence_length: int = 512,
) -> ModelInputs:
    """Pairs of one bucket and reference shape -> transformer inputs, all randomness from `generator`."""
    device, dtype = pipe.transformer.device, pipe.transformer.dtype
    drop = torch.rand(len(batch), generator=generator) < caption_dropout
    prompts = ["" if d else pair.prompt for pair, d in zip(batch, drop.tolist())]
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(
        prompts, prompt_2=None, device=device, max_sequence_length=min(max_sequence_length, pipe.tokenizer_2.model_max_length)
    )
    target_hw, ref_hws = batch[0].target_hw, batch[0].ref_hws
    n_target = batch[0].target.shape[1]
    times = training_times(n_target, len(batch), generator, logit_normal=logit_normal)
    noise = torch.randn((len(batch), *batch[0].target.shape[1:]), generator=generator)
    drawn = [pair.sample(generator) for pair in batch]
    x0 = torch.cat([target for target, _ in drawn])
    ref_tokens = torch.cat([refs for _, refs in drawn]).to(dtype)
    t = times.to(device)[:, None, None]
    noise = noise.to(device)
    noisy = (1 - t) * x0 + t * noise
    cond = build_conditioning(
        prompt_embeds.shape[1],
        target_hw,
        ref_hws,
        [(pair.boxes, pair.depths) for pair in batch],
        vaa=vaa,
        device=device,
        dtype=dtype,
    )
    guidance_t = torch.full([len(batch)], guidance, device=device, dtype=torch.float32) if pipe.transformer.config.guidance_embeds else None
    return ModelInputs(noisy.to(dtype), ref_tokens, (noise - x0), times.to(device), prompt_embeds, pooled, text_ids, cond, guidance_t)


def predict(transformer: torch.nn.Module, inputs: ModelInputs, references: torch.Tensor | None = None) -> torch.Tensor:
    """The velocity the transformer predicts on the target tokens (`references` overrides the
    reference tokens, e.g. with a tensor that requires grad)."""
    return transformer_step(
        transformer,
        inputs.noisy,
        inputs.references if references is None else references,
        inputs.times,
        inputs.conditioning,
        prompt_embeds=inputs.prompt_embeds,
        pooled=inputs.pooled,
        text_ids=inputs.text_ids,
        guidance=inputs.guidance,
    )


def flow_matching_loss(transformer: torch.nn.Module, inputs: ModelInputs) -> torch.Tensor:
    """Mean squared error of the predicted velocity on target tokens, in fp32."""
    return F.mse_loss(predict(transformer, inputs).float(), inputs.velocity.float())
