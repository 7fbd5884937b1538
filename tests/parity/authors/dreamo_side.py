"""DreamO's side of the parity test (bytedance/DreamO @ 461e35b), run inside its checkout.

What the authors' app does for "ip" references, minus BEN2 (a stated difference of picbench):
``DreamOPipeline.from_pretrained`` (FLUX.1-dev's diffusers folder), ``load_dreamo_model(device,
use_turbo=True, version=...)`` (their LoRA conversion, fusing and T5 tokens), the reference prepared
as ``Generator.pre_condition`` does (``resize_numpy_image_area`` with INTER_AREA to ``ref_res``^2,
``img2tensor``, 2x - 1, task "ip", idx k + 1), then the pipeline called as ``app.py``'s
``generate_image`` (``first_step_guidance_scale`` = guidance, true CFG 1, a CPU generator).

DreamO publishes no code that writes its weights (only loaders), so the files are the released
layouts written by picbench's ``write_tiny_checkpoints``; what this side proves is that the
authors' loaders read them as picbench does.

Its monkey-patched ``FluxTransformer2DModel.forward`` needs diffusers < 0.35 (and so transformers
< 5): run this side with such an interpreter (``PICBENCH_PARITY_PYTHON_DREAMO``, docs/parity.md); the
tiny tokenizers, written by transformers 5, are then read from their ``tokenizer.json`` and the
pipeline is assembled from its components (``DreamOPipeline(...)``, as ``from_pretrained`` would).

Both sides get the same text embeddings (picbench's, passed as ``prompt_embeds`` /
``pooled_prompt_embeds``): the two sides run different transformers releases here, and the text
encoders are not DreamO's code.

Runtime patches: diffusers < 0.35's offline check is turned off (it refuses a LoRA file path
offline); ``hf_hub_download`` returns the file from the --weights-dir folder (no network),
and ``load_file('models/...')`` reads it there (the side runs in a folder whose ``models`` is the
DreamO files); the VAE posterior's noise is picbench's draw (the authors draw from the unseeded
global RNG).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import transformers
from side_io import finish, start

checkout, work, settings, inputs = start()

import diffusers.loaders.lora_base as lora_base  # noqa: E402
import dreamo.dreamo_pipeline as dreamo_pipeline  # noqa: E402
from dreamo.utils import img2tensor, resize_numpy_image_area  # noqa: E402
from flux_capture import FluxCapture  # noqa: E402
from PIL import Image  # noqa: E402

weights = Path(settings["weights"])


def local_download(repo_id: str, filename: str, local_dir: str | None = None, **kwargs) -> str:
    path = weights / repo_id / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} (the parity test's --weights-dir copy of {repo_id}/{filename})")
    return str(path)


dreamo_pipeline.hf_hub_download = local_download
# diffusers < 0.35 refuses a LoRA *file path* in offline mode (it guesses a weight name before it checks
# for a file); every file here is local (hf_hub_download is replaced above), so that check is off.
lora_base.HF_HUB_OFFLINE = False
os.chdir(work)
if not Path("models").exists():
    Path("models").symlink_to(weights / "ByteDance" / "DreamO", target_is_directory=True)

dtype = getattr(torch, settings["dtype"])
flux = weights / "black-forest-labs" / "FLUX.1-dev"
if transformers.__version__ >= "5":
    pipe = dreamo_pipeline.DreamOPipeline.from_pretrained(str(flux), torch_dtype=dtype)
else:  # the tiny folder's tokenizers, written by transformers 5, are read from their tokenizer.json
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    def fast_tokenizer(cls, name: str) -> object:
        config = json.loads((flux / name / "tokenizer_config.json").read_text())
        keys = ("bos_token", "eos_token", "pad_token", "unk_token", "model_max_length")
        return cls(tokenizer_file=str(flux / name / "tokenizer.json"), **{k: config[k] for k in keys if k in config})

    pipe = dreamo_pipeline.DreamOPipeline(
        FlowMatchEulerDiscreteScheduler.from_pretrained(str(flux), subfolder="scheduler"),
        AutoencoderKL.from_pretrained(str(flux), subfolder="vae", torch_dtype=dtype),
        transformers.CLIPTextModel.from_pretrained(str(flux), subfolder="text_encoder", torch_dtype=dtype),
        fast_tokenizer(transformers.CLIPTokenizerFast, "tokenizer"),
        transformers.T5EncoderModel.from_pretrained(str(flux), subfolder="text_encoder_2", torch_dtype=dtype),
        fast_tokenizer(transformers.T5TokenizerFast, "tokenizer_2"),
        FluxTransformer2DModel.from_pretrained(str(flux), subfolder="transformer", torch_dtype=dtype),
    )
pipe.load_dreamo_model("cpu", use_turbo=True, version=settings["version"])
pipe = pipe.to("cpu")
pipe.offload = False  # dreamo_generator.py dreamo_pipeline_init_default, without offloading
pipe.set_progress_bar_config(disable=True)

ref_conds = []
for idx, path in enumerate(settings["refs"]):  # dreamo_generator.py pre_condition, task "ip" (BEN2 left out)
    ref_image = resize_numpy_image_area(np.array(Image.open(path).convert("RGB")), settings["ref_res"] * settings["ref_res"])
    ref_image = img2tensor(ref_image, bgr2rgb=False).unsqueeze(0) / 255.0
    ref_conds.append({"img": 2 * ref_image - 1.0, "task": "ip", "idx": idx + 1})

n_target = (settings["height"] // 16) * (settings["width"] // 16)
capture = FluxCapture(pipe, n_target, replay=[inputs[f"draw.{i}"] for i in range(len(settings["refs"]))])
image = pipe(  # app.py generate_image with the app's defaults
    prompt_embeds=inputs["prompt_embeds"].to(dtype),  # picbench's text embeddings (identical text inputs)
    pooled_prompt_embeds=inputs["pooled"].to(dtype),
    width=settings["width"],
    height=settings["height"],
    num_inference_steps=settings["steps"],
    guidance_scale=settings["guidance"],
    ref_conds=ref_conds,
    generator=torch.Generator(device="cpu").manual_seed(settings["seed"]),
    true_cfg_scale=1,
    true_cfg_start_step=0,
    true_cfg_end_step=0,
    negative_prompt="",
    neg_guidance_scale=3.5,
    first_step_guidance_scale=settings["guidance"],
).images[0]
out = capture.result()
out["image"] = torch.from_numpy(np.asarray(image).copy())
finish(work, out)
