"""InstanceDiffusion (Wang et al., CVPR 2024), box-conditioned, carried on diffusers.

Decision: the official code (frank-xwang/InstanceDiffusion) is a research fork of the LDM
codebase, not a package: it pins torch 2.0 / CUDA-only paths (``torch.backends.cuda.sdp_kernel``,
hard-coded ``.cuda()``), needs omegaconf, skimage and the whole ``ldm`` tree on ``sys.path``, and
downloads an SDXL refiner. Installing it on a fresh machine is fragile, so we carry only what box
generation needs on diffusers, and load the released checkpoint's own key layout:

- SD 1.5's UNet with GLIGEN-style gated self-attention fusers: diffusers'
  ``UNet2DConditionModel(attention_type="gated")`` has the same fuser (linear, attn.to_q/k/v/out,
  GEGLU ff, norm1/2, alpha_attn/alpha_dense) at the same place in each transformer block;
- UniFusion (``position_net``): :class:`InstanceFusion` below, with the released key layout;
- ScaleU (``scaleu_b_{i}``/``scaleu_s_{i}`` on the 12 decoder skip joins): :class:`ScaleU`;
- the frozen SD 1.5 VAE and CLIP ViT-L/14 text encoder, unchanged by InstanceDiffusion's
  training, come from the SD 1.5 diffusers folder; instance-caption features are that text
  encoder's pooler output, as the authors' ``get_clip_feature`` computes with CLIP ViT-L/14.

Released key layout (source: ``ldm/modules/diffusionmodules/openaimodel.py``,
``ldm/modules/attention.py``, ``text_grounding_net.py`` and ``utils/checkpoint.py`` of
frank-xwang/InstanceDiffusion): ``instancediffusion_sd15.pth`` is a ``torch.save`` dict whose
``"model"`` (and, if present, ``"ema"``, preferred as the authors' loader does) holds the UNet in
LDM names (``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``, ``time_embed.*``,
``out.*``, fusers at ``...transformer_blocks.0.fuser.*``), ``position_net.*`` and ``scaleu_*``.
The LDM UNet names are converted by diffusers' own ``convert_ldm_unet_checkpoint``.

Inference follows ``inference.py`` with ``configs/test_box.yaml``: boxes as normalised xyxy, the
box centre as the instance point, scribbles and masks dropped (their null tokens, so the convnext
mask branch never contributes and is not built), efficient attention (no fuser attention mask),
50 PLMS steps (diffusers' PNDM in PLMS mode, SD 1.5's sampler), guidance 7.5, SD 1.5's own first
convolution once grounding is off (``restore_first_conv_from_SD``), the multi-instance sampler
for the first ``mis`` of the steps (``PLMSSamplerInst``: per-instance branches averaged), noise
from ``torch.manual_seed(seed)`` on the CPU, 512x512, the image written in 8 bits as
``inference.py:123-125`` writes it (truncated: :func:`~picbench.methods.sd_grounding.ldm_image`).
Left out: the optional SDXL-refiner cascade (``--cascade_strength``, a second model that
post-processes the image; the authors' README says it was not used for their quantitative
evaluation).

Defaults are the authors' quantitative evaluation, not ``inference.py``'s argparse defaults
(frank-xwang/InstanceDiffusion @ 722900e, README "Model Quantitative Evaluation on MSCOCO":
``eval_local.py ... --mis 0.36 --alpha 1.0``; ``eval_local.py``'s ``--negative_prompt`` default,
which adds "cartoon style, painting style" to ``inference.py``'s): grounding at every step.
Step counts are the authors' PLMS steps: diffusers' PNDM runs the first PLMS step (LDM's
pseudo-improved Euler, two UNet calls) as two scheduler entries, so entry ``j`` is the authors'
step ``max(0, j - 1)`` (:func:`~picbench.methods.sd_grounding.plms_step`); ``int(alpha * 50)`` and ``int(mis * 50)`` count
those steps (``alpha`` 0.75 grounds 37 steps, ``mis`` 0.36 runs 18 multi-instance steps).
"""

from __future__ import annotations

import collections
import copy
import json
import pickle
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from picbench.checkpoints import HubFiles, download_file, hub_files, load_pretrained
from picbench.errors import PicbenchError
from picbench.methods.base import Capabilities, Method
from picbench.methods.params import GUIDANCE, RESOLUTION, STEPS, Param
from picbench.methods.sd_grounding import generation_size, grounded_boxes, ldm_image, plms_step
from picbench.paths import picbench_home
from picbench.records import Sample
from picbench.tiny.publish import publish_folder

