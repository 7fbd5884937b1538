"""Small random-weight parts of the real Stable Diffusion architectures, for ``models="tiny"``.

Every adapter's tiny mode saves these with ``save_pretrained`` and loads them back through the
same ``from_pretrained`` code path its released checkpoint uses, so a smoke run exercises the
real loader. The text encoders use the ``"bytes"`` CLIP vocabulary of :mod:`picbench.tiny.tokenizers`.
"""

from __future__ import annotations

import torch

from picbench.tiny.tokenizers import CLIP_MAX_LENGTH, CLIP_SPECIAL_TOKENS, byte_clip_vocab


def tiny_clip_text_model(hidden_size: int = 32, *, seed: int = 0):
    """A 2-layer CLIP text encoder over the tiny vocabulary (pooler output = EOS token state)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vocab = byte_clip_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=vocab[CLIP_SPECIAL_TOKENS[0]],
        eos_token_id=vocab[CLIP_SPECIAL_TOKENS[1]],
        pad_token_id=vocab[CLIP_SPECIAL_TOKENS[1]],
    )
    return CLIPTextModel(config).eval()


def tiny_clip_vision_model_with_projection(hidden_size: int = 32, projection_dim: int = 32, image_size: int = 32, *, seed: int = 0):
    """A 2-layer CLIP ViT with its projection head (``image_embeds``), 32 px input."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=8,
        projection_dim=projection_dim,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_clip_image_processor(image_size: int = 32):
    """CLIP preprocessing (resize shortest side, center crop, CLIP mean/std) at ``image_size``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def tiny_sd_vae(*, seed: int = 0):
    """SD's AutoencoderKL (4 latent channels) with two 32/64-channel levels: 2x downsampling."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    ).eval()


def tiny_sd_unet(cross_attention_dim: int = 32, *, attention_type: str = "default", seed: int = 0):
    """SD 1.x's UNet2DConditionModel (cross-attention down/up blocks, 4 latent channels) with
    two 32/64-channel levels. ``attention_type`` "gated" / "gated-text-image" adds GLIGEN's
    gated self-attention fusers and position net, as the released GLIGEN UNets have."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=32,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        attention_type=attention_type,
    ).eval()


def sd_ddim_scheduler():
    """The DDIM config diffusers' GLIGEN checkpoints ship (SD 1.x betas, no sample clipping)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def sd_pndm_scheduler():
    """SD 1.x's default sampler config: PNDM in PLMS mode over the scaled-linear DDPM betas."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
