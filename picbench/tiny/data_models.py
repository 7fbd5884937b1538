"""Random-weight models of the BMPDS data pipeline's real architectures: SAM (segmenter), FLUX Fill
(outpainter), FLUX (text to image) and a Qwen2 causal LM (caption writer).

Each is saved in the layout its real loader reads (transformers / diffusers ``save_pretrained``), so
``reference_impl.bmpds.roles`` loads them through the same code as the released checkpoints.
Images and captions made with these weights mean nothing: callers mark such builds as smoke builds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from picbench.tiny.flux import TINY_LATENT_CHANNELS, tiny_components
from picbench.tiny.metric_models import tiny_dir
from picbench.tiny.publish import publish_folder
from picbench.tiny.tokenizers import QWEN_CHAT_TEMPLATE, qwen_tokenizer

SEED = 0
SAM_IMAGE_SIZE = 256


def write_sam(folder: Path) -> None:
    """SAM (``SamModel``, ViT image encoder + prompt encoder + mask decoder), one narrow layer
    each, with the real ``SamProcessor`` resizing the long side to ``SAM_IMAGE_SIZE``."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": SAM_IMAGE_SIZE,
            "patch_size": 16,
            "mlp_dim": 64,
            "global_attn_indexes": [0],
            "window_size": 4,
            "num_pos_feats": 16,
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": SAM_IMAGE_SIZE, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_dim": 64, "iou_head_hidden_dim": 32},
    )
    torch.manual_seed(SEED)
    SamModel(config).save_pretrained(folder)
    processor = SamImageProcessor(
        size={"longest_edge": SAM_IMAGE_SIZE},
        pad_size={"height": SAM_IMAGE_SIZE, "width": SAM_IMAGE_SIZE},
        mask_size={"longest_edge": SAM_IMAGE_SIZE // 4},
        mask_pad_size={"height": SAM_IMAGE_SIZE // 4, "width": SAM_IMAGE_SIZE // 4},
    )
    SamProcessor(image_processor=processor).save_pretrained(folder)


def write_flux(folder: Path) -> None:
    """A FLUX.1-dev ``FluxPipeline`` from :func:`picbench.tiny.flux.tiny_components`."""
    from diffusers import FluxPipeline

    FluxPipeline(**tiny_components(SEED)).save_pretrained(folder)


def write_flux_fill(folder: Path) -> None:
    """A FLUX.1-Fill-dev ``FluxFillPipeline``: the tiny FLUX parts with a transformer whose input
    carries the packed latents, masked-image latents and the 8x8 mask (FLUX Fill's 384 channels,
    here 16 + 16 + 256)."""
    from diffusers import FluxFillPipeline, FluxTransformer2DModel

    parts = tiny_components(SEED)
    base = parts["transformer"].config
    torch.manual_seed(SEED)
    packed = TINY_LATENT_CHANNELS * 4
    parts["transformer"] = FluxTransformer2DModel(
        patch_size=1,
        in_channels=packed * 2 + 8 * 8 * 4,
        out_channels=packed,
        num_layers=base.num_layers,
        num_single_layers=base.num_single_layers,
        attention_head_dim=base.attention_head_dim,
        num_attention_heads=base.num_attention_heads,
        joint_attention_dim=base.joint_attention_dim,
        pooled_projection_dim=base.pooled_projection_dim,
        guidance_embeds=True,
        axes_dims_rope=tuple(base.axes_dims_rope),
    ).eval()
    FluxFillPipeline(**parts).save_pretrained(folder)


def write_causal_lm(folder: Path) -> None:
    """A one-layer ``Qwen2ForCausalLM`` (Qwen2.5-Instruct's architecture) with the Qwen tokenizer
    and chat template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=pad,
        eos_token_id=end,
        pad_token_id=pad,
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = end, pad
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


BUILDERS = {"sam": write_sam, "flux": write_flux, "flux_fill": write_flux_fill, "caption_lm": write_causal_lm}
"""role -> writer of its tiny folder (under :func:`picbench.tiny.metric_models.tiny_dir`)"""


def tiny_data_weights(role: str) -> Path:
    """The folder of the tiny model for a BMPDS role, built and published on first use."""
    return publish_folder(tiny_dir() / f"bmpds_{role}", BUILDERS[role])