INSTANCEDIFFUSION_CHECKPOINT = "xudongw/InstanceDiffusion"
INSTANCEDIFFUSION_FILE = "instancediffusion_sd15.pth"
SD15_CHECKPOINT = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# frank-xwang/InstanceDiffusion @ 722900e, eval_local.py: the --negative_prompt default of the
# quantitative evaluation (inference.py's default lacks "cartoon style, painting style, ")
AUTHORS_NEGATIVE_PROMPT = (
    "cartoon style, painting style, longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality"
)
MAX_OBJECTS = 30
# position_net parts of the released checkpoint that box generation never uses (mask branch)
UNUSED_POSITION_NET_PREFIXES = ("position_net.in_conv.", "position_net.convnext_tiny_backbone.")
_SCALEU_KEY = re.compile(r"^scaleu_[bs]_\d+$")


def fourier_embed(coords: torch.Tensor, num_freqs: int, temperature: float = 100.0) -> torch.Tensor:
    """GLIGEN's FourierEmbedder: for each frequency, sin then cos of every coordinate.
    (..., D) -> (..., num_freqs * 2 * D)."""
    freqs = temperature ** (torch.arange(num_freqs, device=coords.device, dtype=coords.dtype) / num_freqs)
    angles = (freqs.view(*([1] * coords.dim()), num_freqs) * coords.unsqueeze(-1)).transpose(-1, -2)  # (..., F, D)
    return torch.stack((angles.sin(), angles.cos()), dim=-2).flatten(-3)  # (..., F, 2, D) flattened


def _mlp(in_dim: int, mid_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, mid_dim), nn.SiLU(), nn.Linear(mid_dim, mid_dim), nn.SiLU(), nn.Linear(mid_dim, out_dim))


class InstanceFusion(nn.Module):
    """UniFusion's tokenizer as used for box generation (parameter names = the released
    ``position_net.*`` keys). Each instance yields a box token and a point token (its box centre);
    scribble, polygon and the 64 mask-feature tokens are the learned null embeddings, as with the
    authors' ``test_drop_scribbles``/``test_drop_masks``. Output: (B, 4 * N + 64, out_dim)."""

    def __init__(
        self,
        text_dim: int = 768,
        out_dim: int = 768,
        mid_dim: int = 3072,
        fourier_freqs: int = 16,
        n_scribble_points: int = 20,
        n_polygon_points: int = 256,
        seg_feature_dim: int = 3072,
        seg_tokens: int = 64,
    ) -> None:
        super().__init__()
        self.fourier_freqs = fourier_freqs
        position_dim, point_dim = fourier_freqs * 2 * 4, fourier_freqs * 2 * 2
        scribble_dim, polygon_dim = fourier_freqs * 2 * n_scribble_points * 2, fourier_freqs * 2 * n_polygon_points * 2
        self.linears_list = nn.ModuleList(
            [_mlp(text_dim + d, mid_dim, out_dim) for d in (position_dim, point_dim, scribble_dim, polygon_dim)]
            + [_mlp(seg_feature_dim, mid_dim, out_dim)]
        )
        self.null_positive_feature = nn.Parameter(torch.zeros(text_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(position_dim))
        self.null_point_feature = nn.Parameter(torch.zeros(point_dim))
        self.null_scribble_feature = nn.Parameter(torch.zeros(scribble_dim))
        self.null_polygon_feature = nn.Parameter(torch.zeros(polygon_dim))
        self.null_seg_feature = nn.Parameter(torch.zeros(seg_feature_dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, seg_tokens, seg_feature_dim).normal_(std=0.02))

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor, positive_embeddings: torch.Tensor) -> torch.Tensor:
        batch, n, _ = boxes.shape
        m = masks.unsqueeze(-1).to(boxes.dtype)
        text = positive_embeddings * m + (1 - m) * self.null_positive_feature
        xyxy = fourier_embed(boxes, self.fourier_freqs) * m + (1 - m) * self.null_position_feature
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        point = fourier_embed(centres, self.fourier_freqs) * m + (1 - m) * self.null_point_feature
        scribble = self.null_scribble_feature.expand(batch, n, -1)
        polygon = self.null_polygon_feature.expand(batch, n, -1)
        seg = (self.null_seg_feature + self.pos_embedding).expand(batch, -1, -1)
        box_mlp, point_mlp, scribble_mlp, polygon_mlp, seg_mlp = self.linears_list
        return torch.cat(
            [
                box_mlp(torch.cat([text, xyxy], -1)),
                point_mlp(torch.cat([text, point], -1)),
                scribble_mlp(torch.cat([text, scribble], -1)),
                polygon_mlp(torch.cat([text, polygon], -1)),
                seg_mlp(seg),
            ],
            dim=1,
        )


