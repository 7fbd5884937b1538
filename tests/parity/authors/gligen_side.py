"""GLIGEN's side of the parity test (gligen/GLIGEN @ f9dccb9), run inside its checkout.

``build``: tiny random weights made by the authors' code: their LDM ``UNetModel`` with the gated
self-attention fusers and the ``PositionNet`` of the variant, configured by their
``configs/GoldG+SBU+CC3M+O365_box_text.yaml`` (text-box) or ``..._box_text_image.yaml``
(text-image) with the widths made tiny; the parts their init leaves at zero (fuser gates, null
features, zero convolutions) drawn; for text-image a random tiny ``projection_matrix`` (the file
``get_clip_feature`` reads, CLIP's 768 x 768 in the checkout);
saved in the released container's layout (``model``, ``diffusion``, ``config_dict``), and SD's first
convolution (``SD_input_conv_weight_bias.pth``, which ``restore_first_conv_from_SD`` reads) is the
model's own, as in the released generation models, whose first convolution is SD's and frozen in
training (``trainer.py:218-238``). ``run``: ``gligen_inference.py``'s ``run()`` for that model
(``prepare_batch``, ``get_clip_feature``, the variant's ``GroundingNetInput``, ``alpha_generator``,
``PLMSSampler``), every stage recorded with hooks.

Runtime patches (the authors' files are not edited; each replaces one hard-coded value or call):
- ``prepare_batch`` loads CLIP ViT-L/14 (a download, ``.cuda()``) and hard-codes its width 768
  (``gligen_inference.py:151-159``): no model is loaded and the width is the tiny one; a phrase's
  feature is the embedding picbench computed; a reference image's feature is computed by the
  authors' ``get_clip_feature`` (its ``.cuda()`` calls removed, ``projection_matrix`` the tiny one)
  from CLIP's ``image_embeds`` as picbench's image encoder gives them (the authors' ``CLIPModel``
  normalizes them first, which the final normalization to 28.7 makes immaterial);
- ``device`` is ``"cpu"`` (``gligen_inference.py:21`` sets ``"cuda"``);
- ``restore_first_conv_from_SD`` hard-codes 320 channels and reads ``SD_input_conv_weight_bias.pth``
  from the working folder (``openaimodel.py:404-407``): the tiny width and the tiny file;
- ``FrozenCLIPEmbedder.encode`` (a CLIP download) returns picbench's text embeddings;
- the container is read with ``torch.load(weights_only=False)`` (the default of the torch the
  authors pin);
- ``clip`` and ``tensorboard``, imported by ``gligen_inference.py`` and ``trainer.py`` but used by
  neither text-box inference nor here, are empty stand-in modules when absent.
"""

from __future__ import annotations

import importlib
import sys
import types
from functools import partial
from typing import Any

import numpy as np
import torch
from side_io import FixedTextEncoder, finish, patched, start

checkout, work, settings, inputs = start()

for name in ("clip", "torch.utils.tensorboard"):
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].SummaryWriter = None  # imported by name, never called here

import gligen_inference  # noqa: E402
import ldm.modules.diffusionmodules.openaimodel as openaimodel  # noqa: E402
from ldm.models.diffusion.plms import PLMSSampler  # noqa: E402
from ldm.util import instantiate_from_config  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

TEXT_DIM = settings["text_dim"]


gligen_inference.device = "cpu"
PROJECTION_MATRIX = settings.get("projection_matrix")
authors_clip_feature = patched(
    gligen_inference.get_clip_feature,
    {".cuda()": ("", 6), "torch.load('projection_matrix')": ("torch.load(PROJECTION_MATRIX)", 1)},
)
gligen_inference.PROJECTION_MATRIX = PROJECTION_MATRIX
gligen_inference.prepare_batch = patched(
    gligen_inference.prepare_batch,
    {
        "CLIPModel.from_pretrained(version).cuda()": ("None", 1),
        "CLIPProcessor.from_pretrained(version)": ("None", 1),
        "torch.zeros(max_objs, 768)": (f"torch.zeros(max_objs, {TEXT_DIM})", 2),
    },
)
openaimodel.SD_CONV_IN_FILE = settings.get("sd_conv_in")
openaimodel.UNetModel.restore_first_conv_from_SD = patched(
    openaimodel.UNetModel.restore_first_conv_from_SD,
    {
        'th.load("SD_input_conv_weight_bias.pth")': ("th.load(SD_CONV_IN_FILE)", 1),
        "conv_nd(2, 4, 320, 3, padding=1)": ("conv_nd(2, 4, self.model_channels, 3, padding=1)", 1),
    },
)


