"""Differences from UNO's VAE that the parity suite (tests/parity/test_parity_uno.py) found, pinned here
where CI runs: the VAE sees contiguous NCHW pixels, as UNO's ``TVF.to_tensor`` gives them
(`uno/flux/pipeline.py:268` @ d305981; diffusers' ``preprocess`` returns a channels-last view, and
convolutions over it take another kernel path); the VAE's weights are read in float32 from the
weights folder (UNO loads ``ae.safetensors`` as stored), not rounded to the model dtype and upcast;
and the VAE computes as BFL's ``AutoEncoder`` (`uno/flux/modules/autoencoder.py:36-67` @ d305981: the
activation ``x * torch.sigmoid(x)``, the mid blocks' attention through 1x1 convolutions), in the
pipeline that samples as UNO only (``dreamo`` keeps diffusers' VAE, as DreamO's authors run it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from picbench.reference_impl.bfl_vae import BFLAttnProcessor, Swish, use_bfl_arithmetic
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


def _activations(vae: nn.Module) -> list[nn.Module]:
    """The VAE's activation modules: each resnet's ``nonlinearity`` (used twice) and both ``conv_act``s."""
    resnets = [m for m in vae.modules() if hasattr(m, "nonlinearity") and hasattr(m, "conv1")]
    return [r.nonlinearity for r in resnets] + [vae.encoder.conv_act, vae.decoder.conv_act]


def test_unos_pipeline_vae_activation_is_bfls_swish() -> None:
    from picbench.adapters.uno import UnoMethod

    vae = UnoMethod(models="tiny", params={"lora": "none"}).load().vae
    activations = _activations(vae)
    assert len(activations) > 2 and all(type(a) is Swish for a in activations)
    assert not any(isinstance(m, nn.SiLU) for m in vae.modules())
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 4
    swish = x * torch.sigmoid(x)  # uno/flux/modules/autoencoder.py:36-37
    assert all(torch.equal(a(x), swish) for a in activations)
    assert set(map(type, vae.attn_processors.values())) == {BFLAttnProcessor}


def test_dreamos_vae_keeps_diffusers_arithmetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    from picbench.adapters.dreamo import DreamOMethod

    monkeypatch.setenv("PICBENCH_HOME", str(tmp_path))
    vae = DreamOMethod(models="tiny").load().pipe.vae
    assert all(type(a) is nn.SiLU for a in _activations(vae))
    assert set(map(type, vae.attn_processors.values())) == {AttnProcessor2_0}


def _diffusers_vae_attention(width: int) -> Any:
    """A VAE mid block's attention as diffusers' ``UNetMidBlock2D`` builds it for ``AutoencoderKL``."""
    from diffusers.models.attention_processor import Attention

    return Attention(
        width,
        heads=1,
        dim_head=width,
        rescale_output_factor=1.0,
        eps=1e-6,
        norm_num_groups=32,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )


def test_vae_attention_is_bfls_attnblock_at_flux_width() -> None:
    """FLUX.1-dev's VAE width (512 channels), where diffusers' linear layers and BFL's convolutions round apart."""
    torch.manual_seed(0)
    attn = _diffusers_vae_attention(512)
    attn.set_processor(BFLAttnProcessor())
    x = torch.randn(1, 512, 24, 32)
    with torch.no_grad():
        # BFL's AttnBlock (uno/flux/modules/autoencoder.py:52-67), its einops rearranges spelled in torch
        conv = {name: nn.Conv2d(512, 512, 1) for name in ("q", "k", "v", "proj_out")}
        for name, linear in zip(conv, (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]), strict=True):
            conv[name].weight.copy_(linear.weight[:, :, None, None])
            conv[name].bias.copy_(linear.bias)
        h_ = attn.group_norm(x)
        b, c, h, w = x.shape
        q, k, v = (conv[n](h_).permute(0, 2, 3, 1).reshape(b, 1, h * w, c).contiguous() for n in ("q", "k", "v"))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v).reshape(b, h, w, c).permute(0, 3, 1, 2)
        expected = x + conv["proj_out"](out)
        assert torch.equal(attn(x), expected)


def test_bfl_arithmetic_refuses_an_attention_bfl_does_not_describe() -> None:
    from picbench.tiny.flux import tiny_components

    vae = tiny_components(seed=0)["vae"]
    vae.encoder.mid_block.attentions[0].heads = 2
    with pytest.raises(ValueError, match="encoder.mid_block.attentions.0"):
        use_bfl_arithmetic(vae)
