"""picbench's side of the FLUX parity tests (``uno``, ``positionic``): the authors' tiny files turned
into the ``--weights-dir`` layout a user would download, and a method run through its public
``generate`` with every stage captured by hooks (nothing in picbench is changed for the test)."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from picbench.records import Sample

TINY_FLUX = {
    "in_channels": 64,  # 16 latent channels x 2 x 2: UNO's get_noise hard-codes 16 channels
    "vec_in_dim": 32,  # the tiny CLIP's width (picbench.tiny.flux)
    "context_in_dim": 32,  # the tiny T5's width
    "hidden_size": 32,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 2,
    "depth_single_blocks": 2,
    "axes_dim": [4, 6, 6],
    "theta": 10_000,
    "qkv_bias": True,
    "guidance_embed": True,
}
"""BFL's FluxParams at tiny size (FLUX.1-dev: hidden 3072, 24 heads, 19 + 38 blocks, axes 16/56/56)."""

TINY_AE = {
    "resolution": 64,
    "in_channels": 3,
    "ch": 32,  # BFL's GroupNorm has 32 groups: the narrowest width it allows
    "out_ch": 3,
    "ch_mult": [1, 1, 2, 2],
    "num_res_blocks": 1,
    "z_channels": 16,
    "scale_factor": 0.3611,
    "shift_factor": 0.1159,
}
"""BFL's AutoEncoderParams at tiny size (FLUX.1-dev: ch 128, ch_mult 1/2/4/4, 2 res blocks)."""

LORA_RANK = 4
"""The tiny LoRA's rank (UNO's release: 512)."""
DOG, CAT, BACKPACK = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/cat/00.jpg", "dreambench/dataset/backpack/00.jpg"
SEED, STEPS, SIZE = 3407, 3, 64

STAGES = (
    "img_ids",
    "txt_ids",
    "noise",
    "ref_pixels",
    "ref_tokens",
    "guidance",
    "timesteps",
    "step_inputs",
    "predictions",
    "latents",
    "decoded",
    "image",
)
"""The stages both sides record, in pipeline order (the first one over tolerance is named)."""

POSTERIOR_DRAW_SITES = ("diffusers.models.autoencoders.vae", "picbench.reference_impl.conditioning")
"""Modules whose ``randn_tensor`` draws a reference's VAE posterior noise (diffusers' own sampler,
picbench's UNO-style sample): recorded there and handed to the authors' side."""

LATENT_STAGES = ("noise", "ref_tokens", "step_inputs", "predictions", "latents", "decoded")


def parity_tolerance(final_latents: torch.Tensor, exact: bool, image_levels: float = 0.0) -> dict[str, float]:
    """Per stage. ``exact`` (bf16): every stage bit for bit, the reference encoding and the decoder's
    output (``decoded``) included (picbench's VAE computes as BFL's, ``reference_impl/bfl_vae.py``), the
    8-bit image within ``image_levels`` grey levels (0 for ``uno``, which converts as UNO). fp32:
    latent-space stages and the decoder's output within 1e-4 of the largest final latent, pixels, times
    and guidance to fp32 round-off, ids exactly, the image within one level (fp32 round-off in the
    transformer can cross a truncation)."""
    if exact:
        return {**dict.fromkeys(STAGES, 0.0), "image": image_levels}
    latent = 1e-4 * float(final_latents.double().abs().max())
    return {
        **dict.fromkeys(STAGES, 1e-6),
        **dict.fromkeys(LATENT_STAGES, latent),
        "img_ids": 0.0,
        "txt_ids": 0.0,
        "image": 1.0,
    }


