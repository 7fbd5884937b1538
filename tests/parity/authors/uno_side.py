"""UNO's side of the parity test (bytedance/UNO @ d305981), run inside its checkout.

``build``: tiny random weights made by UNO's own code: BFL's ``Flux`` and ``AutoEncoder`` at
tiny sizes, UNO's ``set_lora`` on every block, the LoRA saved as ``train.py`` saves it
(``accelerator.save`` of the trainable parameters, safetensors). ``run``: UNO's ``UNOPipeline``
(``only_lora=True``, as ``inference.py`` builds it) on those files, with ``inference.py``'s
reference sizing (``preprocess_ref``, 512 for one reference, 320 for more), capturing every stage.

Runtime patches (UNO's files are not edited):
- ``SingleStreamBlockLoraProcessor`` hard-codes ``proj_lora``'s input width 15360 (3072 + 4 x 3072,
  FLUX.1-dev's); the tiny model gets ``5 * dim``, the same rule at its width;
- the text encoders are replaced by the embeddings picbench computed (identical text inputs);
- ``UNOPipeline.forward`` hard-codes bf16 for the noise and the references; the fp32 comparison
  runs it with ``torch.bfloat16`` read as float32 inside ``uno/flux/pipeline.py`` only;
- the VAE posterior's ``torch.randn_like`` returns the draw picbench made (UNO draws from the
  unseeded global RNG).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from side_io import DtypeProxy, FixedEmbedder, finish, start

checkout, work, settings, inputs = start()

import uno.flux.pipeline as uno_pipeline  # noqa: E402  (the checkout is on sys.path only after start())
import uno.flux.util as uno_util  # noqa: E402
from uno.flux.model import Flux, FluxParams  # noqa: E402
from uno.flux.modules.autoencoder import AutoEncoder, AutoEncoderParams  # noqa: E402
from uno.flux.modules.layers import LoRALinearLayer, SingleStreamBlockLoraProcessor  # noqa: E402


class TinySingleStreamBlockLoraProcessor(SingleStreamBlockLoraProcessor):
    """UNO's processor with ``proj_lora``'s input at ``dim + 4 * dim`` (UNO writes 15360 for dim 3072)."""

    def __init__(self, dim: int, rank: int = 4, network_alpha=None, lora_weight: float = 1):
        super().__init__(dim, rank, network_alpha, lora_weight)
        self.proj_lora = LoRALinearLayer(5 * dim, dim, rank, network_alpha)


uno_util.SingleStreamBlockLoraProcessor = TinySingleStreamBlockLoraProcessor
flux_params = FluxParams(**settings["flux"])
ae_params = AutoEncoderParams(**settings["ae"])
weights = Path(settings["weights"])


def build() -> None:
    """UNO's models at tiny size, random, in the released files' layouts."""
    from accelerate import Accelerator
    from safetensors.torch import save_file

    torch.manual_seed(settings["seed"])
    dit = Flux(flux_params)
    ae = AutoEncoder(ae_params)
    dit.requires_grad_(False)  # train.py: the base frozen, then set_lora adds the trainable LoRA
    dit = uno_util.set_lora(dit, settings["lora_rank"])
    with torch.no_grad():  # a trained LoRA: UNO's init leaves `up` at zero, which would test nothing
        for name, param in dit.named_parameters():
            if param.requires_grad and name.endswith(".up.weight"):
                param.normal_(0.0, settings["lora_up_std"])
    weights.mkdir(parents=True, exist_ok=True)
    state = dit.state_dict()
    trainable = [k for k, v in dit.named_parameters() if v.requires_grad]  # train.py:425-427
    Accelerator().save({k: state[k] for k in trainable}, str(weights / "dit_lora.safetensors"), safe_serialization=True)
    base = {k: v.to(getattr(torch, settings["flux_dtype"])) for k, v in state.items() if k not in trainable}
    save_file(base, str(weights / "flux1-dev.safetensors"))
    save_file(ae.state_dict(), str(weights / "ae.safetensors"))
    finish(work, {})


def run() -> None:
    """inference.py's main for one prompt, with every stage captured."""
    from PIL import Image

    dtype = getattr(torch, settings["dtype"])
    spec = uno_util.configs["flux-dev"]
    spec.params, spec.ae_params = flux_params, ae_params
    spec.ckpt_path, spec.ae_path = str(weights / settings["flux_file"]), str(weights / "ae.safetensors")
    os.environ["LORA"] = str(weights / settings["lora_file"])
    uno_pipeline.load_t5 = lambda device, max_length=512: FixedEmbedder(inputs["txt"])
    uno_pipeline.load_clip = lambda device: FixedEmbedder(inputs["vec"])
    if dtype != torch.bfloat16:
        uno_pipeline.torch = DtypeProxy("bfloat16", dtype)

    pipeline = uno_pipeline.UNOPipeline("flux-dev", torch.device("cpu"), offload=False, only_lora=True, lora_rank=settings["lora_rank"])
    out: dict[str, torch.Tensor] = {}
    eps = [inputs[f"ref_eps.{i}"] for i in range(len(settings["refs"]))]
    encode = pipeline.ae.encode
    pixels: list[torch.Tensor] = []

    def encode_with_picbench_draw(x: torch.Tensor) -> torch.Tensor:
        drawn = eps.pop(0)
        pixels.append(x.flatten())
        randn_like = torch.randn_like
        torch.randn_like = lambda t, **kw: drawn.to(t.dtype)
        try:
            return encode(x)
        finally:
            torch.randn_like = randn_like

    pipeline.ae.encode = encode_with_picbench_draw
    decode = pipeline.ae.decode

    def decode_captured(z: torch.Tensor) -> torch.Tensor:
        out["decoded"] = decode(z)
        return out["decoded"]

    pipeline.ae.decode = decode_captured
    prepare = uno_pipeline.prepare_multi_ip

    def prepare_captured(**kw):
        inp = prepare(**kw)
        out["noise"] = inp["img"]
        out["ref_tokens"] = torch.cat(inp["ref_img"], dim=1)
        out["img_ids"] = torch.cat([inp["img_ids"], *inp["ref_img_ids"]], dim=1)[0]
        out["txt_ids"] = inp["txt_ids"][0]
        return inp

    uno_pipeline.prepare_multi_ip = prepare_captured
    steps: dict[str, list[torch.Tensor]] = {"timesteps": [], "step_inputs": [], "predictions": []}

    def step_hook(module, args, kwargs, output):
        steps["timesteps"].append(kwargs["timesteps"])
        steps["step_inputs"].append(kwargs["img"])
        steps["predictions"].append(output)
        out["guidance"] = kwargs["guidance"]

    pipeline.model.register_forward_hook(step_hook, with_kwargs=True)
    denoise = uno_pipeline.denoise

    def denoise_captured(*a, **kw):
        latents = denoise(*a, **kw)
        out["latents"] = latents
        return latents

    uno_pipeline.denoise = denoise_captured

    refs = [Image.open(path) for path in settings["refs"]]
    ref_size = 512 if len(refs) == 1 else 320  # inference.py:94-95 (ref_size -1, its default)
    refs = [uno_pipeline.preprocess_ref(img, ref_size) for img in refs]
    image = pipeline(
        prompt=settings["prompt"],
        width=settings["width"],
        height=settings["height"],
        guidance=settings["guidance"],
        num_steps=settings["steps"],
        seed=settings["seed"],
        ref_imgs=refs,
        pe="d",
    )
    out.update({k: torch.stack(v) for k, v in steps.items()})
    out["ref_pixels"] = torch.cat(pixels)
    out["image"] = torch.from_numpy(np.asarray(image).copy())
    finish(work, out)


{"build": build, "run": run}[settings["mode"]]()
