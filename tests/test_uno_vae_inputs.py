"""Two differences from UNO that the parity suite (tests/parity/test_parity_uno.py) found, pinned here
where CI runs: the VAE sees contiguous NCHW pixels, as UNO's ``TVF.to_tensor`` gives them
(`uno/flux/pipeline.py:268` @ d305981; diffusers' ``preprocess`` returns a channels-last view, and
convolutions over it take another kernel path), and the VAE's weights are read in float32 from the
weights folder (UNO loads ``ae.safetensors`` as stored), not rounded to the model dtype and upcast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from picbench.reference_impl.conditioning import encode_posterior
from picbench.reference_impl.pipeline import PositionICPipeline
from picbench.tiny.flux import tiny_components


def test_reference_pixels_reach_the_vae_contiguous() -> None:
    pipe = PositionICPipeline(**tiny_components(seed=0))
    seen: list[torch.Tensor] = []
    encode = pipe.vae.encode

    def recorded(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(x)
        return encode(x, *args, **kwargs)

    pipe.vae.encode = recorded
    image = Image.fromarray((torch.rand(32, 48, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    mean, _ = encode_posterior(pipe, image, "cpu")
    assert seen[0].is_contiguous() and seen[0].shape == (1, 3, 32, 48)
    assert torch.equal(mean, encode(seen[0].contiguous()).latent_dist.mean)


def test_the_vae_is_read_in_float32_when_the_model_runs_in_bf16(tmp_path: Path) -> None:
    from picbench.adapters.uno import UnoMethod

    parts = tiny_components(seed=0)
    vae = parts["vae"]
    with torch.no_grad():  # values a bf16 round trip would change
        for param in vae.parameters():
            param.add_(torch.full_like(param, 2.0**-12))
    PositionICPipeline(**parts).save_pretrained(tmp_path / "FLUX.1-dev")
    stored = {k: v.clone() for k, v in vae.state_dict().items()}
    bf16_uno = type("UnoInBf16", (UnoMethod,), {"dtype": torch.bfloat16})  # picbench's CUDA dtype, here on the CPU
    pipe = bf16_uno(params={"base": str(tmp_path / "FLUX.1-dev"), "lora": "none"}).load()
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
    assert all(torch.equal(stored[k], v) for k, v in pipe.vae.state_dict().items())
