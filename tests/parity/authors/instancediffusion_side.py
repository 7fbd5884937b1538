"""InstanceDiffusion's side of the parity test (frank-xwang/InstanceDiffusion @ 722900e), run inside its checkout.

``build``: tiny random weights made by the authors' code: their LDM ``UNetModel`` with the gated
self-attention fusers, ScaleU and ``UniFusion`` (``position_net``), configured by their
``configs/test_box.yaml`` with the widths made tiny, the zero-initialized parts (fuser gates, ScaleU,
null features, zero convolutions) drawn as training would leave them; saved as ``save_ckpt``
(``utils/checkpoint.py:131-141``) lays out the released container: ``model``, ``diffusion`` and
``config_dict`` (``vars`` of the OmegaConf config). ``run``: ``inference.py``'s box generation
(``prepare_batch``, ``GroundingNetInput``, ``prepare_instance_meta``, ``alpha_generator``,
``PLMSSamplerInst``) on that container, every stage recorded with hooks.

Runtime patches (the authors' files are not edited; each replaces one hard-coded value or call):
- ``UniFusion.__init__`` builds ``convnext_tiny(pretrained=True)`` (an ImageNet download) and
  hard-codes its feature width 3072 (``text_grounding_net.py:36-39``): a random strided
  convolution of the tiny width stands in (box generation multiplies its features by 0 and
  uses the null segmentation tokens), and the width is the tiny one;
- ``create_zero_input_tensors`` hard-codes CLIP ViT-L's width 768 (``utils/input.py:12``);
- ``restore_first_conv_from_SD`` hard-codes 320 channels and reads
  ``pretrained/SD_v1_5_input_conv_weight_bias.pth`` (``openaimodel.py:476-478``): the tiny width,
  and the tiny SD's first convolution;
- ``torch.backends.cuda.sdp_kernel`` (``attention.py:139-142,262-265``) selects CUDA kernels: a
  no-op on the CPU, where both sides take the default SDPA kernel;
- the text encoders (``FrozenCLIPEmbedder``, a CLIP download, and ``get_clip_feature``, whose
  ``.cuda()`` needs a GPU) return the embeddings picbench computed (the same text inputs);
- ``prepare_batch`` is called with ``device="cpu"`` (``inference.py`` passes ``"cuda"``) and the
  container is read with ``torch.load(weights_only=False)`` (the default of the torch the authors
  pin; torch >= 2.6 refuses the pickled config otherwise);
- ``skimage`` and ``tensorboard``, imported by modules on the path but not needed by box
  inference, are empty stand-in modules when absent (the polygons of an instance without a mask
  are the zeros ``inference.py:272-273`` puts, as skimage's contour search finds none).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from functools import partial
from typing import Any

import numpy as np
import torch
from side_io import FixedTextEncoder, finish, patched, start

checkout, work, settings, inputs = start()

for name in ("skimage", "skimage.measure", "skimage.transform", "torch.utils.tensorboard"):
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].SummaryWriter = sys.modules[name].resize = None  # imported by name, never called here
torch.backends.cuda.sdp_kernel = lambda **kwargs: contextlib.nullcontext()

import ldm.modules.diffusionmodules.openaimodel as openaimodel  # noqa: E402
import ldm.modules.diffusionmodules.text_grounding_net as text_grounding_net  # noqa: E402
import utils.input as authors_input  # noqa: E402
from dataset.decode_item import sample_random_points_from_mask  # noqa: E402
from ldm.models.diffusion.plms_instance import PLMSSamplerInst  # noqa: E402
from ldm.util import instantiate_from_config  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from utils.input import convert_points, prepare_batch, prepare_instance_meta  # noqa: E402
from utils.model import alpha_generator, set_alpha_scale  # noqa: E402

SEG_DIM, TEXT_DIM = settings["seg_feature_dim"], settings["text_dim"]


def tiny_convnext(pretrained: bool = False) -> torch.nn.Module:
    """Stands in for convnext_tiny: 512 px -> an 8 x 8 grid of SEG_DIM features (the 64 tokens)."""
    return torch.nn.Conv2d(3, SEG_DIM, kernel_size=64, stride=64)


text_grounding_net.convnext_tiny = tiny_convnext
text_grounding_net.UniFusion = patched(
    text_grounding_net.UniFusion, {"self.convnext_feature_dim = 3072": (f"self.convnext_feature_dim = {SEG_DIM}", 1)}
)
authors_input.create_zero_input_tensors = patched(
    authors_input.create_zero_input_tensors, {"torch.zeros(max_objs, 768)": (f"torch.zeros(max_objs, {TEXT_DIM})", 1)}
)
openaimodel.SD_CONV_IN_FILE = settings.get("sd_conv_in")
openaimodel.UNetModel.restore_first_conv_from_SD = patched(
    openaimodel.UNetModel.restore_first_conv_from_SD,
    {
        'th.load("pretrained/SD_v1_5_input_conv_weight_bias.pth")': ("th.load(SD_CONV_IN_FILE)", 1),
        "conv_nd(2, 4, 320, 3, padding=1)": ("conv_nd(2, 4, self.model_channels, 3, padding=1)", 1),
    },
)


def tiny_config() -> Any:
    """configs/test_box.yaml with the tiny widths (and the tiny UNet's levels) put in."""
    config = OmegaConf.load(checkout / "configs" / "test_box.yaml")
    config.model.params.update(settings["unet"])
    config.model.params.grounding_tokenizer.params.update(settings["fusion"])
    return config


def build() -> None:
    config = tiny_config()
    torch.manual_seed(settings["seed"])
    model = instantiate_from_config(config.model)
    diffusion = instantiate_from_config(config.diffusion)
    with torch.no_grad():  # what training leaves: gates, ScaleU, null features, zero convolutions all moved
        for name, param in model.named_parameters():
            if not param.any():
                param.normal_(
                    std=settings["gate_std"] if name.endswith(("alpha_attn", "alpha_dense")) or "scaleu_" in name else settings["zero_std"]
                )
    config.autoencoder.params.ddconfig.update(settings["ddconfig"])
    autoencoder = instantiate_from_config(config.autoencoder)
    container = {"model": model.state_dict(), "autoencoder": autoencoder.state_dict(), "diffusion": diffusion.state_dict()}
    torch.save(container | {"config_dict": vars(config)}, settings["out"])
    finish(work, {})


class Recorder:
    """Per trajectory (0: the full layout; 1..N: the instances of the multi-instance sampler),
    every UNet evaluation's input, time and both CFG predictions, and the first evaluation's
    grounding input and tokens (conditional and null)."""

    def __init__(self, model: Any, inputs_by_branch: list[dict[str, Any]]) -> None:
        self.branch_of = {id(x): i for i, x in enumerate(inputs_by_branch)}
        self.evals: list[list[dict[str, torch.Tensor]]] = [[] for _ in inputs_by_branch]
        self.grounding: list[dict[str, torch.Tensor]] = [{} for _ in inputs_by_branch]
        self.current = 0
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)
        model.position_net.register_forward_hook(self._tokens)

    def _before(self, module: Any, args: tuple[dict[str, Any]]) -> None:
        given = args[0]
        self.cond = "grounding_input" in given
        if self.cond:
            self.current = self.branch_of[id(given)]
            self.evals[self.current].append({"x": given["x"].clone(), "t": given["timesteps"].clone()})

    def _tokens(self, module: Any, args: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, bool]) -> None:
        kind = "cond" if self.cond else "null"
        record = self.grounding[self.current]
        if f"tokens_{kind}" not in record:
            record[f"tokens_{kind}"] = output[0].clone()
            record.update({f"{name}_{kind}": args[i].clone() for i, name in enumerate(("boxes", "masks", "embeddings"))})

    def _after(self, module: Any, args: Any, output: torch.Tensor) -> None:
        self.evals[self.current][-1]["cond" if self.cond else "uncond"] = output.clone()