CONFIGS = {"text-box": "GoldG+SBU+CC3M+O365_box_text.yaml", "text-image": "GoldG+SBU+CC3M+O365_box_text_image.yaml"}


def build() -> None:
    config = OmegaConf.load(checkout / "configs" / CONFIGS[settings["variant"]])
    config.model.params.update(settings["unet"])
    config.model.params.grounding_tokenizer.params.update(settings["position_net"])
    torch.manual_seed(settings["seed"])
    model = instantiate_from_config(config.model)
    diffusion = instantiate_from_config(config.diffusion)
    with torch.no_grad():  # what training leaves: gates, null features, zero convolutions all moved
        for name, param in model.named_parameters():
            if not param.any():
                param.normal_(std=settings["gate_std"] if name.endswith(("alpha_attn", "alpha_dense")) else settings["zero_std"])
    config.autoencoder.params.ddconfig.update(settings["ddconfig"])
    autoencoder = instantiate_from_config(config.autoencoder)
    container = {"model": model.state_dict(), "autoencoder": autoencoder.state_dict(), "diffusion": diffusion.state_dict()}
    torch.save(container | {"config_dict": vars(config)}, settings["out"])
    torch.save(model.input_blocks[0][0].state_dict(), settings["sd_conv_in_out"])
    if settings["variant"] == "text-image":
        torch.save(torch.randn(TEXT_DIM, TEXT_DIM) / TEXT_DIM**0.5, settings["projection_matrix_out"])
    finish(work, {})


class ImageEmbedsOnly:
    """Stands in for CLIPModel and CLIPProcessor in ``get_clip_feature``: the processor's output is
    a placeholder, the model answers with the ``image_embeds`` picbench's image encoder gave."""

    def __init__(self, image_embeds: torch.Tensor) -> None:
        self.image_embeds = image_embeds

    def __call__(self, **inputs: Any) -> Any:
        if "images" in inputs:
            return {"pixel_values": torch.zeros(1, 3, 224, 224)}
        return types.SimpleNamespace(image_embeds=self.image_embeds)


STAGE_NAMES = {
    "boxes": "boxes",
    "masks": "masks",
    "positive_embeddings": "phrase_embeddings",
    "text_embeddings": "phrase_embeddings",
    "text_masks": "phrase_masks",
    "image_masks": "image_masks",
    "image_embeddings": "image_embeddings",
}
"""The position net's inputs, named as the test names both sides' records."""


class Recorder:
    """Every UNet evaluation's input, time and both CFG predictions; the first evaluation's
    grounding input and tokens (conditional and null)."""

    def __init__(self, model: Any) -> None:
        self.evals: list[dict[str, torch.Tensor]] = []
        self.grounding: dict[str, torch.Tensor] = {}
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)
        model.position_net.register_forward_hook(self._tokens, with_kwargs=True)

    def _before(self, module: Any, args: tuple[dict[str, Any]]) -> None:
        given = args[0]
        self.cond = "grounding_input" in given
        if self.cond:
            self.evals.append({"x": given["x"].clone(), "t": given["timesteps"].clone()})

    def _tokens(self, module: Any, args: Any, kwargs: dict[str, torch.Tensor], output: torch.Tensor) -> None:
        kind = "cond" if self.cond else "null"
        if f"tokens_{kind}" not in self.grounding:
            self.grounding[f"tokens_{kind}"] = output.clone()
            self.grounding.update({f"{STAGE_NAMES[key]}_{kind}": value.clone() for key, value in kwargs.items()})

    def _after(self, module: Any, args: Any, output: torch.Tensor) -> None:
        self.evals[-1]["cond" if self.cond else "uncond"] = output.clone()