def weights_dir(authors: Path, root: Path, *, lora_file: str = "dit_lora.safetensors") -> Path:
    """``root`` laid out as --weights-dir expects (DIR/black-forest-labs/FLUX.1-dev as diffusers
    converts the released ``flux1-dev.safetensors`` and ``ae.safetensors``; DIR/bytedance-research/UNO/
    dit_lora.safetensors as released), built from the authors' tiny files in ``authors``."""
    from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel

    from picbench.tiny.flux import tiny_components

    heads = TINY_FLUX["num_heads"]
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=TINY_FLUX["in_channels"],
        num_layers=TINY_FLUX["depth"],
        num_single_layers=TINY_FLUX["depth_single_blocks"],
        attention_head_dim=TINY_FLUX["hidden_size"] // heads,
        num_attention_heads=heads,
        joint_attention_dim=TINY_FLUX["context_in_dim"],
        pooled_projection_dim=TINY_FLUX["vec_in_dim"],
        guidance_embeds=True,
        axes_dims_rope=tuple(TINY_FLUX["axes_dim"]),
    )
    transformer.load_state_dict(_converted_flux(load_file(str(authors / "flux1-dev.safetensors"))), strict=True)
    ch = TINY_AE["ch"]
    configs = root / "configs"
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(TINY_AE["ch_mult"]),
        up_block_types=("UpDecoderBlock2D",) * len(TINY_AE["ch_mult"]),
        block_out_channels=tuple(ch * m for m in TINY_AE["ch_mult"]),
        layers_per_block=TINY_AE["num_res_blocks"],
        latent_channels=TINY_AE["z_channels"],
        norm_num_groups=32,
        sample_size=TINY_AE["resolution"],
        scaling_factor=TINY_AE["scale_factor"],
        shift_factor=TINY_AE["shift_factor"],
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).save_config(configs / "vae")
    vae = AutoencoderKL.from_single_file(str(authors / "ae.safetensors"), config=str(configs), subfolder="vae")
    parts = tiny_components(seed=0)
    parts.update(transformer=transformer.to(torch.float32), vae=vae.to(torch.float32))
    out = root / "weights"
    FluxPipeline(**parts).save_pretrained(out / "black-forest-labs" / "FLUX.1-dev")
    (out / "bytedance-research" / "UNO").mkdir(parents=True)
    shutil.copy(authors / lora_file, out / "bytedance-research" / "UNO" / "dit_lora.safetensors")
    return out