def run() -> None:
    """inference.py's run() for one image of a box layout (inference.py:38-96, 237-301), with the
    models loaded as load_model_ckpt loads them (utils/checkpoint.py:224-247)."""
    saved = torch.load(settings["checkpoint"], map_location="cpu", weights_only=False)
    config = saved["config_dict"]["_content"]
    model = instantiate_from_config(config["model"]).eval()
    model.load_state_dict(saved["ema"] if "ema" in saved else saved["model"])
    diffusion = instantiate_from_config(config["diffusion"])
    diffusion.load_state_dict(saved["diffusion"])
    autoencoder = instantiate_from_config(config["autoencoder"]).eval()
    autoencoder.load_state_dict(saved["autoencoder"])
    grounding_tokenizer_input = instantiate_from_config(config["grounding_tokenizer_input"])
    model.grounding_tokenizer_input = grounding_tokenizer_input

    phrases, locations = settings["phrases"], settings["boxes"]
    pooled = dict(zip(phrases, inputs["instance_pooled"].split(1)))
    authors_input.get_clip_feature = lambda model, processor, phrase, is_image=False: pooled[phrase]
    table = {settings["prompt"]: inputs["context"], settings["negative_prompt"]: inputs["uncond"]}
    table.update(zip(phrases, inputs["instance_context"].split(1)))
    text_encoder = FixedTextEncoder(table)

    # inference.py:241-292: points at the box centres, scribbles and polygons from empty masks, zero segs
    points = [[(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0] for b in locations]  # get_point_from_box
    img_info = {"width": settings["width"], "height": settings["height"]}
    masks = [np.zeros((512, 512, 1)) for _ in locations]
    scribbles = [convert_points(sample_random_points_from_mask(m, 20), img_info) for m in masks]
    # an empty mask has no contour: sample_sparse_points_from_mask finds none, inference.py:272-273 puts zeros
    polygons = [convert_points([0 for _ in range(256 * 2)], img_info) for _ in masks]
    segs = np.stack([m.astype(np.float32) for m in masks]).squeeze()
    alpha = settings["alpha"]
    meta = dict(
        prompt=settings["prompt"],
        phrases=phrases,
        polygons=polygons,
        scribbles=scribbles,
        segs=segs,
        locations=locations,
        points=points,
        alpha_type=[alpha, 0.0, 1 - alpha],
    )

    torch.manual_seed(settings["seed"])  # inference.py:300-301
    latent = settings["latent_size"]
    starting_noise = torch.randn(1, 4, latent, latent)

    def model_input(meta: dict[str, Any]) -> dict[str, Any]:  # get_model_inputs, inference.py:38-75
        batch = prepare_batch(meta, batch=1, max_objs=30, model=None, processor=None, image_size=latent, use_masked_att=True, device="cpu")
        context = text_encoder.encode([meta["prompt"]])
        grounding_input = grounding_tokenizer_input.prepare(batch, return_att_masks=False)
        return dict(x=starting_noise, timesteps=None, context=context, grounding_input=grounding_input)

    uc = text_encoder.encode([settings["negative_prompt"]])
    input_all = [model_input(meta)]
    if settings["mis"] > 0:  # inference.py:83-90
        input_all += [model_input(prepare_instance_meta(meta, i)) for i in range(len(phrases))]
    recorder = Recorder(model, input_all)
    sampler = PLMSSamplerInst(
        diffusion,
        model,
        alpha_generator_func=partial(alpha_generator, type=meta["alpha_type"]),
        set_alpha_scale=set_alpha_scale,
        mis=settings["mis"],
    )
    latents = sampler.sample(
        S=settings["steps"], shape=(1, model.in_channels, latent, latent), input=input_all, uc=uc, guidance_scale=settings["guidance"]
    )

    out = {"noise": starting_noise, "latents": latents}
    with torch.no_grad():  # inference.py:96,123-125: decode, then 8 bits
        sample = autoencoder.decode(latents)[0]
    sample = torch.clamp(sample, min=-1, max=1) * 0.5 + 0.5
    sample = sample.cpu().numpy().transpose(1, 2, 0) * 255
    out["image"] = torch.from_numpy(sample.astype(np.uint8))
    out["image_mean"] = out["image"].double().mean()
    for kind in ("cond", "null"):
        for name in ("boxes", "masks", "embeddings", "tokens"):
            out[f"grounding_{name}_{kind}"] = torch.cat([g[f"{name}_{kind}"] for g in recorder.grounding])
    evals = [e for branch in recorder.evals for e in branch]
    out["timesteps"] = torch.cat([e["t"] for e in evals]).double()
    out["step_inputs"] = torch.cat([e["x"] for e in evals])
    out["predictions"] = torch.stack([torch.cat([e["cond"], e["uncond"]]) for e in evals])
    steps = np.flip(sampler.ddim_timesteps).copy()
    index = np.arange(len(steps))[::-1].copy()  # PLMSSamplerInst: index = total_steps - i - 1
    alphas = torch.as_tensor(sampler.ddim_alphas)[index].double()
    alphas_prev = torch.as_tensor(sampler.ddim_alphas_prev)[index].double()
    out["schedule"] = torch.stack([torch.as_tensor(steps).double(), alphas, alphas_prev], dim=1)
    out["evaluations_per_branch"] = torch.tensor([len(b) for b in recorder.evals])
    finish(work, out)


{"build": build, "run": run}[settings["mode"]]()
