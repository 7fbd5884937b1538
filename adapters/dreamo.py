"""DreamO (Mou et al. 2025, arXiv:2504.16915) as a picbench method, on diffusers' FLUX components.

DreamO is FLUX.1-dev plus LoRAs, with each reference image VAE-encoded, packed like the target and
appended after the target tokens. Reference k gets position ids shifted diagonally past the target
and the earlier references (the same ids as UnoPE, so :func:`unope_image_ids` is reused), and every
image token gets a learned embedding added right after ``x_embedder``: target tokens
``task_embedding[1]``, reference k ``task_embedding[0] + idx_embedding[k]`` (k from 1). Only the
target's prediction is kept at each step. DreamO takes no boxes.

Why diffusers and not the authors' package: bytedance/DreamO is an application repository (a gradio
app, BEN2 and facexlib preprocessing, a monkey-patched ``FluxTransformer2DModel.forward``), not an
installable library. Its additions fit in a forward hook on ``x_embedder`` and a short sampling
loop over the same FLUX components the reference PositionIC pipeline uses
(``picbench.tiny.flux`` for tiny runs), so we carry only those.

Pinned to bytedance/DreamO @ 461e35b (``app.py``, ``dreamo_generator.py``, ``dreamo/dreamo_pipeline.py``,
``dreamo/utils.py``), hub repo ``ByteDance/DreamO``. The default is the authors' default since June 2025,
version 1.1 (``app.py:25``, ``dreamo_generator.py:43``, ``load_dreamo_model(..., version='v1.1')``
``dreamo/dreamo_pipeline.py:47``); ``version=v1`` runs version 1. Every LoRA is loaded with diffusers'
``load_lora_weights``, weighted with ``set_adapters`` and fused, in the authors' order
(``dreamo/dreamo_pipeline.py:74-117``):

- both versions: ``dreamo.safetensors``, whose ``dreamo_t5_embedding.weight`` (its last 10 rows become
  the T5 embeddings of the added tokens ``[ref#1]``..``[ref#9]``, ``[res]``), ``dreamo_task_embedding.weight``
  [2, dim] and ``dreamo_idx_embedding.weight`` [10, dim] are split off, the rest is the main LoRA
  (weight 1); ``dreamo_cfg_distill.safetensors`` (1); the FLUX-Turbo LoRA
  ``alimama-creative/FLUX.1-Turbo-Alpha`` (1), its ``.alpha`` keys, if any, applied as
  ``load_lora_weights`` applies them (scale alpha / rank);
- v1.1 (``dreamo/dreamo_pipeline.py:107-113``): ``v1.1/dreamo_sft_lora.safetensors`` (1) and
  ``v1.1/dreamo_dpo_lora.safetensors`` (1.25), handed to ``load_lora_weights`` as stored;
- v1 (``dreamo/dreamo_pipeline.py:97-106``): ``dreamo_quality_lora_pos.safetensors`` (0.15) and
  ``dreamo_quality_lora_neg.safetensors`` (-0.8).
- DreamO's own LoRA keys (main, cfg, v1 quality) are XLabs-processor names with the block index after
  an underscore: the authors' converter (``convert_flux_lora_to_diffusers``) finds ``double_blocks_<n>`` or
  ``single_blocks_<n>``, the site ``qkv_lora1|qkv_lora2|proj_lora1|proj_lora2`` (double) or
  ``qkv_lora|proj_lora`` (single), and ``down``/``up``; we match exactly those parts, rewrite the
  block index to UNO's ``double_blocks.<n>`` form and reuse the UNO converter (same sites, same
  fused-qkv split: shared ``down``, ``up`` split in three).

Inference follows the authors' app defaults with Turbo: 12 steps (``app.py:170``), guidance 4.5 for
v1.1 and 3.5 for v1 (``app.py:171``, also on the first step), no true CFG, 1024x1024, references
resized with OpenCV's INTER_AREA to an area of 512^2 with sides floored to multiples of 16
(``resize_numpy_image_area``, ``dreamo/utils.py:112-118``), scaled to [-1, 1], task "ip", seed via
``torch.Generator("cpu").manual_seed(seed)``, bf16 on GPU. What still differs from the authors'
scripts (BEN2 background removal, the reference posterior's seeded draw) is in docs/methods.md.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from picbench.checkpoints import HubFiles, diffusers_folder, download_file, load_pretrained
from picbench.errors import MissingExtraError
from picbench.imaging import load_rgb
from picbench.methods.base import Capabilities, Method
from picbench.methods.params import GUIDANCE, RESOLUTION, STEPS, Param
from picbench.paths import resolve_in_root
from picbench.records import Sample

FLUX_REPO = "black-forest-labs/FLUX.1-dev"
DREAMO_REPO = "ByteDance/DreamO"
TURBO_REPO = "alimama-creative/FLUX.1-Turbo-Alpha"
TURBO_FILE = "diffusion_pytorch_model.safetensors"
MAIN_FILE = "dreamo.safetensors"
VERSIONS = ("v1.1", "v1")
DEFAULT_VERSION = "v1.1"  # app.py:25, dreamo_generator.py:43, dreamo/dreamo_pipeline.py:47
GUIDANCE_BY_VERSION = {"v1.1": 4.5, "v1": 3.5}  # app.py:171


@dataclass(frozen=True)
class DreamOLora:
    """One LoRA the authors' ``load_dreamo_model`` fuses: adapter name, file in ByteDance/DreamO, weight,
    and whether its keys are DreamO's layout (converted as ``convert_flux_lora_to_diffusers`` does)."""

    name: str
    file: str
    weight: float
    dreamo_layout: bool = True


