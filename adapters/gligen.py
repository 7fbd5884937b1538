"""GLIGEN (Li et al., CVPR 2023) through diffusers' GLIGEN pipelines.

Two variants, chosen by the ``variant`` parameter:

- ``text-image`` (default): ``StableDiffusionGLIGENTextImagePipeline``: each subject is grounded
  by its class word *and* its first reference image (CLIP image embedding projected into the
  phrase space, normalised to 28.7 as in GLIGEN), in its box. Checkpoint ``anhnct/Gligen_Text_Image``.
- ``text-box``: ``StableDiffusionGLIGENPipeline``: class word + box only, no references.
  Checkpoint ``masterful/gligen-1-4-generation-text-box``.

Deprecation, decided: diffusers froze both pipelines after 0.33.1 and moved them to
``diffusers.pipelines.deprecated``, but 0.42 still ships and exports them and they run unchanged.
We use diffusers' own copy (no vendored pipeline to maintain) and load it as the released
checkpoints expect; if a future diffusers drops it, :func:`pipeline_class` says which diffusers to
install. diffusers' per-load deprecation log line is silenced since this note records it.

Faithfulness notes: sampling follows the GLIGEN authors' inference (gligen/GLIGEN @ f9dccb9,
``gligen_inference.py``): 50 PLMS steps (lines 385-390: ``PLMSSampler``, ``steps = 50`` unless
``--no_plms``), whatever scheduler the checkpoint folder ships (diffusers' GLIGEN conversion writes
DDIM): :func:`plms_scheduler` replaces it with diffusers' PNDM in PLMS mode over the checkpoint's
own noise schedule, as the InstanceDiffusion adapter samples. Guidance 7.5, 512x512, at most 30
grounded objects, and per variant the authors' ``alpha_type`` (scheduled sampling):
``[1.0, 0.0, 0.0]`` for the text-image model (grounding on for every step: beta 1.0) and
``[0.3, 0.0, 0.7]`` for the text-box model (on for the first 30%: beta 0.3), see
:data:`SCHEDULED_SAMPLING_BETA`; ``int(beta * steps)`` counts the authors' PLMS steps
(``alpha_generator``), and PNDM's first PLMS step takes two timestep entries (:func:`~picbench.methods.sd_grounding.plms_step`). The default negative prompt is the authors' argparse default
(:data:`AUTHORS_NEGATIVE_PROMPT`); ``negative_prompt=""`` gives the empty unconditional prompt.
Seeding: a CPU ``torch.Generator`` seeded per sample, so an image depends only on (sample, seed).
The decoded image is written in 8 bits as ``gligen_inference.py:443-445`` writes it, truncated, not
rounded as diffusers' pipelines do (:func:`~picbench.methods.sd_grounding.ldm_image`).
diffusers' text-image pipeline computes the beta cut-off but never applies it, and the text-box
pipeline counts it in scheduler entries; we apply it in both (a UNet pre-hook switches the gated
fusers off after the authors' ``int(beta * steps)`` PLMS steps), as the authors' code does.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.checkpoints import HubFiles, hub_files, load_pretrained
from picbench.imaging import load_rgb
from picbench.methods.base import Capabilities, Method
from picbench.methods.params import GUIDANCE, RESOLUTION, STEPS, Param
from picbench.methods.sd_grounding import generation_size, grounded_boxes, ldm_image, plms_step
from picbench.paths import picbench_home, resolve_in_root
from picbench.records import Sample
from picbench.tiny.publish import publish_folder

VARIANTS: Mapping[str, Mapping[str, str]] = {
    "text-image": {
        "pipeline": "StableDiffusionGLIGENTextImagePipeline",
        "checkpoint": "anhnct/Gligen_Text_Image",
        "attention_type": "gated-text-image",
    },
    "text-box": {
        "pipeline": "StableDiffusionGLIGENPipeline",
        "checkpoint": "masterful/gligen-1-4-generation-text-box",
        "attention_type": "gated",
    },
}
# gligen/GLIGEN @ f9dccb9, gligen_inference.py: alpha_type [1.0, 0.0, 0.0] for
# checkpoint_generation_text_image.pth, [0.3, 0.0, 0.7] for checkpoint_generation_text.pth
SCHEDULED_SAMPLING_BETA: Mapping[str, float] = {"text-image": 1.0, "text-box": 0.3}
# gligen/GLIGEN @ f9dccb9, gligen_inference.py: the --negative_prompt default
AUTHORS_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality"
)
MAX_OBJECTS = 30  # GLIGEN's grounding token budget; diffusers drops objects past it


@dataclass(frozen=True)
class GligenCall:
    """One sample in GLIGEN's own terms: what the pipeline is called with."""

    prompt: str
    phrases: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    reference_paths: tuple[str, ...]
    width: int
    height: int


