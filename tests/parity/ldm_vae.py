"""The LDM-based methods' autoencoder on both sides: the authors decode with their LDM
``AutoencoderKL`` (built at tiny size by their code, saved in their container's ``autoencoder``),
picbench with diffusers' conversion of it (``convert_ldm_vae_checkpoint``, as SD 1.5's diffusers
folder was made from its LDM file), so the 8-bit images can be compared too."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

TINY_DDCONFIG = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 64}
"""The authors' ddconfig at picbench's tiny SD VAE shape (``tiny_sd_vae``: 32/64 channels, one layer; released 128 x 1/2/4/4, two)."""

IMAGE_STAGES = ("image", "image_mean")
IMAGE_TOLERANCE = {"image": 1.0, "image_mean": 0.02}
"""8 bits: a pixel may sit on a truncation step (fp32 round-off of the decoders), the mean may not
move (rounding instead of truncating moves it by about half a grey level)."""


def sd_folder_with_authors_vae(base: Path, ldm_vae: Mapping[str, torch.Tensor], out: Path) -> Path:
    """``out``: the SD 1.x diffusers folder ``base`` with its VAE replaced by the conversion of the authors' one."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    out.mkdir(parents=True)
    for part in base.iterdir():
        if part.name != "vae":
            (out / part.name).symlink_to(part, target_is_directory=part.is_dir())
    vae = AutoencoderKL.from_pretrained(base / "vae")
    vae.load_state_dict(convert_ldm_vae_checkpoint(dict(ldm_vae), dict(vae.config)), strict=True)
    vae.save_pretrained(out / "vae")
    return out


def image_stages(pixels: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """The 8-bit image and its mean grey level."""
    image = torch.from_numpy(np.array(pixels))  # a copy: PIL arrays are read-only
    return {"image": image, "image_mean": image.double().mean()}
