"""Small random-weight parts of the real Stable Diffusion architectures, for ``models="tiny"``.

Every adapter's tiny mode saves these with ``save_pretrained`` and loads them back through the
same ``from_pretrained`` code path its released checkpoint uses, so a smoke run exercises the
real loader. Nothing here needs the hub: the CLIP tokenizer's vocab.json/merges.txt are written
by hand (a byte-level alphabet with no merges: every character is one token).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
CLIP_MAX_LENGTH = 77


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2 / CLIP scheme)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_clip_vocab() -> dict[str, int]:
    """CLIP's vocabulary layout in miniature: every byte symbol, then with the end-of-word
    marker ``</w>``, then the two special tokens (514 entries)."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [a + "</w>" for a in alphabet] + list(CLIP_SPECIAL_TOKENS)
    return {t: i for i, t in enumerate(tokens)}


def write_tiny_clip_tokenizer(folder: str | Path) -> Path:
    """Write vocab.json, merges.txt and the tokenizer config a real CLIP checkpoint ships, so
    ``CLIPTokenizer.from_pretrained(folder)`` loads it exactly as it loads openai/clip-*."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_clip_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_MAX_LENGTH,
        "bos_token": CLIP_SPECIAL_TOKENS[0],
        "eos_token": CLIP_SPECIAL_TOKENS[1],
        "unk_token": CLIP_SPECIAL_TOKENS[1],
        "pad_token": CLIP_SPECIAL_TOKENS[1],
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def tiny_clip_tokenizer(folder: str | Path):
    """Write the tiny tokenizer files into ``folder`` and load them back."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer(folder))


def tiny_clip_text_model(hidden_size: int = 32, *, seed: int = 0):
    """A 2-layer CLIP text encoder over the tiny vocabulary (pooler output = EOS token state)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vocab = tiny_clip_vocab()
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
