"""BFL's `AutoEncoder` arithmetic on diffusers' `AutoencoderKL`, for the pipeline that samples as UNO.

UNO encodes references and decodes images with BFL's FLUX autoencoder (bytedance/UNO @ d305981,
`uno/flux/modules/autoencoder.py`); picbench loads the same weights into diffusers' `AutoencoderKL`.
The two compute the same function but round differently in float32 at two places, which a later
bf16 cast turns into one rounding step on some reference tokens (found by tests/parity/test_parity_uno.py):
- the activation: BFL's `swish(x) = x * torch.sigmoid(x)` (autoencoder.py:36-37, applied at :87, :91,
  :193, :272), diffusers' `nn.SiLU` (a fused kernel, ~1e-7 off per call);
- the mid blocks' attention: BFL's `AttnBlock` (autoencoder.py:40-67) computes q, k, v and the output
  projection as 1x1 convolutions on the feature map around a one-head SDPA, diffusers as linear layers
  on the tokens (equal at a tiny width, ~5e-7 off at FLUX.1-dev's 512 channels).
The other ops (GroupNorm, the zero-padded stride-2 downsampling, nearest upsampling, the residual sums,
the posterior's `exp(0.5 * logvar)`, scale and shift) are the same ops on both sides and agree bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import Attention
from torch import nn


class Swish(nn.Module):
    """`x * torch.sigmoid(x)`, BFL's `swish` (`uno/flux/modules/autoencoder.py:36-37` @ d305981)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class BFLAttnProcessor:
    """A VAE mid block's attention as BFL's `AttnBlock` computes it (`uno/flux/modules/autoencoder.py:52-67`
    @ d305981): GroupNorm on the map, 1x1 convolutions (diffusers' linear weights viewed as kernels),
    one-head SDPA over `b 1 (h w) c` tokens, the output laid back as einops lays it, projected, added."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or temb is not None:
            raise ValueError("BFLAttnProcessor: BFL's AttnBlock is a plain self-attention (no encoder states, mask or temb)")
        b, c, h, w = hidden_states.shape
        normed = attn.group_norm(hidden_states)
        q, k, v = (_conv1x1(normed, layer) for layer in (attn.to_q, attn.to_k, attn.to_v))
        q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous() for t in (q, k, v))  # b c h w -> b 1 (h w) c
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].view(b, h, w, c).permute(0, 3, 1, 2)  # b 1 (h w) c -> b c h w
        return hidden_states + _conv1x1(out, attn.to_out[0])


def _conv1x1(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return F.conv2d(x, layer.weight[:, :, None, None], layer.bias)


def use_bfl_arithmetic(vae: AutoencoderKL) -> None:
    """Make `vae` compute as BFL's `AutoEncoder` (in place): every `nn.SiLU` (the resnets' `nonlinearity`,
    the encoder's and decoder's `conv_act`) becomes :class:`Swish`, every attention :class:`BFLAttnProcessor`.
    Raises ValueError on an attention BFL's `AttnBlock` does not describe (several heads, no GroupNorm...)."""
    for parent in vae.modules():
        for name, child in parent.named_children():
            if type(child) is nn.SiLU:
                setattr(parent, name, Swish())
    for name, module in vae.named_modules():
        if isinstance(module, Attention):
            plain = module.heads == 1 and module.group_norm is not None and module.spatial_norm is None
            if not (plain and module.residual_connection and module.rescale_output_factor == 1.0 and not module.is_cross_attention):
                raise ValueError(f"use_bfl_arithmetic: VAE attention {name} is not BFL's one-head AttnBlock")
            module.set_processor(BFLAttnProcessor())