def low_frequency_scale(x: torch.Tensor, scale: torch.Tensor, threshold: int = 1) -> torch.Tensor:
    """FreeU's Fourier filter as ScaleU uses it: multiply the centred low-frequency square of
    half-width ``threshold`` by ``scale``."""
    dtype = x.dtype
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    h, w = freq.shape[-2:]
    mask = torch.ones(h, w, device=x.device)
    ch, cw = h // 2, w // 2
    mask[ch - threshold : ch + threshold, cw - threshold : cw + threshold] = scale.float()
    freq = freq * mask
    return torch.fft.ifftn(torch.fft.ifftshift(freq, dim=(-2, -1)), dim=(-2, -1)).real.to(dtype)


class ScaleU(nn.Module):
    """InstanceDiffusion's ScaleU: at decoder join i the backbone features are scaled per channel
    by ``tanh(scaleu_b_i) + 1`` and the skip features' low frequencies by ``tanh(scaleu_s_i) + 1``.
    Attached as forward pre-hooks on the UNet's up-block resnets (join i = i-th resnet), whose
    input is ``cat([backbone, skip])``, so the UNet code stays diffusers'."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        for i, c in enumerate(channels):
            self.register_parameter(f"scaleu_b_{i}", nn.Parameter(torch.zeros(c)))
            self.register_parameter(f"scaleu_s_{i}", nn.Parameter(torch.zeros(1)))
        self.joins = len(channels)

    @staticmethod
    def join_channels(unet: nn.Module) -> list[int]:
        """Backbone channels entering each up-block resnet, in decoder order."""
        return [resnet.in_channels - skip for resnet, skip in _up_resnets_with_skip(unet)]

    def scale(self, i: int, joined: torch.Tensor) -> torch.Tensor:
        b = torch.tanh(getattr(self, f"scaleu_b_{i}")) + 1
        s = torch.tanh(getattr(self, f"scaleu_s_{i}")) + 1
        backbone, skip = joined[:, : b.numel()], joined[:, b.numel() :]
        return torch.cat([backbone * b.view(1, -1, 1, 1).to(joined.dtype), low_frequency_scale(skip, s)], dim=1)

    def attach(self, unet: nn.Module) -> None:
        resnets = [r for r, _ in _up_resnets_with_skip(unet)]
        if len(resnets) != self.joins:
            raise ValueError(f"ScaleU has {self.joins} joins, the UNet has {len(resnets)} up-block resnets")
        for i, resnet in enumerate(resnets):
            resnet.register_forward_pre_hook(lambda module, args, i=i: (self.scale(i, args[0]), *args[1:]))


def _up_resnets_with_skip(unet: Any) -> list[tuple[nn.Module, int]]:
    """(resnet, skip channels) for every up-block resnet, following diffusers' skip bookkeeping."""
    skips = [unet.config.block_out_channels[0]]
    for block in unet.down_blocks:
        skips += [r.out_channels for r in block.resnets]
        if block.downsamplers is not None:
            skips.append(block.resnets[-1].out_channels)
    out = []
    for block in unet.up_blocks:
        for resnet in block.resnets:
            out.append((resnet, skips.pop()))
    return out