def gligen_call(sample: Sample, resolution: int) -> GligenCall:
    """Boxes stay normalised xyxy (GLIGEN's format), phrases are the class words, and each
    subject contributes its first reference image (one image per box)."""
    boxes = grounded_boxes(sample, "gligen", MAX_OBJECTS)
    width, height = generation_size(sample.width, sample.height, resolution)
    return GligenCall(
        prompt=sample.prompt,
        phrases=tuple(s.class_word for s in sample.subjects),
        boxes=boxes,
        reference_paths=tuple(s.references[0] for s in sample.subjects),
        width=width,
        height=height,
    )


def grounding_steps(steps: int, beta: float) -> int:
    """The authors' PLMS steps with grounding on (GLIGEN's scheduled sampling, ``alpha_generator``
    with ``alpha_type [beta, 0, 1 - beta]``: ``int(beta * steps)`` steps of alpha 1); the rest run
    as plain SD."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"gligen: scheduled_sampling_beta must be in (0, 1], got {beta}")
    return int(beta * steps)


def plms_scheduler(config: Mapping[str, Any]) -> Any:
    """LDM's PLMS sampler as diffusers' PNDM without its Runge-Kutta warm-up (``skip_prk_steps``),
    over the noise schedule (betas) of ``config``, the scheduler config a checkpoint ships, DDIM or
    other. The rest is pinned to LDM's PLMS (``ldm/models/diffusion/plms.py``,
    ``make_ddim_timesteps`` uniform): timesteps ``range(0, 1000, 1000 // steps) + 1``
    (``steps_offset`` 1, leading spacing) and the last step towards ``alphas_cumprod[0]``
    (``set_alpha_to_one`` False)."""
    from diffusers import PNDMScheduler

    pinned = {"skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}
    return PNDMScheduler.from_config({k: v for k, v in config.items() if not k.startswith("_")}, **pinned)


@contextlib.contextmanager
def _scheduled_sampling(pipe: Any, steps: int, beta: float, calls_per_step: int) -> Iterator[None]:
    """Switch the gated fusers off after the authors' ``int(beta * steps)`` PLMS steps: a UNet
    pre-hook counts the pipeline's UNet calls (two per timestep entry in the text-image pipeline,
    with and without grounding; one in the text-box pipeline) and maps entries to PLMS steps."""
    cutoff = grounding_steps(steps, beta)
    calls = itertools.count()
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: pipe.enable_fuser(plms_step(next(calls) // calls_per_step) < cutoff))
    try:
        yield
    finally:
        handle.remove()


def pipeline_class(variant: str) -> type:
    if variant not in VARIANTS:
        raise ValueError(f"gligen: unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    import diffusers

    name = VARIANTS[variant]["pipeline"]
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ImportError(f"gligen: diffusers {diffusers.__version__} no longer ships {name}; install diffusers>=0.40,<=0.42.1")
    return cls


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


def build_tiny_gligen(folder: Path, variant: str) -> Path:
    """Random-weight GLIGEN pipeline of the real architecture (SD UNet with gated fusers, SD VAE,
    CLIP text encoder, and for text-image a CLIP vision tower + projection), published at
    ``folder`` in diffusers' folder format on first use."""
    return publish_folder(folder, lambda staging: _tiny_gligen_pipeline(variant).save_pretrained(staging))


