"""What the box-grounded Stable Diffusion 1.x adapters (GLIGEN, InstanceDiffusion) share: the
generation size at SD's training resolution, the subjects' boxes as grounding input, the
mapping from diffusers' PNDM timestep entries to the authors' PLMS steps, and the authors' 8-bit
conversion of the decoded image. A home below both adapters, so neither imports the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picbench.records import Sample

if TYPE_CHECKING:
    import torch
    from PIL import Image


def generation_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """GLIGEN is trained at 512x512: generate with the longer side at ``resolution``, keeping the
    sample's aspect ratio, each side a multiple of 8 (the pipeline's requirement)."""
    scale = resolution / max(width, height)
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


def grounded_boxes(sample: Sample, method: str, max_objects: int) -> tuple[tuple[float, float, float, float], ...]:
    """The subjects' normalised xyxy boxes, for a box-grounded method: every subject needs one,
    and at most ``max_objects`` are grounded."""
    missing = [s.name for s in sample.subjects if s.box is None]
    if missing:
        raise ValueError(f"{method}: sample {sample.id} has no box for subject(s) {missing}")
    if len(sample.subjects) > max_objects:
        raise ValueError(f"{method}: sample {sample.id} has {len(sample.subjects)} subjects, at most {max_objects} are grounded")
    return tuple(tuple(s.box) for s in sample.subjects)  # type: ignore[misc]


def plms_step(entry: int) -> int:
    """The authors' PLMS step of diffusers' PNDM (``skip_prk_steps``) timestep entry ``entry``:
    PNDM repeats its second timestep, so entries 0 and 1 are the authors' first step (LDM PLMS
    evaluates the model at t and at t_next before it has a history), entry j >= 1 is step j - 1."""
    return max(0, entry - 1)


def ldm_image(decoded: torch.Tensor) -> Image.Image:
    """The first image of a VAE decoder output (N, 3, H, W in [-1, 1]) in 8 bits as both LDM-based
    authors' scripts write it: ``clamp(-1, 1) * 0.5 + 0.5``, times 255 in float32, then
    ``astype(np.uint8)``, which truncates (frank-xwang/InstanceDiffusion @ 722900e
    ``inference.py:123-125``, ``eval_local.py:95-97``; gligen/GLIGEN @ f9dccb9
    ``gligen_inference.py:443-445``). Rounding instead, as diffusers does, makes every image half a
    grey level brighter on average."""
    import numpy as np
    from PIL import Image

    pixels = (decoded[0].float().clamp(-1, 1) * 0.5 + 0.5).permute(1, 2, 0).cpu().numpy() * 255
    return Image.fromarray(pixels.astype(np.uint8))
