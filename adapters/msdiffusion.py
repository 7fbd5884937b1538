"""MS-Diffusion (Wang et al. 2024, arXiv:2406.07209) as a picbench method, built on diffusers' SDXL.

MS-Diffusion adds two things to a frozen SDXL: a *grounding resampler* (a perceiver resampler over
CLIP image features whose queries are initialised from each subject's phrase embedding and
Fourier-embedded box) and *multi-subject cross-attention* (decoupled image cross-attention in every
UNet cross-attention layer, where a latent pixel attends only to the image tokens of the subjects
whose box covers it, background pixels get no image condition).

Why diffusers and not the authors' package: MS-Diffusion/MS-Diffusion is a research repository, not
an installable package (no setup.py; requirements pin an older diffusers; the modules are imported
from the checkout). Its inference needs only a resampler module and an attention processor, which
diffusers' processor API carries cleanly, so we rebuild those two pieces here (our own code, same
parameter names) and load the released weights into them.

Deliberate differences: samples without boxes get the whole image as every subject's box (the
authors' layout-free mode, zero boxes plus pseudo masks from text attention maps, is not carried);
a subject with several references gives its first (the authors pass one image per subject); the
box grid uses rows and columns separately (the authors assume square images); the canvas is about
``resolution``^2 pixels at the sample's aspect ratio, resized to the sample's size at the end.
The resampler's and the image cross-attention's arithmetic is the authors' (explicit matmul and
softmax, as at @ 74eb2d6), so fp16 rounds as theirs does (docs/methods.md).

Released checkpoint layout (``ms_adapter.bin``, ``torch.save`` of a dict), read from the public
repository MS-Diffusion/MS-Diffusion @ 62c64eb, ``msdiffusion/models/model.py``
(``MSAdapter.load_from_checkpoint``), ``projection.py`` (``Resampler``) and
``attention_processor.py`` (``MaskedIPAttnProcessor2_0``):

- ``"image_proj"``: the resampler state dict: ``grounding_latents`` [1, Q, dim];
  ``latent_proj.{0,2}.{weight,bias}`` (Linear(G, 2G), GELU, Linear(2G, Q*dim), G = phrase dim +
  8 freqs * 2 * 4); ``latent_norm``; ``proj_in``; ``layers.{i}.0.{norm1,norm2}.{weight,bias}``,
  ``layers.{i}.0.{to_q,to_kv,to_out}.weight``; ``layers.{i}.1.0.{weight,bias}`` (LayerNorm),
  ``layers.{i}.1.{1,3}.weight``; ``attention_norm``; ``proj_out``; ``norm_out``.
- ``"ms_adapter"``: ``{i}.to_k_ip.weight`` and ``{i}.to_v_ip.weight`` where ``i`` is the index of a
  cross-attention processor in ``unet.attn_processors`` (self-attention processors hold no weights,
  so the indices are the odd numbers 1, 3, 5, ...).
- ``"dummy_image_tokens"``: [1, 4, cross_attention_dim], the background image tokens.

Inference settings follow the authors' ``inference.py`` (same commit): references resized to
512x512 then ``CLIPImageProcessor()`` (224 crop), penultimate CLIP-G hidden states, resampler
dim 1280 / depth 4 / 20 heads of 64 / 16 queries, prompt prefixed with "best quality, high
quality, ", their negative prompt, ``scale=0.6``, 30 steps, guidance 7.5 (the ``generate``
default), 1024x1024, ``torch.Generator(device).manual_seed(seed)``, fp16 on GPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from picbench.checkpoints import HubFiles, diffusers_folder, download_file, load_pretrained
from picbench.imaging import load_rgb
from picbench.methods.base import Capabilities, Method
from picbench.methods.params import GUIDANCE, RESOLUTION, STEPS, Param
from picbench.paths import picbench_home, resolve_in_root
from picbench.records import BoxXYXY, Sample
from picbench.tiny.publish import publish_folder

SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
IMAGE_ENCODER_REPO = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
ADAPTER_REPO = "doge1516/MS-Diffusion"
ADAPTER_FILE = "ms_adapter.bin"

TEXT_TOKENS = 77  # CLIP context: image tokens start after it in the joint encoder states
DUMMY_TOKENS = 4
MASK_BIAS = -10000.0  # the authors' "mask to bias" value
FULL_IMAGE_BOX: BoxXYXY = (0.0, 0.0, 1.0, 1.0)


# --------------------------------------------------------------------------- grounding resampler


@dataclass(frozen=True)
class ResamplerConfig:
    """Shape of the grounding resampler. ``released()`` is what ``inference.py`` builds; the three
    input/output widths come from the loaded encoders and UNet."""

    embedding_dim: int  # CLIP vision hidden size
    output_dim: int  # UNet cross_attention_dim
    phrase_dim: int  # text encoder projection_dim
    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    ff_mult: int = 4
    fourier_freqs: int = 8


class FourierBoxEmbedder(nn.Module):
    """sin/cos of each box coordinate at ``num_freqs`` frequencies (GLIGEN's box embedding), flattened
    frequency-major as the released weights expect: [f0 sin x0..y1, f0 cos x0..y1, f1 ...]."""

    def __init__(self, num_freqs: int, temperature: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("freqs", temperature ** (torch.arange(num_freqs) / num_freqs), persistent=False)

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        angles = boxes[:, None, :] * self.freqs.to(boxes)[None, :, None]  # [B, F, 4]
        return torch.stack((angles.sin(), angles.cos()), dim=2).flatten(1)  # [B, F*2*4]


class PerceiverAttention(nn.Module):
    """Latent queries attend over [image features, latents] (Flamingo's perceiver block), computed as
    the authors compute it (msdiffusion/models/projection.py:110-113 @ 74eb2d6): q and k each scaled by
    dim_head^-1/4, an explicit matmul, softmax in float32 cast back, so fp16 rounds as theirs does."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * heads * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features, latents = self.norm1(features), self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((features, latents), dim=1)).chunk(2, dim=-1)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = (split(q) * scale) @ (split(k) * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        return self.to_out((weight @ split(v)).transpose(1, 2).flatten(2))


class GroundingResampler(nn.Module):
    """Per subject: Q image tokens from its CLIP features, with queries initialised from its phrase
    embedding and box (or the learned ``grounding_latents`` when grounding is dropped)."""

    def __init__(self, cfg: ResamplerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        grounding_dim = cfg.phrase_dim + cfg.fourier_freqs * 2 * 4
        self.grounding_latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) / cfg.dim**0.5)
        self.fourier = FourierBoxEmbedder(cfg.fourier_freqs)
        self.latent_proj = nn.Sequential(
            nn.Linear(grounding_dim, grounding_dim * 2), nn.GELU(), nn.Linear(grounding_dim * 2, cfg.dim * cfg.num_queries)
        )
        self.latent_norm = nn.LayerNorm(cfg.dim)
        self.proj_in = nn.Linear(cfg.embedding_dim, cfg.dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads), _feed_forward(cfg.dim, cfg.ff_mult)])
            for _ in range(cfg.depth)
        )
        self.attention_norm = nn.LayerNorm(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.output_dim)
        self.norm_out = nn.LayerNorm(cfg.output_dim)

    def forward(
        self, features: torch.Tensor, boxes: torch.Tensor, phrase_embeds: torch.Tensor, drop_grounding: torch.Tensor
    ) -> torch.Tensor:
        """features [S, N, E], boxes [S, 4], phrase_embeds [S, P], drop_grounding [S] bool -> [S, Q, out]."""
        grounding = torch.cat((phrase_embeds, self.fourier(boxes)), dim=-1)
        latents = self.latent_norm(self.latent_proj(grounding).view(-1, self.cfg.num_queries, self.cfg.dim))
        latents = torch.where(drop_grounding[:, None, None], self.grounding_latents.to(latents), latents)
        x = self.proj_in(features)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(self.attention_norm(latents)))


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False))