def split_released_state_dict(
    model_sd: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The released ``model`` dict -> (LDM UNet keys, position_net keys, scaleu keys); the unused
    mask-branch keys are dropped."""
    unet, position, scaleu = {}, {}, {}
    for key, value in model_sd.items():
        if key.startswith(UNUSED_POSITION_NET_PREFIXES):
            continue
        if key.startswith("position_net."):
            position[key.removeprefix("position_net.")] = value
        elif _SCALEU_KEY.match(key):
            scaleu[key] = value
        else:
            unet[key] = value
    return unet, position, scaleu


def load_released_weights(unet: Any, scaleu: ScaleU, model_sd: Mapping[str, torch.Tensor]) -> None:
    """Load a released-layout ``model`` dict into a gated diffusers UNet whose ``position_net``
    is an :class:`InstanceFusion`, and into ``scaleu``. Strict: any missing or unexpected key is
    an error naming it."""
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

    ldm_unet, position, scale = split_released_state_dict(model_sd)
    converted = convert_ldm_unet_checkpoint({LDM_UNET_KEY + k: v for k, v in ldm_unet.items()}, dict(unet.config))
    converted.update({f"position_net.{k}": v for k, v in position.items()})
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    unconverted = sorted(set(ldm_unet) - set(_ldm_keys_consumed(ldm_unet, converted)))
    if missing or unexpected or unconverted:
        raise PicbenchError(
            f"instancediffusion: checkpoint does not match the UNet: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}, not converted {unconverted[:5]}"
        )
    scaleu.load_state_dict(scale, strict=True)


def _ldm_keys_consumed(ldm_unet: Mapping[str, torch.Tensor], converted: Mapping[str, torch.Tensor]) -> list[str]:
    """LDM keys whose tensor landed in the converted dict (identity check: nothing silently dropped)."""
    landed = {id(v) for v in converted.values()}
    return [k for k, v in ldm_unet.items() if id(v) in landed]


class OmegaConfNode(dict):
    """What an OmegaConf object of the released container becomes: a plain dict of its pickled
    state (``_metadata``, ``_content``, ``_val`` ...). No omegaconf code runs, none is needed."""

    def __setstate__(self, state: Any) -> None:
        self.update(state if isinstance(state, Mapping) else {"state": state})


# The classes the released container pickles besides tensors: the authors' ``save_ckpt``
# (frank-xwang/InstanceDiffusion @ 722900e, utils/checkpoint.py) stores ``config_dict =
# vars(config)`` of an OmegaConf DictConfig (utils/misc.py ``save_config``), which their loader
# reads as ``saved_ckpt["config_dict"]["_content"]``. Each maps to OmegaConfNode; nothing else
# beyond torch's own tensor allow-list is accepted.
OMEGACONF_CLASSES = tuple(
    f"omegaconf.{name}"
    for name in (
        "dictconfig.DictConfig",
        "listconfig.ListConfig",
        "base.ContainerMetadata",
        "base.Metadata",
        "nodes.AnyNode",
        "nodes.StringNode",
        "nodes.IntegerNode",
        "nodes.FloatNode",
        "nodes.BooleanNode",
        "nodes.BytesNode",
        "nodes.PathNode",
    )
)
# the plain values OmegaConf metadata refers to (ref_type=typing.Any, object_type=dict, ...)
_METADATA_GLOBALS = (typing.Any, dict, list, int, float, str, bool, collections.defaultdict)


def read_released_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The ``ema`` weights if the file has them (the authors' loader prefers them), else ``model``.

    Loaded by torch's tensors-only unpickler, which also admits the OmegaConf classes of the
    released container (as :class:`OmegaConfNode`): any other pickled class or function is
    refused, never imported or called."""
    # each stand-in carries its OmegaConf class path, the name torch's allow-list matches
    stand_ins = [
        type(name.rsplit(".", 1)[1], (OmegaConfNode,), {"__module__": name.rsplit(".", 1)[0], "__qualname__": name.rsplit(".", 1)[1]})
        for name in OMEGACONF_CLASSES
    ]
    try:
        with torch.serialization.safe_globals([*stand_ins, *_METADATA_GLOBALS]):
            saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"the pickled global {found.group(1)!r}" if found else "a pickled object"
        raise PicbenchError(
            f"instancediffusion: {path} holds {what}, which is neither a tensor nor part of the released "
            "checkpoint's container (state dicts and OmegaConf config); refused without running it"
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise PicbenchError(f"instancediffusion: cannot read {path} as a torch checkpoint: {exc}") from exc
    if isinstance(saved, Mapping):
        for key in ("ema", "model"):
            if isinstance(saved.get(key), Mapping):
                return dict(saved[key])
    found = sorted(map(str, saved))[:8] if isinstance(saved, Mapping) else type(saved).__name__
    raise PicbenchError(f"instancediffusion: {path} has neither an 'ema' nor a 'model' state dict (found: {found})")


@dataclass(frozen=True)
class InstanceCall:
    """One sample in InstanceDiffusion's terms."""

    prompt: str
    instance_captions: tuple[str, ...]
    boxes: tuple[tuple[float, float, float, float], ...]
    width: int
    height: int


# frank-xwang/InstanceDiffusion @ 722900e, eval_local.py:248 and :254: each instance's phrase is the
# bare COCO category name (cat_names = [cat["name"] ...]; test_info['phrases'] = cat_names[:max_objs]),
# which utils/input.py:140 also makes each instance's prompt in the multi-instance sampler.
AUTHORS_INSTANCE_CAPTION = "{class_word}"


def instance_call(sample: Sample, caption_template: str, resolution: int) -> InstanceCall:
    """Boxes stay normalised xyxy (what the authors' ``rescale_box`` produces); each instance's
    caption is the template filled with its class word (the authors: the bare class word,
    :data:`AUTHORS_INSTANCE_CAPTION`); references are not used."""
    boxes = grounded_boxes(sample, "instancediffusion", MAX_OBJECTS)
    width, height = generation_size(sample.width, sample.height, resolution)
    return InstanceCall(
        prompt=sample.prompt,
        instance_captions=tuple(caption_template.format(class_word=s.class_word, name=s.name) for s in sample.subjects),
        boxes=boxes,
        width=width,
        height=height,
    )


def grounding_steps(steps: int, alpha: float) -> int:
    """The authors' alpha schedule [alpha, 0, 1 - alpha]: fusers on for ``int(alpha * steps)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"instancediffusion: alpha must be in [0, 1], got {alpha}")
    return int(alpha * steps)


def initial_noise(seed: int, width: int, height: int, latent_factor: int) -> torch.Tensor:
    """``torch.manual_seed(seed); torch.randn(1, 4, h, w)`` as the authors draw x_T, on a private
    CPU generator so it is the same on every device and never disturbs global RNG state."""
    return torch.randn((1, 4, height // latent_factor, width // latent_factor), generator=torch.Generator("cpu").manual_seed(seed))


def mis_steps(steps: int, mis: float) -> int:
    """Steps run by the multi-instance sampler before its branches are averaged (``--mis``)."""
    if not 0.0 <= mis <= 1.0:
        raise ValueError(f"instancediffusion: mis must be in [0, 1], got {mis}")
    return int(mis * steps)


@dataclass
class _Branch:
    """One denoising trajectory: the full layout, or (multi-instance sampling) one instance."""

    context: torch.Tensor
    gligen: dict[str, torch.Tensor]
    latents: torch.Tensor
    scheduler: Any


@dataclass
class InstanceDiffusionModel:
    """The loaded parts; :meth:`sample` is the authors' box-conditioned PLMS sampler.

    ``sd_conv_in`` holds SD 1.5's own first convolution: the authors' sampler swaps it back in
    (``restore_first_conv_from_SD``) once grounding is off."""

    vae: Any
    text_encoder: Any
    tokenizer: Any
    unet: Any
    scaleu: ScaleU
    scheduler: Any
    sd_conv_in: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        self.grounded_conv_in = {k: v.detach().clone() for k, v in self.unet.conv_in.state_dict().items()}

    def to(self, device: str) -> InstanceDiffusionModel:
        for part in (self.vae, self.text_encoder, self.unet, self.scaleu):
            part.to(device)
        self.grounded_conv_in = {k: v.to(device) for k, v in self.grounded_conv_in.items()}
        return self

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _encode(self, texts: list[str], *, pooled: bool) -> torch.Tensor:
        if pooled:  # instance captions: padded to the longest, as CLIPProcessor(padding=True)
            tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            return self.text_encoder(
                input_ids=tokens.input_ids.to(self.unet.device), attention_mask=tokens.attention_mask.to(self.unet.device)
            ).pooler_output
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        return self.text_encoder(tokens.input_ids.to(self.unet.device))[0]

    def grounding(self, captions: Sequence[str], boxes: Sequence[Sequence[float]]) -> dict[str, torch.Tensor]:
        """GroundingNetInput's tensors, padded to 30 objects; row 0 grounded, row 1 the null input
        (all masks 0) the authors use for the unconditional branch."""
        device, dtype = self.unet.device, self.unet.dtype
        n, dim = len(boxes), self.text_encoder.config.hidden_size
        box_t = torch.zeros(2, MAX_OBJECTS, 4, device=device, dtype=dtype)
        masks = torch.zeros(2, MAX_OBJECTS, device=device, dtype=dtype)
        embeds = torch.zeros(2, MAX_OBJECTS, dim, device=device, dtype=dtype)
        box_t[0, :n] = torch.tensor(boxes, device=device, dtype=dtype)
        masks[0, :n] = 1
        embeds[0, :n] = self._encode(list(captions), pooled=True).to(dtype)
        return {"boxes": box_t, "masks": masks, "positive_embeddings": embeds}

    def set_grounding(self, enabled: bool) -> None:
        """Gated fusers on or off (alpha 1 or 0), with the matching first convolution."""
        from diffusers.models.attention import GatedSelfAttentionDense

        for module in self.unet.modules():
            if isinstance(module, GatedSelfAttentionDense):
                module.enabled = enabled
        self.unet.conv_in.load_state_dict(self.grounded_conv_in if enabled else self.sd_conv_in)

    def _branch(
        self, prompt: str, captions: Sequence[str], boxes: Sequence[Sequence[float]], uncond: torch.Tensor, noise: torch.Tensor
    ) -> _Branch:
        context = torch.cat([self._encode([prompt], pooled=False), uncond]).to(self.unet.dtype)
        return _Branch(context, self.grounding(captions, boxes), noise.clone(), copy.deepcopy(self.scheduler))

    def _step(self, branch: _Branch, t: torch.Tensor, guidance_scale: float) -> None:
        model_in = branch.scheduler.scale_model_input(torch.cat([branch.latents, branch.latents]), t)
        eps = self.unet(model_in, t, encoder_hidden_states=branch.context, cross_attention_kwargs={"gligen": dict(branch.gligen)}).sample
        eps_cond, eps_uncond = eps.chunk(2)
        branch.latents = branch.scheduler.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, branch.latents).prev_sample

    @torch.no_grad()
    def sample(
        self, call: InstanceCall, *, seed: int, steps: int, guidance_scale: float, alpha: float, mis: float, negative_prompt: str
    ) -> Image.Image:
        """PLMS with CFG; fusers on for the first ``alpha`` of the steps. With ``mis`` > 0 the
        multi-instance sampler also denoises each instance alone (its caption as prompt, its box
        as the only grounding) from the same noise for the first ``mis`` of the steps, then
        averages all latents and continues with the full layout."""
        device, dtype = self.unet.device, self.unet.dtype
        self.scheduler.set_timesteps(steps, device=device)
        noise = initial_noise(seed, call.width, call.height, self.latent_factor).to(device, dtype) * self.scheduler.init_noise_sigma
        uncond = self._encode([negative_prompt], pooled=False)
        merge_at = mis_steps(steps, mis)
        branches = [self._branch(call.prompt, call.instance_captions, call.boxes, uncond, noise)]
        if merge_at > 0:
            branches += [self._branch(c, [c], [b], uncond, noise) for c, b in zip(call.instance_captions, call.boxes)]
        cutoff = grounding_steps(steps, alpha)
        try:
            for entry, t in enumerate(self.scheduler.timesteps):
                step = plms_step(entry)
                self.set_grounding(step < cutoff)
                if step == merge_at and len(branches) > 1:
                    branches[0].latents = torch.stack([b.latents for b in branches]).mean(0)
                    branches = branches[:1]
                for branch in branches:
                    self._step(branch, t, guidance_scale)
        finally:
            self.set_grounding(True)
        return ldm_image(self.vae.decode(branches[0].latents / self.vae.config.scaling_factor).sample)


def read_sd_conv_in(base: str | Path) -> dict[str, torch.Tensor]:
    """SD 1.5's ``conv_in`` from its diffusers UNet file, read without loading the rest (the
    authors ship the same two tensors as ``pretrained/SD_v1_5_input_conv_weight_bias.pth``)."""
    from safetensors import safe_open

    path = Path(base) / "unet" / "diffusion_pytorch_model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        return {"weight": f.get_tensor("conv_in.weight"), "bias": f.get_tensor("conv_in.bias")}


def gated_unet_from_config(config: Mapping[str, Any], position_net: InstanceFusion) -> Any:
    """SD's UNet with gated fusers; its GLIGEN position net replaced by InstanceDiffusion's."""
    from diffusers import UNet2DConditionModel

    # drop diffusers' "_use_default_values" bookkeeping, which would reset attention_type to default
    plain = {k: v for k, v in config.items() if k != "_use_default_values"}
    unet = UNet2DConditionModel.from_config(plain, attention_type="gated")
    unet.position_net = position_net
    return unet


def fusion_dims(model_sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """InstanceFusion's widths read off a released-layout ``model`` dict (768/3072 for SD 1.5)."""
    try:
        first = model_sd["position_net.linears_list.0.0.weight"]
        return {
            "text_dim": model_sd["position_net.null_positive_feature"].shape[0],
            "out_dim": model_sd["position_net.linears_list.0.4.weight"].shape[0],
            "mid_dim": first.shape[0],
            "seg_feature_dim": model_sd["position_net.null_seg_feature"].shape[0],
        }
    except KeyError as exc:
        raise PicbenchError(
            f"instancediffusion: checkpoint has no {exc.args[0]!r}: not an InstanceDiffusion UniFusion checkpoint"
        ) from None


def assemble(base: str | Path, model_sd: Mapping[str, torch.Tensor], torch_dtype: torch.dtype = torch.float32) -> InstanceDiffusionModel:
    """Build the model from an SD 1.5 diffusers folder (VAE, text encoder, tokenizer, scheduler,
    UNet config) and a released-layout InstanceDiffusion ``model`` dict."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = gated_unet_from_config(UNet2DConditionModel.load_config(base, subfolder="unet"), InstanceFusion(**fusion_dims(model_sd)))
    scaleu = ScaleU(ScaleU.join_channels(unet))
    load_released_weights(unet, scaleu, model_sd)
    scaleu.attach(unet)

    def cast(module: Any) -> Any:  # after loading: the load-time dtype keyword differs across versions
        return (module if torch_dtype == torch.float32 else module.to(torch_dtype)).eval()

    return InstanceDiffusionModel(
        vae=cast(AutoencoderKL.from_pretrained(base, subfolder="vae")),
        text_encoder=cast(CLIPTextModel.from_pretrained(base, subfolder="text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=cast(unet),
        scaleu=cast(scaleu),
        scheduler=PNDMScheduler.from_pretrained(base, subfolder="scheduler", skip_prk_steps=True),
        sd_conv_in={k: v.to(torch_dtype) for k, v in read_sd_conv_in(base).items()},
    )


TINY_FUSION_DIMS = {"text_dim": 32, "out_dim": 32, "mid_dim": 64, "seg_feature_dim": 64}

_LDM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def to_released_layout(unet: Any, scaleu: ScaleU) -> dict[str, torch.Tensor]:
    """The inverse of :func:`load_released_weights`: a gated diffusers UNet (InstanceFusion
    position net) plus ScaleU written in the released checkpoint's LDM names. Used to write the
    tiny checkpoint, so tiny runs load through the same converter as the released file."""
    per_block = unet.config.layers_per_block + 1
    out: dict[str, torch.Tensor] = {}

    def resnet(ldm: str, rest: str) -> str:
        head, _, tail = rest.partition(".")
        return f"{ldm}.{_LDM_RESNET[head]}.{tail}"

    for key, value in unet.state_dict().items():
        parts = key.split(".")
        if parts[0] == "time_embedding":
            new = {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[parts[1]] + "." + parts[2]
        elif parts[0] in ("conv_in", "conv_norm_out", "conv_out"):
            new = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}[parts[0]] + "." + parts[1]
        elif parts[0] == "position_net":
            new = key
        elif parts[0] == "down_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{1 + b * per_block + per_block - 1}.0.op.{parts[-1]}"
            elif kind == "resnets":
                new = resnet(f"input_blocks.{1 + b * per_block + j}.0", rest)
            else:
                new = f"input_blocks.{1 + b * per_block + j}.1.{rest}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = resnet(f"middle_block.{2 * j}", rest) if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "upsamplers":
                has_attn = getattr(unet.up_blocks[b], "attentions", None) is not None
                new = f"output_blocks.{b * per_block + per_block - 1}.{2 if has_attn else 1}.conv.{parts[-1]}"
            elif kind == "resnets":
                new = resnet(f"output_blocks.{b * per_block + j}.0", rest)
            else:
                new = f"output_blocks.{b * per_block + j}.1.{rest}"
        else:
            raise ValueError(f"no released-layout name for UNet key {key!r}")
        out[new] = value
    out.update(scaleu.state_dict())
    return out


def build_tiny_instancediffusion(folder: Path) -> Path:
    """An SD-1.5-shaped diffusers folder of tiny random parts plus a random checkpoint in the
    released layout (``instancediffusion_sd15.pth`` with a ``model`` dict), published at
    ``folder`` on first use."""
    return publish_folder(folder, _write_tiny_instancediffusion)


def _write_tiny_instancediffusion(staging: Path) -> None:
    from picbench.tiny import sd as tiny
    from picbench.tiny.tokenizers import write_clip_tokenizer

    hidden = TINY_FUSION_DIMS["text_dim"]
    write_clip_tokenizer(staging / "tokenizer")
    tiny.tiny_clip_text_model(hidden).save_pretrained(staging / "text_encoder")
    tiny.tiny_sd_vae().save_pretrained(staging / "vae")
    tiny.sd_pndm_scheduler().save_pretrained(staging / "scheduler")
    plain = tiny.tiny_sd_unet(hidden)
    plain.save_pretrained(staging / "unet")  # the "SD 1.5" UNet: config and the SD conv_in
    torch.manual_seed(0)
    unet = gated_unet_from_config(dict(plain.config), InstanceFusion(**TINY_FUSION_DIMS))
    scaleu = ScaleU(ScaleU.join_channels(unet))
    with torch.no_grad():  # ScaleU and the fuser gates start at 0 (identity); make them count
        for p in (*scaleu.parameters(), *(p for n, p in unet.named_parameters() if n.endswith(("alpha_attn", "alpha_dense")))):
            p.normal_(std=0.5)
        for p in unet.conv_in.parameters():  # InstanceDiffusion retrains SD's first convolution
            p.add_(torch.randn_like(p), alpha=0.1)
    torch.save({"model": to_released_layout(unet, scaleu)}, staging / INSTANCEDIFFUSION_FILE)
    (staging / "README.json").write_text(json.dumps({"what": "tiny random-weight InstanceDiffusion (smoke runs only)"}))


class InstanceDiffusionMethod(Method):
    name = "instancediffusion"
    version = "3"  # 3: 8-bit image truncated as the authors' (ldm_image); 2: bare category names as instance captions
    capabilities = Capabilities(references=False, boxes=True, multi_subject=True, depth_order=False)
    default_params = {
        "checkpoint": INSTANCEDIFFUSION_CHECKPOINT,
        "base": SD15_CHECKPOINT,
        "instance_caption": AUTHORS_INSTANCE_CAPTION,
        "steps": 50,
        "guidance_scale": 7.5,
        "alpha": 1.0,  # the authors' quantitative evaluation (README: --alpha 1.0); inference.py: 0.75
        "mis": 0.36,
        "negative_prompt": AUTHORS_NEGATIVE_PROMPT,
        "resolution": 512,
    }
    checkpoints = {"instancediffusion": f"{INSTANCEDIFFUSION_CHECKPOINT}/{INSTANCEDIFFUSION_FILE}", "base": SD15_CHECKPOINT}
    param_specs = {
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "resolution": RESOLUTION,
        "alpha": Param("float", 0.0, 1.0),
        "mis": Param("float", 0.0, 1.0),
    }

    smoke_params = {"steps": 2, "resolution": 64}
    cuda_dtype = "float16"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        grounding_steps(self.params["steps"], self.params["alpha"])  # validate early
        mis_steps(self.params["steps"], self.params["mis"])

    def downloads(self) -> tuple[HubFiles, ...]:
        """The released checkpoint file and the Stable Diffusion 1.5 diffusers folder it is assembled on."""
        wanted = (hub_files(str(self.params["checkpoint"]), INSTANCEDIFFUSION_FILE), hub_files(str(self.params["base"])))
        return tuple(w for w in wanted if w is not None)

    def _load(self) -> InstanceDiffusionModel:
        if self.smoke:
            folder = build_tiny_instancediffusion(picbench_home() / "tiny" / f"instancediffusion-v{self.version}")
            base, ckpt = folder, folder / INSTANCEDIFFUSION_FILE
        else:
            ckpt = download_file(self.name, self.params["checkpoint"], INSTANCEDIFFUSION_FILE, self.weights_dir)
            base = load_pretrained(self.name, self.params["base"], self.weights_dir, _sd15_folder)
        model_sd = read_released_checkpoint(Path(ckpt))
        return assemble(base, model_sd, self.dtype).to(self.device)

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        model = self.load()
        images = []
        for sample in samples:
            call = instance_call(sample.with_fallback_layout(), self.params["instance_caption"], self.params["resolution"])
            image = model.sample(
                call,
                seed=seed,
                steps=self.params["steps"],
                guidance_scale=self.params["guidance_scale"],
                alpha=self.params["alpha"],
                mis=self.params["mis"],
                negative_prompt=self.params["negative_prompt"],
            )
            if image.size != (sample.width, sample.height):
                image = image.resize((sample.width, sample.height), Image.Resampling.LANCZOS)
            images.append(image)
        return images


def _sd15_folder(source: str) -> Path:
    """A local SD 1.5 diffusers folder: ``source`` itself, or its hub snapshot (cache first)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    wanted = [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/*",
        "scheduler/*",
    ]
    return Path(snapshot_download(source, allow_patterns=wanted))
