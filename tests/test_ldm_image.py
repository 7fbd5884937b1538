"""The 8-bit image of the LDM-based methods (instancediffusion, gligen) is written as their authors'
scripts write it: ``torch.clamp(sample, -1, 1) * 0.5 + 0.5``, ``.numpy() * 255``,
``astype(np.uint8)`` (frank-xwang/InstanceDiffusion @ 722900e ``inference.py:123-125``; gligen/GLIGEN
@ f9dccb9 ``gligen_inference.py:443-445``): truncated, not rounded as diffusers' pipelines and
picbench before version 3 of both adapters did (half a grey level brighter on average)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from grounded_samples import _one_thread, dreambench_multi_sample  # noqa: F401 (autouse fixture)

from picbench.methods.sd_grounding import ldm_image


def authors_pixels(decoded: torch.Tensor) -> np.ndarray:
    """The authors' lines, for one image of a decoder output."""
    sample = torch.clamp(decoded[0], min=-1, max=1) * 0.5 + 0.5
    sample = sample.cpu().numpy().transpose(1, 2, 0) * 255
    return sample.astype(np.uint8)


def test_ldm_image_truncates_as_the_authors_scripts() -> None:
    decoded = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2  # some outside [-1, 1]
    image = np.asarray(ldm_image(decoded))
    assert image.shape == (16, 24, 3)
    assert np.array_equal(image, authors_pixels(decoded))
    rounded = ((decoded[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert 0.3 < rounded.mean() - image.astype(np.float64).mean() < 0.7
    assert np.asarray(ldm_image(torch.full((1, 3, 1, 1), 0.9))).item(0) == 242  # 242.25 -> 242; 0.999 -> 254, not 255
    assert np.asarray(ldm_image(torch.full((1, 3, 1, 1), 0.999))).item(0) == 254


def _record_decodes(vae: Any) -> list[torch.Tensor]:
    decoded: list[torch.Tensor] = []
    decode = vae.decode

    def recorded(*args: Any, **kwargs: Any) -> Any:
        out = decode(*args, **kwargs)
        decoded.append((out.sample if hasattr(out, "sample") else out[0]).detach().clone())
        return out

    vae.decode = recorded
    return decoded


def test_instancediffusion_writes_its_image_as_the_authors(data_dir: Path) -> None:
    from picbench.adapters.instancediffusion import InstanceDiffusionMethod

    method = InstanceDiffusionMethod(models="tiny", params={"steps": 2, "resolution": 32})
    decoded = _record_decodes(method.load().vae)
    image = method.generate([dreambench_multi_sample(data_dir, 32, 32)], seed=1, data_root=data_dir)[0]
    assert len(decoded) == 1 and image.size == (32, 32)
    assert np.array_equal(np.asarray(image), authors_pixels(decoded[0]))


def test_gligen_writes_its_image_as_the_authors(data_dir: Path) -> None:
    from picbench.adapters.gligen import GligenMethod

    method = GligenMethod(models="tiny", params={"variant": "text-box", "steps": 2, "resolution": 32})
    decoded = _record_decodes(method.load().vae)
    image = method.generate([dreambench_multi_sample(data_dir, 32, 32)], seed=1, data_root=data_dir)[0]
    assert len(decoded) == 1 and image.size == (32, 32)
    assert np.array_equal(np.asarray(image), authors_pixels(decoded[0]))