# --------------------------------------------------------------------------- box-masked cross-attention


def box_token_masks(boxes: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """[B, K, 4] normalized xyxy -> [B, K, rows*cols] 0/1: a cell is inside when floor(x0*cols) <=
    col < ceil(x1*cols) (and likewise for rows), the authors' rounding. They assume a square grid;
    here rows and columns each use their own count, which equals theirs on square images."""
    rows, cols = grid_hw
    x0, y0, x1, y1 = boxes.unbind(-1)
    col = torch.arange(cols, device=boxes.device)
    row = torch.arange(rows, device=boxes.device)
    in_x = (col >= torch.floor(x0 * cols)[..., None]) & (col < torch.ceil(x1 * cols)[..., None])
    in_y = (row >= torch.floor(y0 * rows)[..., None]) & (row < torch.ceil(y1 * rows)[..., None])
    return (in_y[..., :, None] & in_x[..., None, :]).flatten(-2).to(boxes.dtype)


def attention_grid(num_tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) of a UNet level holding ``num_tokens`` cells: the latent halved (rounding up,
    as stride-2 convs do) until it fits."""
    rows, cols = latent_hw
    while rows * cols > num_tokens:
        rows, cols = math.ceil(rows / 2), math.ceil(cols / 2)
    if rows * cols != num_tokens:
        raise ValueError(f"cannot place {num_tokens} attention tokens on a latent of {latent_hw}")
    return rows, cols


class BoxMaskedIPAttnProcessor(nn.Module):
    """Cross-attention = text attention + ``scale`` * image attention, where the image tokens are
    [4 dummy tokens, Q tokens of subject 1, Q of subject 2, ...]: a pixel inside subject k's box sees
    subject k's tokens; a pixel outside every box sees only the dummy tokens, and its image
    attention probabilities are then zeroed. Text attention is SDPA as the authors' (attention_processor.py:314-327
    @ 74eb2d6); image attention is their explicit path (:364-382): diffusers' `get_attention_scores` with
    the -10000 bias, `torch.where` on the background rows, `bmm`, so fp16 rounds as theirs does."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.scale = scale
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)

    def image_bias(self, boxes: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive bias [B, 1, N, 4 + K*Q] and the foreground mask [B, N, 1]."""
        inside = box_token_masks(boxes, grid_hw)  # [B, K, N]
        foreground = inside.amax(dim=1) if inside.shape[1] else torch.zeros_like(inside[:, 0])  # [B, N]
        allowed = torch.cat(
            [(1 - foreground)[..., None].expand(-1, -1, DUMMY_TOKENS), inside.transpose(1, 2).repeat_interleave(self.num_tokens, dim=-1)],
            dim=-1,
        )
        return ((1 - allowed) * MASK_BIAS)[:, None], foreground[..., None]

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        latent_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is None or boxes is None or latent_hw is None:
            raise ValueError("MS-Diffusion cross-attention needs encoder states with image tokens, boxes and latent_hw")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        text_states, image_states = encoder_hidden_states[:, :TEXT_TOKENS], encoder_hidden_states[:, TEXT_TOKENS:]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, TEXT_TOKENS, batch).view(batch, attn.heads, -1, TEXT_TOKENS)
        if attn.norm_cross:
            text_states = attn.norm_encoder_hidden_states(text_states)

        split = lambda t: t.unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # noqa: E731
        merge = lambda t: t.transpose(1, 2).flatten(2)  # noqa: E731
        query_flat = attn.to_q(hidden_states)
        query = split(query_flat)
        text_out = F.scaled_dot_product_attention(
            query, split(attn.to_k(text_states)), split(attn.to_v(text_states)), attn_mask=attention_mask
        )
        bias, foreground = self.image_bias(boxes.to(query.dtype), attention_grid(hidden_states.shape[1], latent_hw))
        heads = attn.heads
        probs = attn.get_attention_scores(
            attn.head_to_batch_dim(query_flat),
            attn.head_to_batch_dim(self.to_k_ip(image_states)),
            bias[:, 0].repeat_interleave(heads, dim=0),
        )
        background = (foreground[..., 0] == 0).repeat_interleave(heads, dim=0)
        probs = torch.where(background.unsqueeze(-1), torch.zeros_like(probs), probs)
        image_out = attn.batch_to_head_dim(torch.bmm(probs, attn.head_to_batch_dim(self.to_v_ip(image_states))))
        hidden_states = merge(text_out) + self.scale * image_out

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class PlainAttnProcessor:
    """diffusers' SDPA self-attention, accepting (and ignoring) the MS-Diffusion kwargs that the UNet
    hands to every processor, so diffusers does not warn on each call."""

    def __init__(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self._inner = AttnProcessor2_0()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        latent_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        return self._inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def install_ms_processors(unet: Any, num_tokens: int) -> dict[int, BoxMaskedIPAttnProcessor]:
    """Set MS-Diffusion processors on every UNet attention; returns the cross-attention ones keyed by
    their index in ``unet.attn_processors`` (the index the released checkpoint uses)."""
    block_out = unet.config.block_out_channels
    procs: dict[str, Any] = {}
    cross: dict[int, BoxMaskedIPAttnProcessor] = {}
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            procs[name] = PlainAttnProcessor()
            continue
        if name.startswith("mid_block"):
            hidden = block_out[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(block_out))[int(name.split(".")[1])]
        else:
            hidden = block_out[int(name.split(".")[1])]
        procs[name] = cross[index] = BoxMaskedIPAttnProcessor(hidden, unet.config.cross_attention_dim, num_tokens)
    unet.set_attn_processor(procs)
    return cross


def resampler_shape(image_proj: Mapping[str, torch.Tensor], phrase_dim: int, *, source: str) -> dict[str, int]:
    """The resampler's shape read off a checkpoint's ``image_proj`` (so any released-layout file
    loads, the tiny test files included). Heads are the attention width over ``dim_head`` 64, the
    authors' value (MS-Diffusion @ 74eb2d6, ``inference.py``); the released file gives the
    defaults of :class:`ResamplerConfig` (1280 wide, depth 4, 20 heads, 16 queries, ff x4, 8 freqs)."""
    try:
        _, num_queries, dim = image_proj["grounding_latents"].shape
        inner = image_proj["layers.0.0.to_q.weight"].shape[0]
        ff = image_proj["layers.0.1.1.weight"].shape[0]
        grounding_dim = image_proj["latent_proj.0.weight"].shape[1]
    except KeyError as exc:
        raise ValueError(f"{source}: image_proj lacks {exc.args[0]!r}; not MS-Diffusion's resampler") from None
    depth = len({key.split(".")[1] for key in image_proj if key.startswith("layers.")})
    dim_head = min(64, inner)
    return {
        "dim": dim,
        "depth": depth,
        "dim_head": dim_head,
        "heads": inner // dim_head,
        "num_queries": num_queries,
        "ff_mult": ff // dim,
        "fourier_freqs": (grounding_dim - phrase_dim) // 8,
    }


def load_ms_adapter(path: Path, resampler: GroundingResampler, processors: Mapping[int, BoxMaskedIPAttnProcessor]) -> torch.Tensor:
    """Load ``ms_adapter.bin`` into the resampler and processors; returns the dummy image tokens.
    Any missing or unexpected key is an error naming the file and key."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for part in ("image_proj", "ms_adapter", "dummy_image_tokens"):
        if part not in state:
            raise ValueError(f"{path}: not an MS-Diffusion checkpoint (no {part!r} entry; found {sorted(state)})")
    result = resampler.load_state_dict(state["image_proj"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: image_proj does not match the resampler: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    adapter = dict(state["ms_adapter"])
    for index, proc in processors.items():
        for name in ("to_k_ip", "to_v_ip"):
            key = f"{index}.{name}.weight"
            if key not in adapter:
                raise ValueError(f"{path}: ms_adapter lacks {key!r} (the UNet has a cross-attention processor at index {index})")
            getattr(proc, name).weight.data.copy_(adapter.pop(key))
    if adapter:
        raise ValueError(f"{path}: ms_adapter has keys no UNet cross-attention uses: {sorted(adapter)[:5]}")
    return state["dummy_image_tokens"]


# --------------------------------------------------------------------------- sample translation


@dataclass(frozen=True)
class MSDiffusionInputs:
    """What the authors' ``generate`` receives for one sample."""

    prompt: str
    negative_prompt: str
    phrases: tuple[str, ...]
    boxes: tuple[BoxXYXY, ...]
    references: tuple[Path, ...]
    width: int  # canvas the model draws on
    height: int
    out_width: int  # size the sample asks for
    out_height: int


def native_size(width: int, height: int, resolution: int, multiple: int = 32) -> tuple[int, int]:
    """A canvas of about ``resolution``^2 pixels with the sample's aspect ratio, sides a multiple of
    ``multiple`` (SDXL's latent must halve cleanly through the UNet)."""
    aspect = width / height
    w = max(multiple, round(resolution * math.sqrt(aspect) / multiple) * multiple)
    h = max(multiple, round(resolution / math.sqrt(aspect) / multiple) * multiple)
    return w, h


def translate_sample(sample: Sample, data_root: Path, params: Mapping[str, Any]) -> MSDiffusionInputs:
    """Sample -> MS-Diffusion inputs: phrase = class word, one reference per subject (its first),
    boxes as normalized xyxy in subject order. Without a layout each subject gets the whole image as
    its box (the authors' layout-free mode needs text-attention pseudo masks, not carried here)."""
    boxes = tuple(s.box if s.box is not None else FULL_IMAGE_BOX for s in sample.subjects)
    width, height = native_size(sample.width, sample.height, int(params["resolution"]))
    return MSDiffusionInputs(
        prompt=f"{params['prompt_prefix']}{sample.prompt}",
        negative_prompt=params["negative_prompt"],
        phrases=tuple(s.class_word for s in sample.subjects),
        boxes=boxes,
        references=tuple(resolve_in_root(data_root, s.references[0]) for s in sample.subjects),
        width=width,
        height=height,
        out_width=sample.width,
        out_height=sample.height,
    )


# --------------------------------------------------------------------------- model


class MSDiffusionModel:
    """SDXL pipeline + CLIP image encoder + grounding resampler + box-masked processors."""

    def __init__(
        self,
        sdxl: str,
        image_encoder: str,
        adapter: str,
        *,
        device: str,
        dtype: torch.dtype,
        resampler: Mapping[str, int] | None = None,
        weights_dir: Path | None = None,
    ) -> None:
        """``sdxl``, ``image_encoder``: hub ids or local folders; ``adapter``: the hub repo (or local
        folder) holding ``ms_adapter.bin``, or the file itself."""
        from diffusers import StableDiffusionXLPipeline
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        name = MSDiffusionMethod.name
        adapter_file = Path(adapter) if Path(adapter).is_file() else download_file(name, adapter, ADAPTER_FILE, weights_dir)
        self.pipe = load_pretrained(
            name, sdxl, weights_dir, lambda p: StableDiffusionXLPipeline.from_pretrained(p, dtype=dtype, add_watermarker=False)
        )
        self.image_encoder = load_pretrained(
            name, image_encoder, weights_dir, lambda p: CLIPVisionModelWithProjection.from_pretrained(p, dtype=dtype)
        )
        self.image_processor = CLIPImageProcessor()  # the authors use the default, not the checkpoint's
        self.pipe.set_progress_bar_config(disable=True)
        phrase_dim = self.pipe.text_encoder.config.projection_dim
        if resampler is None:
            image_proj = torch.load(adapter_file, map_location="cpu", weights_only=True, mmap=True).get("image_proj", {})
            resampler = resampler_shape(image_proj, phrase_dim, source=str(adapter_file))
        cfg = ResamplerConfig(
            embedding_dim=self.image_encoder.config.hidden_size,
            output_dim=self.pipe.unet.config.cross_attention_dim,
            phrase_dim=phrase_dim,
            **resampler,
        )
        self.resampler = GroundingResampler(cfg)
        self.processors = install_ms_processors(self.pipe.unet, cfg.num_queries)
        self.dummy_tokens = load_ms_adapter(adapter_file, self.resampler, self.processors)
        self.device, self.dtype = device, dtype
        self.pipe.to(device)
        self.image_encoder.to(device)
        self.resampler.to(device, dtype)
        for proc in self.processors.values():
            proc.to(device, dtype)
        self.dummy_tokens = self.dummy_tokens.to(device, dtype)

    @torch.inference_mode()
    def image_tokens(self, inputs: MSDiffusionInputs, drop_grounding: bool = False) -> torch.Tensor:
        """[1, 4 + K*Q, D]: dummy tokens then each subject's resampled tokens."""
        refs = [load_rgb(p).resize((512, 512), Image.Resampling.BICUBIC) for p in inputs.references]
        pixels = self.image_processor(images=refs, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        features = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
        tok = self.pipe.tokenizer(
            list(inputs.phrases),
            max_length=self.pipe.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        phrase_embeds = self.pipe.text_encoder(tok.input_ids.to(self.device)).pooler_output
        boxes = torch.tensor(inputs.boxes, device=self.device, dtype=self.dtype)
        drop = torch.full((len(inputs.boxes),), drop_grounding, device=self.device)
        tokens = self.resampler(features, boxes, phrase_embeds.to(self.dtype), drop)
        return torch.cat([self.dummy_tokens, tokens.flatten(0, 1)[None]], dim=1)

    @torch.inference_mode()
    def generate(self, inputs: MSDiffusionInputs, *, seed: int, steps: int, guidance: float, scale: float) -> Image.Image:
        for proc in self.processors.values():
            proc.scale = scale
        image_tokens = self.image_tokens(inputs)
        cfg = guidance > 1
        prompt_embeds, negative_embeds, pooled, negative_pooled = self.pipe.encode_prompt(
            inputs.prompt,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=inputs.negative_prompt,
        )
        prompt_embeds = torch.cat([prompt_embeds, image_tokens], dim=1)
        boxes = torch.tensor([inputs.boxes], device=self.device, dtype=self.dtype)
        extra: dict[str, Any] = {}
        if cfg:
            extra = {
                "negative_prompt_embeds": torch.cat([negative_embeds, torch.zeros_like(image_tokens)], dim=1),
                "negative_pooled_prompt_embeds": negative_pooled,
            }
            boxes = torch.cat([torch.zeros_like(boxes), boxes])  # unconditional half: no subject anywhere
        scale_factor = self.pipe.vae_scale_factor
        latent_hw = (inputs.height // scale_factor, inputs.width // scale_factor)
        generator = torch.Generator(self.device).manual_seed(seed)
        image = self.pipe(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled,
            guidance_scale=guidance,
            num_inference_steps=steps,
            generator=generator,
            height=inputs.height,
            width=inputs.width,
            cross_attention_kwargs={"boxes": boxes, "latent_hw": latent_hw},
            **extra,
        ).images[0]
        if image.size != (inputs.out_width, inputs.out_height):
            image = image.resize((inputs.out_width, inputs.out_height), Image.Resampling.LANCZOS)
        return image


# --------------------------------------------------------------------------- tiny components

TINY_RESAMPLER = {"dim": 32, "depth": 1, "dim_head": 16, "heads": 2, "num_queries": 4}
TINY_VERSION = "msdiffusion-tiny-2"  # the tiny folder's name: a new version builds a new folder


def build_tiny_checkpoints(folder: Path) -> dict[str, Path]:
    """Random-weight SDXL (2-level text-time UNet, 32/64 channels), CLIP text/vision encoders and an
    ``ms_adapter.bin`` in the released layout, saved where and how the real loaders read them,
    published at ``folder`` on first use."""
    publish_folder(folder, _write_tiny_checkpoints)
    return {"sdxl": folder / "sdxl", "image_encoder": folder / "image_encoder", "adapter": folder / ADAPTER_FILE}


def _write_tiny_checkpoints(folder: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

    from picbench.tiny.tokenizers import CLIP_MAX_LENGTH, CLIP_SPECIAL_TOKENS, byte_clip_vocab, clip_tokenizer

    paths = {"sdxl": folder / "sdxl", "image_encoder": folder / "image_encoder", "adapter": folder / ADAPTER_FILE}
    vocab = byte_clip_vocab()
    text_cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=32,
        bos_token_id=vocab[CLIP_SPECIAL_TOKENS[0]],
        eos_token_id=vocab[CLIP_SPECIAL_TOKENS[1]],
        pad_token_id=vocab[CLIP_SPECIAL_TOKENS[1]],
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(  # SDXL's block pattern: plain top level, cross-attention below, text_time added conditioning
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 1),
            norm_num_groups=32,
            cross_attention_dim=64,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,
        )
        vae = AutoencoderKL(  # SDXL's 8x downsampling (four levels), narrow: real canvas sizes stay cheap
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=64,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_cfg),
            text_encoder_2=CLIPTextModelWithProjection(text_cfg),
            tokenizer=clip_tokenizer(),
            tokenizer_2=clip_tokenizer(),
            unet=unet,
            scheduler=EulerDiscreteScheduler(
                beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
            ),
        )
        pipe.save_pretrained(paths["sdxl"])
        vision = CLIPVisionModelWithProjection(
            CLIPVisionConfig(  # 224 px input: the authors' default CLIPImageProcessor
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=224,
                patch_size=32,
                projection_dim=32,
            )
        )
        vision.save_pretrained(paths["image_encoder"])
        cfg = ResamplerConfig(embedding_dim=32, output_dim=64, phrase_dim=32, **TINY_RESAMPLER)
        write_random_adapter(paths["adapter"], GroundingResampler(cfg), unet)
    (folder / "built.json").write_text(json.dumps({"version": TINY_VERSION, "resampler": asdict(cfg)}))


def write_random_adapter(path: Path, resampler: GroundingResampler, unet: Any) -> None:
    """A random ``ms_adapter.bin`` in the released layout for ``unet`` (used by tiny runs and tests).
    Installs the MS-Diffusion processors on ``unet`` to learn the indices and shapes."""
    processors = install_ms_processors(unet, resampler.cfg.num_queries)
    adapter = {f"{index}.{key}": value for index, proc in processors.items() for key, value in proc.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "image_proj": resampler.state_dict(),
            "ms_adapter": adapter,
            "dummy_image_tokens": torch.randn(1, DUMMY_TOKENS, unet.config.cross_attention_dim),
        },
        path,
    )


# --------------------------------------------------------------------------- the picbench method


class MSDiffusionMethod(Method):
    """MS-Diffusion with the authors' inference defaults; boxes drive both the grounding tokens and
    the cross-attention masks."""

    name: ClassVar[str] = "msdiffusion"
    version: ClassVar[str] = "2"  # 2: the resampler's and the image cross-attention's arithmetic as the authors' (fp16)
    capabilities: ClassVar[Capabilities] = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=False)
    default_params: ClassVar[Mapping[str, Any]] = {
        "steps": 30,
        "guidance": 7.5,
        "scale": 0.6,
        "resolution": 1024,
        "prompt_prefix": "best quality, high quality, ",
        "negative_prompt": "monochrome, lowres, bad anatomy, worst quality, low quality",
    }
    checkpoints: ClassVar[Mapping[str, str]] = {
        "sdxl": SDXL_REPO,
        "image_encoder": IMAGE_ENCODER_REPO,
        "adapter": f"{ADAPTER_REPO}/{ADAPTER_FILE}",
    }
    param_specs: ClassVar[Mapping[str, Param]] = {
        "steps": STEPS,
        "guidance": GUIDANCE,
        "resolution": RESOLUTION,
        "scale": Param("float", 0.0, 10.0),
    }

    smoke_params: ClassVar[Mapping[str, Any]] = {"steps": 2, "resolution": 64}
    cuda_dtype: ClassVar[str] = "float16"  # the authors' inference.py

    def downloads(self) -> tuple[HubFiles, ...]:
        """SDXL's diffusers folder, the CLIP-ViT-bigG image encoder (the files transformers reads) and the adapter file."""
        return (
            diffusers_folder(SDXL_REPO),
            HubFiles(IMAGE_ENCODER_REPO, ("config.json", "model*.safetensors", "model.safetensors.index.json")),  # not its open_clip copies
            HubFiles(ADAPTER_REPO, (ADAPTER_FILE,)),
        )

    def _load(self) -> MSDiffusionModel:
        if self.smoke:
            paths = build_tiny_checkpoints(picbench_home() / "tiny" / TINY_VERSION)
            return MSDiffusionModel(
                str(paths["sdxl"]),
                str(paths["image_encoder"]),
                str(paths["adapter"]),
                device=self.device,
                dtype=self.dtype,
                resampler=TINY_RESAMPLER,
            )
        return MSDiffusionModel(
            SDXL_REPO, IMAGE_ENCODER_REPO, ADAPTER_REPO, device=self.device, dtype=self.dtype, weights_dir=self.weights_dir
        )

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        inputs = [translate_sample(s, Path(data_root), self.params) for s in samples]
        model = self.load()
        p = self.params
        return [model.generate(x, seed=seed, steps=int(p["steps"]), guidance=float(p["guidance"]), scale=float(p["scale"])) for x in inputs]
