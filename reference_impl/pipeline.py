"""`PositionICPipeline`: FLUX with in-context references, UnoPE, VWR and Visibility-Aware Attention.

A thin composition of diffusers' FLUX components (it is a `FluxPipeline`, so prompt encoding,
latent packing, LoRA loading and saving are diffusers' own), called as diffusers users call any
pipeline: `pipe(prompt, references=..., boxes=..., num_inference_steps=25, guidance_scale=4.0,
generator=torch.Generator().manual_seed(0)).images[0]`. What it adds:
- each reference image is resized as UNO's `preprocess_ref` does (long side `ref_long_side`,
  short side floored, cropped to multiples of 16), VAE-encoded to its mean latent, packed like
  the target and appended after the target tokens with UnoPE position ids;
- every step runs the transformer on `[target, ref_1 .. ref_K]` and keeps only the target's
  prediction; the clean reference tokens are the same at every step;
- with `vaa=True` the prepared VAA mask (VWR weights from boxes and depth ranks) goes to the
  attention processors through `joint_attention_kwargs`; with `vaa=False` attention is plain,
  which with UNO's LoRA is the UNO method (:meth:`PositionICPipeline.enable_uno_mode`).
Layout, ids and mask come from :func:`~picbench.reference_impl.conditioning.build_conditioning`,
the function the trainer uses too; the time shift from :mod:`~picbench.reference_impl.schedule`
(UNO's sampling rule by default, `schedule="flux"` for diffusers').

Decisions: without a `generator` the noise comes from torch's global RNG, as in diffusers; the
methods pass `torch.Generator().manual_seed(seed)` (a CPU generator, float32 noise), so a seed
gives the same image on any device. Sizes that are not multiples of 16 are generated at the
nearest multiple of 16 and resized to the exact requested size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import constants as hub_constants
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection, T5EncoderModel, T5TokenizerFast

from picbench.errors import MissingWeightsError
from picbench.reference_impl.conditioning import PATCH, build_conditioning, encode_image_tokens, fit_reference, uno_ref_long_side
from picbench.reference_impl.layout import validate_layout
from picbench.reference_impl.lora import load_uno_lora
from picbench.reference_impl.processors import set_positionic_processors
from picbench.reference_impl.schedule import Schedule, sampling_mu
from picbench.reference_impl.vwr import DEFAULT_DELTA, DEFAULT_SIGMA

FLUX_DEV = "black-forest-labs/FLUX.1-dev"


def missing_components(folder: Path) -> list[str]:
    """What a local diffusers pipeline folder lacks: model_index.json, component folders, weights."""
    index = folder / "model_index.json"
    if not index.is_file():
        return ["model_index.json"]
    missing = []
    for name, spec in json.loads(index.read_text()).items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir():
            missing.append(f"{name}/")
        elif "tokenizer" in name:
            if not any(sub.glob("tokenizer*.json")) and not any(sub.glob("*.model")) and not (sub / "vocab.json").is_file():
                missing.append(f"{name}/ (tokenizer files)")
        elif "scheduler" in name:
            if not (sub / "scheduler_config.json").is_file():
                missing.append(f"{name}/scheduler_config.json")
        elif not any(sub.glob("*.safetensors")) and not any(sub.glob("*.bin")):
            missing.append(f"{name}/ (weights: *.safetensors)")
    return missing


class PositionICPipeline(FluxPipeline):
    """FLUX.1-dev + references + UnoPE + VWR/VAA. Build it from components (see `picbench.tiny.flux`) or with
    :meth:`from_pretrained`; call it with reference images, a prompt and a box per subject."""

    vaa_default: bool = True

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        text_encoder_2: T5EncoderModel,
        tokenizer_2: T5TokenizerFast,
        transformer: FluxTransformer2DModel,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
    ) -> None:
        # The full signature, because diffusers reads it to know the pipeline's components.
        super().__init__(
            scheduler, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, transformer, image_encoder, feature_extractor
        )
        set_positionic_processors(self.transformer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> PositionICPipeline:
        """Load from a local diffusers folder or a hub id (from the local cache when offline). Any
        missing part raises :class:`MissingWeightsError` naming it and how to provide it."""
        source = str(pretrained_model_name_or_path)
        folder = Path(source).expanduser()
        if folder.is_dir():
            missing = missing_components(folder)
            if missing:
                raise MissingWeightsError(
                    f"FLUX pipeline folder {folder} is missing: {', '.join(missing)}; "
                    f"download it with `hf download {FLUX_DEV} --local-dir {folder}`"
                )
            return super().from_pretrained(folder, **kwargs)
        kwargs.setdefault("local_files_only", hub_constants.HF_HUB_OFFLINE)
        try:
            return super().from_pretrained(source, **kwargs)
        except OSError as exc:
            raise MissingWeightsError(
                f"FLUX weights {source!r} are not in the local Hugging Face cache and the hub could not be reached "
                f"({type(exc).__name__}: {exc}); download them with `hf download {source} --local-dir DIR` "
                "and pass DIR"
            ) from exc

    def enable_uno_mode(self, lora: str | Path | dict[str, torch.Tensor], scale: float = 1.0) -> None:
        """UNO = this pipeline with VAA off and UNO's released LoRA (converted to diffusers names)."""
        load_uno_lora(self, lora, scale=scale)
        self.vaa_default = False

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        references: Sequence[Image.Image],
        boxes: Sequence[Sequence[float]] | None = None,
        depths: Sequence[int] | None = None,
        *,
        height: int = 512,
        width: int = 512,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        vaa: bool | None = None,
        sigma: float | Sequence[float] = DEFAULT_SIGMA,
        delta: float = DEFAULT_DELTA,
        attention_backend: str = "auto",
        ref_long_side: int | None = None,
        schedule: Schedule = "uno",
        max_sequence_length: int = 512,
    ) -> FluxPipelineOutput | tuple[list[Image.Image]]:
        """One image of exactly `width` x `height` (`output_type="pil"`), or the packed target
        latents (`"latent"`), in a `FluxPipelineOutput` (`.images`). `boxes` are normalized xyxy,
        one per reference (required when VAA is on); `depths` their ranks, 0 = front (default:
        the order given)."""
        vaa = self.vaa_default if vaa is None else vaa
        self._check_inputs(references, prompt, boxes, depths, num_inference_steps, width, height, vaa, output_type)
        if boxes is not None and depths is None:
            depths = list(range(len(boxes)))
        device, dtype = self._execution_device, self.transformer.dtype
        gen_w, gen_h = (max(PATCH, round(s / PATCH) * PATCH) for s in (width, height))

        prompt_embeds, pooled, text_ids = self.encode_prompt(
            prompt, device=device, max_sequence_length=min(max_sequence_length, self.tokenizer_2.model_max_length)
        )
        long_side = ref_long_side or uno_ref_long_side(len(references))
        encoded = [encode_image_tokens(self, fit_reference(ref, long_side), device, dtype) for ref in references]
        ref_tokens = torch.cat([tokens for tokens, _ in encoded], dim=1)
        target_hw = (gen_h // PATCH, gen_w // PATCH)
        cond = build_conditioning(
            prompt_embeds.shape[1],
            target_hw,
            [hw for _, hw in encoded],
            [(boxes, depths)] if vaa else None,
            sigma=sigma,
            delta=delta,
            attention_backend=attention_backend,
            device=device,
            dtype=dtype,
        )

        channels = self.transformer.config.in_channels // 4
        shape = (1, channels, 2 * target_hw[0], 2 * target_hw[1])
        noise = randn_tensor(shape, generator=generator, device=generator.device if generator is not None else device, dtype=torch.float32)
        latents = self._pack_latents(noise.to(device, dtype), 1, channels, shape[2], shape[3])
        n_target = latents.shape[1]

        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        mu = sampling_mu(gen_w, gen_h, schedule)
        timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)
        self.scheduler.set_begin_index(0)
        guidance_t = (
            torch.full([1], guidance_scale, device=device, dtype=torch.float32) if self.transformer.config.guidance_embeds else None
        )

        with self.progress_bar(total=len(timesteps)) as progress:
            for t in timesteps:
                prediction = self.transformer(
                    hidden_states=torch.cat([latents, ref_tokens], dim=1),
                    timestep=t.expand(1).to(dtype) / 1000,
                    guidance=guidance_t,
                    pooled_projections=pooled,
                    encoder_hidden_states=prompt_embeds,
                    txt_ids=text_ids,
                    img_ids=cond.img_ids,
                    joint_attention_kwargs=cond.joint_attention_kwargs,
                    return_dict=False,
                )[0][:, :n_target]
                latents = self.scheduler.step(prediction, t, latents, return_dict=False)[0]
                progress.update()

        if output_type == "latent":
            images: Any = latents
        else:
            latents = self._unpack_latents(latents, gen_h, gen_w, self.vae_scale_factor)
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            decoded = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
            image = self.image_processor.postprocess(decoded, output_type="pil")[0]
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            images = [image]
        self.maybe_free_model_hooks()
        return FluxPipelineOutput(images=images) if return_dict else (images,)

    def _check_inputs(
        self,
        references: Sequence[Image.Image],
        prompt: str,
        boxes: Sequence[Sequence[float]] | None,
        depths: Sequence[int] | None,
        steps: int,
        width: int,
        height: int,
        vaa: bool,
        output_type: str,
    ) -> None:
        """Every input error is raised here, before any model runs."""
        if not references:
            raise ValueError("PositionICPipeline: at least one reference image is required")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("PositionICPipeline: the prompt is empty")
        if steps < 1:
            raise ValueError(f"PositionICPipeline: num_inference_steps must be >= 1, got {steps}")
        if width < 1 or height < 1:
            raise ValueError(f"PositionICPipeline: width and height must be >= 1, got {width}x{height}")
        if output_type not in ("pil", "latent"):
            raise ValueError(f"PositionICPipeline: output_type must be 'pil' or 'latent', got {output_type!r}")
        if vaa and boxes is None:
            raise ValueError("PositionICPipeline: VAA needs one box per reference; pass boxes or vaa=False")
        if depths is not None and boxes is None:
            raise ValueError("PositionICPipeline: depth ranks given without boxes")
        if boxes is not None:
            validate_layout(boxes, depths if depths is not None else list(range(len(boxes))), len(references), width, height)