def _converted_flux(checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BFL's FLUX keys -> diffusers', by diffusers' own conversion (what made FLUX.1-dev's diffusers
    folder from ``flux1-dev.safetensors``). It hard-codes FLUX.1-dev's width for one split (the
    single blocks' fused q, k, v, mlp: 3072 x 3 + 12288 rows); at the tiny width the same split
    is made at that width (a runtime patch of that one call, for tiny models only)."""
    import diffusers.loaders.single_file_utils as single_file

    width = TINY_FLUX["hidden_size"]

    class TinySplit:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

        @staticmethod
        def split(tensor: torch.Tensor, sizes: Any, dim: int = 0) -> Any:
            if tuple(sizes) == (3072, 3072, 3072, 12288):
                sizes = (width, width, width, int(width * TINY_FLUX["mlp_ratio"]))
            return torch.split(tensor, sizes, dim=dim)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(single_file, "torch", TinySplit())
        converted = single_file.convert_flux_transformer_checkpoint_to_diffusers(dict(checkpoint))
    return converted


def method_in(cls: type, dtype: torch.dtype) -> type:
    """``cls`` running in ``dtype`` on the CPU (picbench runs half precision only on CUDA; the
    comparison needs the authors' GPU dtype here): only the ``dtype`` property is overridden."""
    return type(f"{cls.__name__}In{str(dtype).removeprefix('torch.')}", (cls,), {"dtype": dtype})


def run_picbench(method: Any, sample: Sample, seed: int, data_root: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(stages, inputs for the authors' side): one ``method.generate`` with the transformer's calls,
    the reference posterior's draws and the final latents recorded."""
    import diffusers.models.autoencoders.vae as diffusers_vae

    pipe = method.load()
    steps: dict[str, list[torch.Tensor]] = {"timesteps": [], "step_inputs": [], "predictions": []}
    seen: dict[str, torch.Tensor] = {}
    n_target = (sample.width // 16) * (sample.height // 16)

    def step_hook(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        hidden = kwargs["hidden_states"]
        if not steps["timesteps"]:
            seen.update(
                noise=hidden[:, :n_target],
                ref_tokens=hidden[:, n_target:],
                img_ids=kwargs["img_ids"],
                txt_ids=kwargs["txt_ids"],
                guidance=kwargs["guidance"],
                txt=kwargs["encoder_hidden_states"],
                vec=kwargs["pooled_projections"],
                attention_kwargs=torch.tensor(len(kwargs.get("joint_attention_kwargs") or {})),
            )
        steps["timesteps"].append(kwargs["timestep"])
        steps["step_inputs"].append(hidden[:, :n_target])
        steps["predictions"].append(output[0][:, :n_target])

    draws: list[torch.Tensor] = []
    randn = diffusers_vae.randn_tensor

    def recorded_randn(*args: Any, **kwargs: Any) -> torch.Tensor:
        draws.append(randn(*args, **kwargs))
        return draws[-1]

    pixels: list[torch.Tensor] = []
    encode: Callable[..., Any] = pipe.vae.encode

    def encode_recorded(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        pixels.append(x.flatten())
        return encode(x, *args, **kwargs)

    decode: Callable[..., Any] = pipe.vae.decode

    def decode_recorded(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = decode(z, *args, **kwargs)
        seen["decoded"] = out[0]
        return out

    unpack: Callable[..., torch.Tensor] = pipe._unpack_latents

    def unpack_recorded(latents: torch.Tensor, *args: Any) -> torch.Tensor:
        seen["latents"] = latents
        return unpack(latents, *args)

    handle = pipe.transformer.register_forward_hook(step_hook, with_kwargs=True)
    with pytest.MonkeyPatch.context() as patch:
        for module in POSTERIOR_DRAW_SITES:  # where a reference's posterior noise is drawn
            patch.setattr(importlib.import_module(module), "randn_tensor", recorded_randn)
        patch.setattr(pipe, "_unpack_latents", unpack_recorded)
        patch.setattr(pipe.vae, "encode", encode_recorded)
        patch.setattr(pipe.vae, "decode", decode_recorded)
        image = method.generate([sample], seed, data_root)[0]
    handle.remove()
    import numpy as np

    ours = {k: v for k, v in seen.items() if k not in ("txt", "vec")}  # attention_kwargs: how many the transformer got (VAA: 1)
    ours.update({k: torch.stack(v) for k, v in steps.items()})
    ours["ref_pixels"] = torch.cat(pixels)
    ours["image"] = torch.from_numpy(np.asarray(image).copy())
    if len(draws) != len(sample.subjects):
        raise AssertionError(f"picbench drew {len(draws)} posterior samples for {len(sample.subjects)} references (UNO samples each once)")
    return ours, {"txt": seen["txt"], "vec": seen["vec"]} | {f"ref_eps.{i}": e for i, e in enumerate(draws)}


def uno_sample(n_refs: int, *, full_box: bool = False) -> Sample:
    """A sample with ``n_refs`` DreamBench references (plain RGB photos); ``full_box``: each subject boxed to the whole image."""
    from picbench.records import Subject

    refs = (DOG, CAT, BACKPACK)[:n_refs]
    box = (0.0, 0.0, 1.0, 1.0) if full_box else None
    subjects = tuple(Subject(Path(r).parent.name, Path(r).parent.name, (r,), box=box, depth=0 if full_box else None) for r in refs)
    return Sample(f"parity{n_refs}", "a dog, a cat and a backpack on the grass", SIZE, SIZE, "single" if n_refs == 1 else "multi", subjects)


def compare_with_uno(
    method_cls: type,
    params: dict[str, Any],
    sample: Sample,
    files: Path,
    work: Path,
    data_dir: Path,
    dtype: torch.dtype,
    lora_dtype: torch.dtype,
    image_levels: float = 0.0,
) -> tuple[list[Any], dict[str, torch.Tensor]]:
    """Run ``method_cls`` (loaded from the --weights-dir made of ``files``) and UNO's UNOPipeline on
    ``sample``: the per-stage differences, in pipeline order, and picbench's stages. ``image_levels``:
    the 8-bit image's tolerance in bf16 (a method that rounds where UNO truncates: 1)."""
    from parity_harness import compare_stages, run_side

    suffix = ".bf16" if lora_dtype == torch.bfloat16 else ""
    weights = weights_dir(files, work / "picbench", lora_file=f"dit_lora{suffix}.safetensors")
    method = method_in(method_cls, dtype)(weights_dir=weights, params={"steps": STEPS, **params})
    ours, inputs = run_picbench(method, sample, SEED, data_dir)
    settings = {
        "mode": "run",
        "weights": str(files),
        "flux_file": "flux1-dev.bf16.safetensors" if dtype == torch.bfloat16 else "flux1-dev.safetensors",
        "lora_file": f"dit_lora{suffix}.safetensors",
        "flux": TINY_FLUX,
        "ae": TINY_AE,
        "lora_rank": LORA_RANK,
        "dtype": str(dtype).removeprefix("torch."),
        "prompt": sample.prompt,
        "width": sample.width,
        "height": sample.height,
        "guidance": float(method.params["guidance"]),
        "steps": STEPS,
        "seed": SEED,
        "refs": [str(data_dir / s.references[0]) for s in sample.subjects],
    }
    theirs = run_side("UNO", "uno_side.py", work / "uno_run", settings, inputs)
    tolerance = parity_tolerance(theirs["latents"], dtype != torch.float32, image_levels)
    return compare_stages(ours, theirs, [s for s in STAGES if s in ours or s in theirs], tolerance), ours


def mode_name(dtype: torch.dtype, lora_dtype: torch.dtype, n_refs: int) -> str:
    return f"{str(dtype).removeprefix('torch.')}, LoRA file {str(lora_dtype).removeprefix('torch.')}, {n_refs} reference(s)"
