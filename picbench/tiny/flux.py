"""Small random-weight FLUX components, built from config, for CPU tests and `--models tiny` smoke runs.

Every component has the real class and architecture of FLUX.1-dev's (FluxTransformer2DModel,
AutoencoderKL, CLIPTextModel, T5EncoderModel, FlowMatchEulerDiscreteScheduler with FLUX's
dynamic shift), only narrower and shallower. The tokenizers come from :mod:`picbench.tiny.tokenizers`
(CLIP: the ``"bytes"`` vocabulary; T5: a unigram vocabulary of printable characters).
The VAE keeps FLUX's 8x downsampling, so output sizes and token grids match the real model's.
Images made with these weights mean nothing: callers mark such runs as smoke runs.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from picbench.tiny.tokenizers import clip_tokenizer, t5_tokenizer

TINY_HIDDEN = 32
TINY_LATENT_CHANNELS = 4
TINY_POSTERIOR_LOGVAR = -6.0
"""The VAE encoder's log-variance bias: posterior std about 0.05, so posterior samples stay close to the mean."""
TINY_T5_MAX_LENGTH = 16
"""Text tokens fed to the transformer (FLUX.1-dev uses 512); short keeps the joint sequence small."""


def tiny_components(seed: int = 0) -> dict[str, object]:
    """Keyword arguments for `PositionICPipeline(**tiny_components())`; weights drawn from `seed`."""
    torch.manual_seed(seed)
    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer(TINY_T5_MAX_LENGTH)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=TINY_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=TINY_HIDDEN,
            bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=TINY_HIDDEN,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=TINY_LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    with torch.no_grad():  # a trained VAE's posterior is narrow; at random init its std would be ~1, drowning the mean
        vae.encoder.conv_out.bias[TINY_LATENT_CHANNELS:] = TINY_POSTERIOR_LOGVAR
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=TINY_LATENT_CHANNELS * 4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_HIDDEN,
        pooled_projection_dim=TINY_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return {
        "scheduler": scheduler,
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": clip_tok,
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer_2": t5_tok,
        "transformer": transformer.eval(),
    }