BASE_LORAS = (DreamOLora("dreamo", MAIN_FILE, 1.0), DreamOLora("cfg", "dreamo_cfg_distill.safetensors", 1.0))
# fused after the Turbo LoRA, per version (dreamo/dreamo_pipeline.py:97-113)
VERSION_LORAS = {
    "v1.1": (
        DreamOLora("sft_lora", "v1.1/dreamo_sft_lora.safetensors", 1.0, dreamo_layout=False),
        DreamOLora("dpo_lora", "v1.1/dreamo_dpo_lora.safetensors", 1.25, dreamo_layout=False),
    ),
    "v1": (
        DreamOLora("quality_pos", "dreamo_quality_lora_pos.safetensors", 0.15),
        DreamOLora("quality_neg", "dreamo_quality_lora_neg.safetensors", -0.8),
    ),
}
TURBO_WEIGHT = 1.0
T5_NEW_TOKENS = tuple(f"[ref#{i}]" for i in range(1, 10)) + ("[res]",)
TARGET_TASK, IP_TASK = 1, 0  # rows of the task embedding (the authors map every reference task to row 0)
MAX_REFERENCES = 9  # idx_embedding has 10 rows and references count from 1
PATCH = 16  # pixels per FLUX token (8x VAE, 2x2 packing)

_DREAMO_KEY = re.compile(r"(?P<kind>double|single)_blocks_(?P<n>\d+).*?(?P<site>qkv_lora[12]?|proj_lora[12]?)\.?(?P<dir>down|up)")
_EMBEDDING_KEYS = ("dreamo_t5_embedding.weight", "dreamo_task_embedding.weight", "dreamo_idx_embedding.weight")


# --------------------------------------------------------------------------- checkpoint layout