def run() -> None:
    """gligen_inference.py's run() for the text-box model (gligen_inference.py:343-429), the model
    loaded as load_ckpt loads it (gligen_inference.py:69-83)."""
    saved = torch.load(settings["checkpoint"], map_location="cpu", weights_only=False)
    config = saved["config_dict"]["_content"]
    model = instantiate_from_config(config["model"]).eval()
    model.load_state_dict(saved["model"])
    diffusion = instantiate_from_config(config["diffusion"])
    diffusion.load_state_dict(saved["diffusion"])
    autoencoder = instantiate_from_config(config["autoencoder"]).eval()
    autoencoder.load_state_dict(saved["autoencoder"])
    grounding_tokenizer_input = instantiate_from_config(config["grounding_tokenizer_input"])
    model.grounding_tokenizer_input = grounding_tokenizer_input

    phrases, images = settings["phrases"], settings.get("images")
    pooled = dict(zip(phrases, inputs["phrase_pooled"].split(1)))
    image_embeds = dict(zip(images or [], inputs["image_embeds"].split(1))) if images else {}

    def clip_feature(model: Any, processor: Any, input: Any, is_image: bool = False) -> Any:
        if input is None:
            return None
        if is_image:
            stand_in = ImageEmbedsOnly(image_embeds[input])
            return authors_clip_feature(stand_in, stand_in, input, is_image=True)
        return pooled[input]

    gligen_inference.get_clip_feature = clip_feature
    text_encoder = FixedTextEncoder({settings["prompt"]: inputs["context"], settings["negative_prompt"]: inputs["uncond"]})
    beta = settings["beta"]
    meta = dict(prompt=settings["prompt"], phrases=phrases, images=images, locations=settings["boxes"], alpha_type=[beta, 0.0, 1 - beta])

    batch = gligen_inference.prepare_batch(meta, 1)
    context = text_encoder.encode([meta["prompt"]])
    uc = text_encoder.encode([settings["negative_prompt"]])
    sampler = PLMSSampler(
        diffusion,
        model,
        alpha_generator_func=partial(gligen_inference.alpha_generator, type=meta["alpha_type"]),
        set_alpha_scale=gligen_inference.set_alpha_scale,
    )
    grounding_input = grounding_tokenizer_input.prepare(batch)
    noise = inputs["noise"]  # gligen_inference.py:640-641 passes starting_noise=None: an unseeded draw; picbench's is given
    given = dict(
        x=noise, timesteps=None, context=context, grounding_input=grounding_input, inpainting_extra_input=None, grounding_extra_input=None
    )
    recorder = Recorder(model)
    latent = settings["latent_size"]
    latents = sampler.sample(
        S=settings["steps"], shape=(1, model.in_channels, latent, latent), input=given, uc=uc, guidance_scale=settings["guidance"]
    )

    out = {"latents": latents, **{f"grounding_{k}": v for k, v in recorder.grounding.items()}}
    with torch.no_grad():  # gligen_inference.py:431,443-445: decode, then 8 bits
        sample = autoencoder.decode(latents)[0]
    sample = torch.clamp(sample, min=-1, max=1) * 0.5 + 0.5
    sample = sample.cpu().numpy().transpose(1, 2, 0) * 255
    out["image"] = torch.from_numpy(sample.astype(np.uint8))
    out["image_mean"] = out["image"].double().mean()
    out["timesteps"] = torch.cat([e["t"] for e in recorder.evals]).double()
    out["step_inputs"] = torch.cat([e["x"] for e in recorder.evals])
    out["predictions"] = torch.stack([torch.cat([e["cond"], e["uncond"]]) for e in recorder.evals])
    steps = sampler.ddim_timesteps[::-1].copy()
    index = list(range(len(steps)))[::-1]  # PLMSSampler: index = total_steps - i - 1
    alphas = torch.as_tensor(sampler.ddim_alphas)[index].double()
    alphas_prev = torch.as_tensor(sampler.ddim_alphas_prev)[index].double()
    out["schedule"] = torch.stack([torch.as_tensor(steps).double(), alphas, alphas_prev], dim=1)
    finish(work, out)


{"build": build, "run": run}[settings["mode"]]()
