"""MS-Diffusion's side of the parity test (MS-Diffusion/MS-Diffusion @ 74eb2d6), run inside its checkout.

``build``: a tiny adapter made by the authors' code: their ``Resampler`` (``latent_init_mode=
"grounding"``), their ``MaskedIPAttnProcessor2_0`` on every cross-attention layer initialized as
``tutorial_train_sdxl.py:141-163`` does (``to_k_ip``/``to_v_ip`` from the UNet's ``to_k``/``to_v``),
then perturbed as training would leave them, saved by ``MSAdapter.save_to_checkpoint``
(``ms_adapter.bin``). ``run``: ``inference.py``'s steps (SDXL pipeline, CLIP image encoder,
``Resampler``, ``MSAdapter(..., ckpt_path=...)``, references ``.convert("RGB").resize((512, 512))``,
``ms_model.generate`` with boxes, phrases and their indices). The base SDXL and image encoder
folders are picbench's tiny diffusers folders (the authors load diffusers' SDXL too).
One runtime patch: ``model.py`` imports ``MultiControlNetModel`` from
``diffusers.pipelines.controlnet``, where diffusers < 0.35 kept it (the authors pin 0.23.1); with a
newer diffusers the name is provided there from its new home. On a CPU the authors' inference path
never reaches its ``.cuda()``.
"""

from __future__ import annotations

import numpy as np
import torch
from side_io import finish, start

checkout, work, settings, inputs = start()

import diffusers.pipelines.controlnet as controlnet_pipelines  # noqa: E402
from diffusers import StableDiffusionXLPipeline  # noqa: E402

if not hasattr(controlnet_pipelines, "MultiControlNetModel"):  # diffusers >= 0.35 moved it
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    controlnet_pipelines.MultiControlNetModel = MultiControlNetModel
from msdiffusion.models.attention_processor import AttnProcessor2_0, MaskedIPAttnProcessor2_0  # noqa: E402
from msdiffusion.models.model import MSAdapter  # noqa: E402
from msdiffusion.models.projection import Resampler  # noqa: E402
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection  # noqa: E402

dtype = getattr(torch, settings["dtype"])
pipe = StableDiffusionXLPipeline.from_pretrained(settings["sdxl"], torch_dtype=dtype, add_watermarker=False)
image_encoder = CLIPVisionModelWithProjection.from_pretrained(settings["image_encoder"]).to("cpu", dtype=dtype)


def resampler() -> Resampler:
    r = settings["resampler"]
    return Resampler(
        dim=r["dim"],
        depth=r["depth"],
        dim_head=r["dim_head"],
        heads=r["heads"],
        num_queries=r["num_queries"],
        embedding_dim=image_encoder.config.hidden_size,
        output_dim=pipe.unet.config.cross_attention_dim,
        ff_mult=4,
        latent_init_mode="grounding",
        phrase_embeddings_dim=pipe.text_encoder.config.projection_dim,
    )


def build() -> None:
    """tutorial_train_sdxl.py's adapter construction, then save_to_checkpoint."""
    torch.manual_seed(settings["seed"])
    unet = pipe.unet.float()
    proj = resampler()
    unet_sd = unet.state_dict()
    procs = {}
    for name in unet.attn_processors.keys():
        cross = None if name.endswith("attn1.processor") else unet.config.cross_attention_dim
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        if cross is None:
            procs[name] = AttnProcessor2_0()
        else:
            layer = name.split(".processor")[0]
            procs[name] = MaskedIPAttnProcessor2_0(
                hidden_size=hidden, cross_attention_dim=cross, num_tokens=settings["resampler"]["num_queries"], text_tokens=77, scale=1.0
            )
            procs[name].load_state_dict(
                {"to_k_ip.weight": unet_sd[layer + ".to_k.weight"], "to_v_ip.weight": unet_sd[layer + ".to_v.weight"]}
            )
    unet.set_attn_processor(procs)
    modules = torch.nn.ModuleList(unet.attn_processors.values())
    with torch.no_grad():  # as training would leave them: the copies of to_k/to_v moved
        for param in modules.parameters():
            param.add_(torch.randn_like(param) * settings["perturb"])
    adapter = MSAdapter(unet, proj, adapter_modules=modules, num_tokens=settings["resampler"]["num_queries"], text_tokens=77, device="cpu")
    adapter.save_to_checkpoint(settings["out"])
    finish(work, {})


def run_generate() -> None:
    """inference.py, one sample, every stage captured."""
    from msdiffusion.utils import get_eot_idx, get_phrase_idx
    from PIL import Image
    from sd_capture import SDCapture

    proj = resampler().to("cpu", dtype=dtype)
    ms_model = MSAdapter(pipe.unet, proj, ckpt_path=settings["adapter"], device="cpu", num_tokens=settings["resampler"]["num_queries"])
    ms_model.to("cpu", dtype=dtype)
    images = [Image.open(p).convert("RGB").resize((512, 512)) for p in settings["refs"]]  # inference.py:72
    prompt, phrases = settings["prompt"], settings["phrases"]
    counts: dict[str, int] = {}
    phrase_idxes = []
    for phrase in phrases:  # inference.py's get_phrases_idx (inference.py loads models at import, so it is not imported)
        phrase_idxes.append(get_phrase_idx(pipe.tokenizer, phrase, prompt, num=counts.get(phrase, 0))[0])
        counts[phrase] = counts.get(phrase, 0) + 1
    eot_idxes = [[get_eot_idx(pipe.tokenizer, prompt)] * len(phrases)]
    features: list[torch.Tensor] = []
    image_encoder.register_forward_hook(lambda m, a, out: features.append(out.hidden_states[-2]))
    tokens: list[torch.Tensor] = []
    proj.register_forward_hook(lambda m, a, out: tokens.append(out))
    capture = SDCapture(pipe)
    image = ms_model.generate(
        pipe=pipe,
        pil_images=[images],
        num_samples=1,
        num_inference_steps=settings["steps"],
        seed=settings["seed"],
        prompt=[prompt],
        scale=settings["scale"],
        guidance_scale=settings["guidance"],
        image_encoder=image_encoder,
        image_processor=CLIPImageProcessor(),
        boxes=[settings["boxes"]],
        image_proj_type="resampler",
        image_encoder_type="clip",
        phrases=[phrases],
        drop_grounding_tokens=[0],
        phrase_idxes=[phrase_idxes],
        eot_idxes=eot_idxes,
        height=settings["height"],
        width=settings["width"],
        weight_dtype=dtype,
    )[0]
    out = capture.result()
    out["image_features"] = features[0]
    out["resampler_tokens"] = tokens[0]
    out["image"] = torch.from_numpy(np.asarray(image).copy())
    finish(work, out)


{"build": build, "run": run_generate}[settings["mode"]]()