def split_dreamo_lora(
    state_dict: Mapping[str, torch.Tensor], *, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """DreamO LoRA keys -> (UNO-named ``double_blocks.N.processor.<site>.<down|up>.weight`` part,
    keys already in diffusers' ``transformer.*.lora_A/B.weight`` form, ignored key names).

    Accepts what the authors' ``convert_flux_lora_to_diffusers`` (bytedance/DreamO @ 461e35b,
    dreamo/utils.py) accepts: block keys of a known site are converted; a key holding "embedding"
    is skipped; any other key is passed to diffusers' loader unchanged, which loads the
    ``transformer.`` ones and drops the rest. A block key of no known site is an error naming it
    (upstream would hand diffusers a key of no module)."""
    blocks: dict[str, torch.Tensor] = {}
    passed: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state_dict.items():
        m = _DREAMO_KEY.search(key)
        if "embedding" in key:
            ignored.append(key)
        elif m is not None and (m["kind"] == "double") == m["site"][-1].isdigit():
            blocks[f"{m['kind']}_blocks.{m['n']}.processor.{m['site']}.{m['dir']}.weight"] = tensor
        elif re.search(r"(double|single)_blocks_\d+", key):
            raise ValueError(f"{source}: key {key!r} is not in DreamO's LoRA layout (double_blocks_<n> ... qkv_lora1 ... down, ...)")
        elif key.startswith("transformer.") and key.endswith((".lora_A.weight", ".lora_B.weight")):
            passed[key] = tensor
        else:
            ignored.append(key)
    return blocks, passed, ignored


def dreamo_lora_to_diffusers(state_dict: Mapping[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """The diffusers-format LoRA; every key the authors' loader would ignore is named in a warning."""
    from picbench.reference_impl.lora import convert_uno_lora

    blocks, passed, ignored = split_dreamo_lora(state_dict, source=source)
    if ignored:
        warnings.warn(f"{source}: ignored {len(ignored)} key(s), as DreamO's loader does: {', '.join(ignored)}", stacklevel=2)
    if not blocks and not passed:
        raise ValueError(f"{source}: no LoRA weights in DreamO's layout")
    return {**(convert_uno_lora(blocks, source=source) if blocks else {}), **passed}


@dataclass
class DreamOEmbeddings:
    """The learned embeddings ``dreamo.safetensors`` carries beside its LoRA."""

    t5_tokens: torch.Tensor  # [10, d_t5]: rows of the added T5 tokens
    task: torch.Tensor  # [2, dim]
    index: torch.Tensor  # [10, dim]


def split_main_checkpoint(state_dict: dict[str, torch.Tensor], *, source: str) -> tuple[DreamOEmbeddings, dict[str, torch.Tensor]]:
    """``dreamo.safetensors`` -> (embeddings, LoRA part). A missing embedding names file and key."""
    for key in _EMBEDDING_KEYS:
        if key not in state_dict:
            raise ValueError(f"{source}: missing {key!r}; is this DreamO's dreamo.safetensors?")
    rest = dict(state_dict)
    t5, task, index = (rest.pop(k) for k in _EMBEDDING_KEYS)
    return DreamOEmbeddings(t5[-len(T5_NEW_TOKENS) :], task, index), rest


def add_t5_tokens(tokenizer: Any, text_encoder: Any, rows: torch.Tensor) -> None:
    """Add ``[ref#1]``..``[ref#9]``, ``[res]`` to T5's vocabulary with DreamO's embeddings."""
    tokenizer.add_tokens(list(T5_NEW_TOKENS), special_tokens=False)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows overwritten below
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[-len(T5_NEW_TOKENS) :] = rows.to(weight)


def fuse_loras(pipe: Any, loras: Sequence[tuple[str, dict[str, torch.Tensor], float]]) -> None:
    """The authors' ``load_dreamo_model`` (dreamo/dreamo_pipeline.py:74-117): each LoRA through
    diffusers' ``load_lora_weights`` (which applies ``.alpha`` keys as alpha / rank), then
    ``set_adapters`` with the weights, ``fuse_lora`` and ``unload_lora_weights``."""
    with warnings.catch_warnings():  # peft warns on every adapter after the first; several is the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for name, state, _ in loras:
            pipe.load_lora_weights(dict(state), adapter_name=name)
    names = [name for name, _, _ in loras]
    pipe.set_adapters(names, [weight for _, _, weight in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()


# --------------------------------------------------------------------------- sample translation


def area_resize(image: Image.Image, area: int) -> Image.Image:
    """Scale to about ``area`` pixels keeping the aspect, each side floored to a multiple of 16, with
    OpenCV's INTER_AREA: the authors' ``resize_numpy_image_area`` (dreamo/utils.py:112-118). PIL's BOX
    filter differs at non-integer scales (up to 109/255 on the shared data's references)."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingExtraError("DreamO's reference resizing (OpenCV INTER_AREA)", "generate", exc) from exc

    w, h = image.size
    k = math.sqrt(area / (h * w))
    new_w, new_h = int(w * k) - int(w * k) % PATCH, int(h * k) - int(h * k) % PATCH
    if new_w < PATCH or new_h < PATCH:
        raise ValueError(f"reference of {w}x{h} is too thin for DreamO at area {area}")
    return Image.fromarray(cv2.resize(np.asarray(image), (new_w, new_h), interpolation=cv2.INTER_AREA))


def reference_tensor(image: Image.Image) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1]."""
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array * 2 - 1)[None]


@dataclass(frozen=True)
class DreamOInputs:
    prompt: str
    references: tuple[Path, ...]  # in order: reference k gets index embedding k + 1
    width: int  # canvas the model draws on (multiple of 16)
    height: int
    out_width: int
    out_height: int


def native_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """About ``resolution``^2 pixels with the sample's aspect, sides multiples of 16."""
    aspect = width / height
    return (
        max(PATCH, round(resolution * math.sqrt(aspect) / PATCH) * PATCH),
        max(PATCH, round(resolution / math.sqrt(aspect) / PATCH) * PATCH),
    )


def translate_sample(sample: Sample, data_root: Path, params: Mapping[str, Any]) -> DreamOInputs:
    """Sample -> DreamO inputs: the prompt unchanged, every subject's references in order as "ip"
    conditions (the demo takes one image per subject), boxes and depth ignored."""
    refs = tuple(resolve_in_root(data_root, r) for s in sample.subjects for r in s.references)
    if len(refs) > MAX_REFERENCES:
        raise ValueError(f"sample {sample.id!r}: DreamO takes at most {MAX_REFERENCES} references, got {len(refs)}")
    width, height = native_size(sample.width, sample.height, int(params["resolution"]))
    return DreamOInputs(sample.prompt, refs, width, height, sample.width, sample.height)


# --------------------------------------------------------------------------- model


class DreamOModel:
    """FLUX components with DreamO's LoRAs fused, its T5 tokens added and its embeddings hooked."""

    def __init__(
        self,
        pipe: Any,
        embeddings: DreamOEmbeddings,
        loras: Sequence[tuple[str, dict[str, torch.Tensor], float]],
        *,
        device: str,
        dtype: torch.dtype,
    ) -> None:
        self.pipe = pipe
        add_t5_tokens(pipe.tokenizer_2, pipe.text_encoder_2, embeddings.t5_tokens)
        fuse_loras(pipe, loras)
        pipe.to(device)  # already in dtype: loaded so (real) or built in float32 (tiny)
        pipe.set_progress_bar_config(disable=True)
        self.task = embeddings.task.to(device, dtype)
        self.index = embeddings.index.to(device, dtype)
        self.device, self.dtype = device, dtype
        self._token_embeddings: torch.Tensor | None = None
        pipe.transformer.x_embedder.register_forward_hook(self._add_token_embeddings)

    def _add_token_embeddings(self, module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        """DreamO adds the task/index embeddings right after the patch embedding."""
        return output if self._token_embeddings is None else output + self._token_embeddings

    def token_embeddings(self, target_tokens: int, ref_tokens: Sequence[int]) -> torch.Tensor:
        parts = [self.task[TARGET_TASK].expand(target_tokens, -1)]
        parts += [(self.task[IP_TASK] + self.index[k + 1]).expand(n, -1) for k, n in enumerate(ref_tokens)]
        return torch.cat(parts)[None]

    @torch.inference_mode()
    def generate(self, inputs: DreamOInputs, *, seed: int, steps: int, guidance: float, ref_area: int) -> Image.Image:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        from picbench.reference_impl.unope import unope_image_ids

        pipe, device = self.pipe, self.device
        max_len = min(512, pipe.tokenizer_2.model_max_length)
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(inputs.prompt, prompt_2=None, device=device, max_sequence_length=max_len)
        channels = pipe.transformer.config.in_channels // 4
        generator = torch.Generator("cpu").manual_seed(seed)
        latents, _ = pipe.prepare_latents(1, channels, inputs.height, inputs.width, prompt_embeds.dtype, device, generator)
        target_hw = (inputs.height // PATCH, inputs.width // PATCH)

        ref_latents, ref_hws = [], []
        for path in inputs.references:  # encoded after the noise is drawn, from the same generator, as the authors order it
            pixels = reference_tensor(area_resize(load_rgb(path), ref_area)).to(device, self.dtype)
            latent = pipe.vae.encode(pixels).latent_dist.sample(generator)
            latent = (latent - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
            h, w = latent.shape[-2:]
            ref_latents.append(pipe._pack_latents(latent, 1, channels, h, w))
            ref_hws.append((h // 2, w // 2))
        img_ids = unope_image_ids(target_hw, ref_hws, device=device, dtype=prompt_embeds.dtype)
        self._token_embeddings = self.token_embeddings(latents.shape[1], [r.shape[1] for r in ref_latents])

        sigmas = np.linspace(1.0, 1 / steps, steps)
        cfg = pipe.scheduler.config
        mu = calculate_shift(
            latents.shape[1],
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, device, sigmas=sigmas, mu=mu)
        guidance_vec = torch.full([1], guidance, device=device, dtype=torch.float32) if pipe.transformer.config.guidance_embeds else None
        try:
            for t in timesteps:
                noise = pipe.transformer(
                    hidden_states=torch.cat([latents, *ref_latents], dim=1),
                    timestep=t.expand(1).to(latents.dtype) / 1000,
                    guidance=guidance_vec,
                    pooled_projections=pooled,
                    encoder_hidden_states=prompt_embeds,
                    txt_ids=text_ids,
                    img_ids=img_ids,
                    return_dict=False,
                )[0][:, : latents.shape[1]]
                latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
        finally:
            self._token_embeddings = None
        latents = pipe._unpack_latents(latents, inputs.height, inputs.width, pipe.vae_scale_factor)
        latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        image = pipe.image_processor.postprocess(pipe.vae.decode(latents, return_dict=False)[0], output_type="pil")[0]
        if image.size != (inputs.out_width, inputs.out_height):
            image = image.resize((inputs.out_width, inputs.out_height), Image.Resampling.LANCZOS)
        return image


# --------------------------------------------------------------------------- tiny checkpoints


def random_dreamo_lora(transformer: Any, *, rank: int = 4, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """A random LoRA in DreamO's key layout for ``transformer`` (tests and tiny runs)."""
    from picbench.reference_impl.lora import random_uno_lora

    uno = random_uno_lora(transformer, rank=rank, seed=seed, std=std)
    return {re.sub(r"^(double|single)_blocks\.(\d+)", r"\1_blocks_\2", k): v for k, v in uno.items()}


def random_main_checkpoint(transformer: Any, t5_dim: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ``dreamo.safetensors``: the three embeddings plus the main LoRA."""
    g = torch.Generator().manual_seed(seed)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    return {
        "dreamo_t5_embedding.weight": torch.randn(len(T5_NEW_TOKENS), t5_dim, generator=g) * 0.02,
        "dreamo_task_embedding.weight": torch.randn(2, dim, generator=g) * 0.02,
        "dreamo_idx_embedding.weight": torch.randn(10, dim, generator=g) * 0.02,
        **random_dreamo_lora(transformer, seed=seed + 1),
    }


def random_turbo_lora(transformer: Any, *, rank: int = 4, seed: int = 0, alpha: float | None = None) -> dict[str, torch.Tensor]:
    """A random diffusers-format LoRA on every attention projection, like FLUX.1-Turbo-Alpha's; with
    ``alpha``, each module also gets a ``.alpha`` key (scale alpha / rank when loaded)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and re.search(r"attn\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)$", name):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.02
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.02
            if alpha is not None:
                state[f"transformer.{name}.alpha"] = torch.tensor(float(alpha))
    return state


def write_tiny_checkpoints(folder: Path, transformer: Any, t5_dim: int) -> Path:
    """DreamO's files of both versions and a Turbo LoRA (with ``.alpha`` keys), random, under ``folder``:
    DreamO's own in its key layout, v1.1's SFT/DPO LoRAs in diffusers' layout (their real layout is
    whatever ``load_lora_weights`` reads: the authors hand them over unconverted)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(random_main_checkpoint(transformer, t5_dim), str(folder / MAIN_FILE))
    loras = [*BASE_LORAS[1:], *VERSION_LORAS["v1"], *VERSION_LORAS["v1.1"]]
    for i, lora in enumerate(loras, start=2):
        (folder / lora.file).parent.mkdir(parents=True, exist_ok=True)
        state = random_dreamo_lora(transformer, seed=i) if lora.dreamo_layout else random_turbo_lora(transformer, seed=i)
        save_file(state, str(folder / lora.file))
    save_file(random_turbo_lora(transformer, alpha=2.0), str(folder / TURBO_FILE))
    return folder


# --------------------------------------------------------------------------- the picbench method


class DreamOMethod(Method):
    """DreamO with Turbo, the authors' app defaults; version 1.1 unless ``version=v1``. References in, no layout."""

    name: ClassVar[str] = "dreamo"
    version: ClassVar[str] = "2"  # 2: v1.1 by default, INTER_AREA references, Turbo alphas applied; 1: v1, PIL BOX
    capabilities: ClassVar[Capabilities] = Capabilities(references=True, boxes=False, multi_subject=True, depth_order=False)
    default_params: ClassVar[Mapping[str, Any]] = {
        "version": DEFAULT_VERSION,
        "steps": 12,
        "guidance": GUIDANCE_BY_VERSION[DEFAULT_VERSION],
        "ref_res": 512,
        "resolution": 1024,
        "turbo": True,
    }
    checkpoints: ClassVar[Mapping[str, str]] = {"flux": FLUX_REPO, "dreamo": DREAMO_REPO, "turbo": f"{TURBO_REPO}/{TURBO_FILE}"}
    param_specs: ClassVar[Mapping[str, Param]] = {
        "version": Param("str", choices=VERSIONS),
        "steps": STEPS,
        "guidance": GUIDANCE,
        "ref_res": RESOLUTION,
        "resolution": RESOLUTION,
    }

    smoke_params: ClassVar[Mapping[str, Any]] = {"steps": 2, "resolution": 64, "ref_res": 64}
    cuda_dtype: ClassVar[str] = "bfloat16"  # the authors' app

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        version = str(self.params["version"])
        if "guidance" not in (kwargs.get("params") or {}):
            self.params["guidance"] = GUIDANCE_BY_VERSION[version]  # the authors' default of this version
        fused = ", ".join(f"{lora.file} x{lora.weight:g}" for lora in (*BASE_LORAS, *VERSION_LORAS[version]))
        self.checkpoints = {
            "flux": FLUX_REPO,
            "dreamo": f"{DREAMO_REPO} {version} ({fused})",
            **({"turbo": f"{TURBO_REPO}/{TURBO_FILE}"} if self.params["turbo"] else {}),
        }

    def _loras(self) -> tuple[DreamOLora, ...]:
        return (*BASE_LORAS, *VERSION_LORAS[str(self.params["version"])])

    def _files(self, folder: Path | None) -> tuple[dict[str, Path], Path | None]:
        """DreamO's files (local folder for tiny runs, else weights_dir or the hub) and the Turbo LoRA."""
        if folder is not None:
            return {lora.file: folder / lora.file for lora in self._loras()}, folder / TURBO_FILE if self.params["turbo"] else None
        files = {lora.file: download_file(self.name, DREAMO_REPO, lora.file, self.weights_dir) for lora in self._loras()}
        turbo = download_file(self.name, TURBO_REPO, TURBO_FILE, self.weights_dir) if self.params["turbo"] else None
        return files, turbo

    def downloads(self) -> tuple[HubFiles, ...]:
        """FLUX.1-dev's diffusers folder, DreamO's LoRA files of this version and, with turbo, the Turbo LoRA."""
        turbo = (HubFiles(TURBO_REPO, (TURBO_FILE,)),) if self.params["turbo"] else ()
        return (diffusers_folder(FLUX_REPO), HubFiles(DREAMO_REPO, tuple(lora.file for lora in self._loras())), *turbo)

    def _load(self) -> DreamOModel:
        from diffusers import FluxPipeline
        from safetensors.torch import load_file

        dtype = self.dtype
        if self.smoke:
            from picbench.paths import picbench_home
            from picbench.tiny.flux import tiny_components

            pipe = FluxPipeline(**tiny_components(seed=0))
            from picbench.tiny.publish import publish_folder

            folder = publish_folder(
                picbench_home() / "tiny" / "dreamo-2",
                lambda staging: write_tiny_checkpoints(staging, pipe.transformer, pipe.text_encoder_2.config.d_model),
            )
            files, turbo = self._files(folder)
        else:
            files, turbo = self._files(None)
            pipe = load_pretrained(self.name, FLUX_REPO, self.weights_dir, lambda p: FluxPipeline.from_pretrained(p, dtype=dtype))
        embeddings, main_lora = split_main_checkpoint(load_file(str(files[MAIN_FILE])), source=str(files[MAIN_FILE]))
        loras = []
        for lora in self._loras():
            state = main_lora if lora.file == MAIN_FILE else load_file(str(files[lora.file]))
            loras.append(
                (lora.name, dreamo_lora_to_diffusers(state, source=str(files[lora.file])) if lora.dreamo_layout else state, lora.weight)
            )
        if turbo is not None:  # after dreamo and cfg, before the version's LoRAs (dreamo/dreamo_pipeline.py:86-95)
            loras.insert(len(BASE_LORAS), ("turbo", load_file(str(turbo)), TURBO_WEIGHT))
        return DreamOModel(pipe, embeddings, loras, device=self.device, dtype=dtype)

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        inputs = [translate_sample(s, Path(data_root), self.params) for s in samples]
        model = self.load()
        p = self.params
        return [
            model.generate(x, seed=seed, steps=int(p["steps"]), guidance=float(p["guidance"]), ref_area=int(p["ref_res"]) ** 2)
            for x in inputs
        ]
