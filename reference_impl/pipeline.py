"""`PositionICPipeline`: FLUX with in-context references, UnoPE, VWR and Visibility-Aware Attention.

A thin composition of diffusers' FLUX components (it is a `FluxPipeline`, so prompt encoding,
latent packing, LoRA loading and saving are diffusers' own), called as diffusers users call any
pipeline: `pipe(prompt, references=..., boxes=..., num_inference_steps=25, guidance_scale=4.0,
generator=torch.Generator().manual_seed(0)).images[0]`. What it adds:
- each reference image is resized as UNO's `preprocess_ref` does (long side `ref_long_side`,
  short side floored, cropped to multiples of 16), VAE-encoded to a posterior sample, packed like
  the target and appended after the target tokens with UnoPE position ids;
- every step runs the transformer on `[target, ref_1 .. ref_K]` and keeps only the target's
  prediction; the clean reference tokens are the same at every step;
- with VAA on (`vaa=True`, or a `VAASettings` record: sigma, delta, attention backend) the prepared
  VAA mask (VWR weights from boxes and depth ranks) goes to the
  attention processors through `joint_attention_kwargs`; with `vaa=False` attention is plain,
  which with UNO's LoRA (`reference_impl.lora.load_uno_lora`) is the UNO method (`adapters/uno.py`).
Layout, ids and mask come from :func:`~picbench.reference_impl.conditioning.build_conditioning`,
the function the trainer uses too; the time shift from :mod:`~picbench.reference_impl.schedule`
(UNO's sampling rule by default, `schedule="flux"` for diffusers').

The arithmetic is UNO's `UNOPipeline.forward` and `denoise` (bytedance/UNO @ d305981,
`uno/flux/pipeline.py:243-304`, `uno/flux/sampling.py:210-241`) and its VAE computes as UNO's
(BFL's `AutoEncoder`, :func:`~picbench.reference_impl.bfl_vae.use_bfl_arithmetic`), so in bfloat16
references, steps and images round as UNO's do: the time is handed over as a model-dtype tensor
of t in [0, 1] (the transformer multiplies by 1000 after the cast, as UNO's `timestep_embedding`), and the Euler update is
`latents + (t_prev - t_curr) * prediction` in the model dtype with UNO's float32 time grid
(`schedule.sampling_times`), not the scheduler's float32 step (the `scheduler` component stays
for diffusers' folder layout: `from_pretrained`, `save_pretrained`). The latents are decoded in the
VAE's dtype (float32 in the methods, as UNO); `to_8bit="truncate"` converts to 8 bits as UNO does
(`(127.5 * (x + 1)).byte()`), `"round"` as diffusers does.

Decisions: the initial noise is drawn first from `generator`, then each reference's posterior
sample from the same generator (UNO draws those from the unseeded global RNG), so a seed fixes
the image; without a `generator` both come from torch's global RNG, as in diffusers.
`noise="uno"` draws the noise in the model dtype on the generator's device (UNO's `get_noise`,
`uno/flux/sampling.py:28-45`, with a generator on the execution device, as the methods pass);
`noise="float32"` draws float32 noise and casts it (with a CPU generator: the same image for a
seed on any device). On the CPU the two draws are identical. Sizes that are not multiples of 16
are generated at the nearest multiple of 16 and resized to the exact requested size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput
from huggingface_hub import constants as hub_constants
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection, T5EncoderModel, T5TokenizerFast

from picbench.errors import MissingWeightsError
from picbench.reference_impl.bfl_vae import use_bfl_arithmetic
from picbench.reference_impl.conditioning import (
    PATCH,
    build_conditioning,
    encode_image_tokens,
    fit_reference,
    transformer_step,
    uno_ref_long_side,
)
from picbench.reference_impl.layout import validate_layout
from picbench.reference_impl.processors import set_positionic_processors
from picbench.reference_impl.schedule import Schedule, sampling_mu, sampling_times
from picbench.reference_impl.vaa import VAASettings

FLUX_DEV = "black-forest-labs/FLUX.1-dev"

Noise = Literal["uno", "float32"]
To8Bit = Literal["round", "truncate"]


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
        use_bfl_arithmetic(self.vae)

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
        vaa: VAASettings | bool | None = None,
        ref_long_side: int | None = None,
        schedule: Schedule = "uno",
        noise: Noise = "uno",
        to_8bit: To8Bit = "round",
        max_sequence_length: int = 512,
    ) -> FluxPipelineOutput | tuple[list[Image.Image]]:
        """One image of exactly `width` x `height` (`output_type="pil"`), or the packed target
        latents (`"latent"`), in a `FluxPipelineOutput` (`.images`). `boxes` are normalized xyxy,
        one per reference (required when VAA is on); `depths` their ranks, 0 = front (default:
        the order given). `vaa`: the VAA settings, or True / False for the default settings with
        VAA on / off (None: on unless `vaa_default` says otherwise)."""
        settings = vaa if isinstance(vaa, VAASettings) else VAASettings(vaa=self.vaa_default if vaa is None else vaa)
        self._check_inputs(references, prompt, boxes, depths, num_inference_steps, width, height, settings.vaa, output_type, noise, to_8bit)
        if boxes is not None and depths is None:
            depths = list(range(len(boxes)))
        device, dtype = self._execution_device, self.transformer.dtype
        gen_w, gen_h = (max(PATCH, round(s / PATCH) * PATCH) for s in (width, height))

        prompt_embeds, pooled, text_ids = self.encode_prompt(
            prompt, device=device, max_sequence_length=min(max_sequence_length, self.tokenizer_2.model_max_length)
        )
        channels = self.transformer.config.in_channels // 4
        target_hw = (gen_h // PATCH, gen_w // PATCH)
        latents = self._initial_noise((1, channels, 2 * target_hw[0], 2 * target_hw[1]), generator, noise, device, dtype)

        long_side = ref_long_side or uno_ref_long_side(len(references))
        encoded = [encode_image_tokens(self, fit_reference(ref, long_side), device, dtype, generator) for ref in references]
        ref_tokens = torch.cat([tokens for tokens, _ in encoded], dim=1)
        cond = build_conditioning(
            prompt_embeds.shape[1],
            target_hw,
            [hw for _, hw in encoded],
            None if boxes is None else [(boxes, depths)],
            vaa=settings,
            device=device,
            dtype=dtype,
        )

        times = sampling_times(num_inference_steps, sampling_mu(gen_w, gen_h, schedule))
        guidance_t = (
            torch.full([1], guidance_scale, device=device, dtype=torch.float32) if self.transformer.config.guidance_embeds else None
        )

        with self.progress_bar(total=num_inference_steps) as progress:
            for t_curr, t_prev in zip(times[:-1], times[1:]):
                prediction = transformer_step(
                    self.transformer,
                    latents,
                    ref_tokens,
                    torch.full([1], t_curr, device=device, dtype=dtype),
                    cond,
                    prompt_embeds=prompt_embeds,
                    pooled=pooled,
                    text_ids=text_ids,
                    guidance=guidance_t,
                )
                latents = latents + (t_prev - t_curr) * prediction
                progress.update()

        if output_type == "latent":
            images: Any = latents
        else:
            image = self._decode(latents, gen_w, gen_h, to_8bit)
            images = [image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)]
        self.maybe_free_model_hooks()
        return FluxPipelineOutput(images=images) if return_dict else (images,)

    def _initial_noise(
        self, shape: tuple[int, int, int, int], generator: torch.Generator | None, noise: Noise, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Packed initial latents: `noise="uno"` in the model dtype (UNO's `get_noise`), `"float32"` drawn in float32 and cast."""
        draw_device = generator.device if generator is not None else device
        draw_dtype = dtype if noise == "uno" else torch.float32
        latents = torch.randn(shape, generator=generator, device=draw_device, dtype=draw_dtype).to(device, dtype)
        return self._pack_latents(latents, *shape)

    def _decode(self, latents: torch.Tensor, gen_w: int, gen_h: int, to_8bit: To8Bit) -> Image.Image:
        """Packed latents -> an 8-bit image, decoded in the VAE's dtype (UNO: `unpack(x.float())`, then `ae.decode`)."""
        latents = self._unpack_latents(latents.to(self.vae.dtype), gen_h, gen_w, self.vae_scale_factor)
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        decoded = self.vae.decode(latents, return_dict=False)[0]
        if to_8bit == "round":
            return self.image_processor.postprocess(decoded, output_type="pil")[0]
        pixels = 127.5 * (decoded[-1].clamp(-1, 1).permute(1, 2, 0) + 1.0)  # uno/flux/pipeline.py:301-303
        return Image.fromarray(pixels.cpu().byte().numpy())

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
        noise: str,
        to_8bit: str,
    ) -> None:
        """Every input error is raised here, before any model runs."""
        if noise not in ("uno", "float32"):
            raise ValueError(f"PositionICPipeline: noise must be 'uno' or 'float32', got {noise!r}")
        if to_8bit not in ("round", "truncate"):
            raise ValueError(f"PositionICPipeline: to_8bit must be 'round' or 'truncate', got {to_8bit!r}")
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