def _tiny_gligen_pipeline(variant: str) -> Any:
    from diffusers.pipelines.stable_diffusion.clip_image_project_model import CLIPImageProjection
    from transformers import CLIPProcessor

    from picbench.tiny import sd as tiny
    from picbench.tiny.tokenizers import clip_tokenizer

    hidden = 32
    tokenizer = clip_tokenizer()
    components: dict[str, Any] = {
        "vae": tiny.tiny_sd_vae(),
        "text_encoder": tiny.tiny_clip_text_model(hidden),
        "tokenizer": tokenizer,
        "unet": tiny.tiny_sd_unet(hidden, attention_type=VARIANTS[variant]["attention_type"]),
        "scheduler": tiny.sd_ddim_scheduler(),  # as diffusers' GLIGEN conversion writes; sampling replaces it
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if variant == "text-image":
        torch.manual_seed(0)
        components["image_project"] = CLIPImageProjection(hidden_size=hidden).eval()
        components["image_encoder"] = tiny.tiny_clip_vision_model_with_projection(hidden, projection_dim=hidden)
        components["processor"] = CLIPProcessor(image_processor=tiny.tiny_clip_image_processor(), tokenizer=tokenizer)
    with _quiet_diffusers():
        return pipeline_class(variant)(**components)


class GligenMethod(Method):
    name = "gligen"
    version = "3"  # 3: 8-bit image truncated as the authors' (ldm_image); 2: PLMS whatever the checkpoint's scheduler
    capabilities = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=False)
    default_params = {
        "variant": "text-image",
        "checkpoint": None,  # None: the variant's released checkpoint (VARIANTS)
        "steps": 50,
        "guidance_scale": 7.5,
        "scheduled_sampling_beta": None,  # None: the authors' value for the variant (SCHEDULED_SAMPLING_BETA)
        "resolution": 512,
        "negative_prompt": AUTHORS_NEGATIVE_PROMPT,
    }
    checkpoints = {variant: spec["checkpoint"] for variant, spec in VARIANTS.items()}
    param_specs = {
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "resolution": RESOLUTION,
        "scheduled_sampling_beta": Param("float", 0.0, 1.0, optional=True),
    }

    smoke_params = {"steps": 2, "resolution": 64}
    cuda_dtype = "float16"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pipeline_class(self.params["variant"])  # validate early
        if self.params["scheduled_sampling_beta"] is None:
            self.params["scheduled_sampling_beta"] = SCHEDULED_SAMPLING_BETA[self.params["variant"]]
        if self.params["variant"] == "text-box":
            self.capabilities = replace(type(self).capabilities, references=False)
        grounding_steps(self.params["steps"], self.params["scheduled_sampling_beta"])  # validate early

    @property
    def checkpoint(self) -> str:
        return self.params["checkpoint"] or VARIANTS[self.params["variant"]]["checkpoint"]

    def downloads(self) -> tuple[HubFiles, ...]:
        """The variant's diffusers folder (or the 'checkpoint' parameter's repository)."""
        found = hub_files(self.checkpoint)
        return (found,) if found is not None else ()

    def _load(self) -> Any:
        """The tiny random-weight folder (built on first use) or the released one."""
        variant = self.params["variant"]
        cls = pipeline_class(variant)
        if self.smoke:
            folder = picbench_home() / "tiny" / f"gligen-{variant}-v{self.version}"
            source = str(build_tiny_gligen(folder, variant))
            loader = cls.from_pretrained
        else:
            source = self.checkpoint
            loader = lambda path: cls.from_pretrained(path, safety_checker=None, requires_safety_checker=False)  # noqa: E731
        with _quiet_diffusers():
            pipe = loader(source) if self.smoke else load_pretrained(self.name, source, self.weights_dir, loader)
        pipe.scheduler = plms_scheduler(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        # cast after loading: the load-time dtype keyword was renamed within our diffusers range
        return pipe.to(self.device, self.dtype)

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        pipe = self.load()
        return [self._generate_one(pipe, sample, seed, data_root) for sample in samples]

    def _generate_one(self, pipe: Any, sample: Sample, seed: int, data_root: Path) -> Image.Image:
        call = gligen_call(sample.with_fallback_layout(), self.params["resolution"])
        steps = self.params["steps"]
        kwargs: dict[str, Any] = {
            "prompt": call.prompt,
            "negative_prompt": self.params["negative_prompt"] or None,
            "gligen_phrases": list(call.phrases),
            "gligen_boxes": [list(b) for b in call.boxes],
            "gligen_scheduled_sampling_beta": 1.0,  # the pipelines never switch grounding off: _scheduled_sampling does
            "num_inference_steps": steps,
            "guidance_scale": self.params["guidance_scale"],
            "width": call.width,
            "height": call.height,
            # CPU noise: the same (sample, seed) gives the same image on any device and batch
            "generator": torch.Generator("cpu").manual_seed(seed),
        }
        text_image = self.params["variant"] == "text-image"
        if text_image:
            kwargs["gligen_images"] = [load_rgb(resolve_in_root(data_root, p)) for p in call.reference_paths]
        with _scheduled_sampling(pipe, steps, self.params["scheduled_sampling_beta"], calls_per_step=2 if text_image else 1):
            latents = pipe(**kwargs, output_type="latent").images
        with torch.no_grad():  # the pipeline's own decode, then the authors' 8 bits
            image = ldm_image(pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0])
        if image.size != (sample.width, sample.height):
            image = image.resize((sample.width, sample.height), Image.Resampling.LANCZOS)
        return image


__all__ = [
    "AUTHORS_NEGATIVE_PROMPT",
    "GligenCall",
    "GligenMethod",
    "SCHEDULED_SAMPLING_BETA",
    "VARIANTS",
    "gligen_call",
    "grounding_steps",
    "plms_scheduler",
]
