"""Random-weight metric models of the real architectures (CLIP, DINO, the detectors).

Each builder makes a small model from config (hidden sizes of 32-64, one or two layers) and saves
it in the on-disk format its real loader reads (open_clip ``local-dir``, timm ``local-dir``,
transformers ``save_pretrained``), so everything downstream goes through the real loading path.
Numbers computed with these models are smoke numbers and are labelled so.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from picbench.paths import picbench_home
from picbench.tiny.publish import publish_folder
from picbench.tiny.tokenizers import QWEN_CHAT_TEMPLATE, QWEN_SPECIAL, clip_tokenizer, qwen_tokenizer

SEED = 0
CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_dir() -> Path:
    return picbench_home() / "tiny-models"


def _seeded() -> None:
    torch.manual_seed(SEED)


def write_open_clip(folder: Path) -> None:
    """A ViT-B-32-shaped open_clip model (real tokenizer, OpenAI preprocessing), as ``local-dir``."""
    import open_clip
    from safetensors.torch import save_file

    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CLIP_CFG, "preprocess_cfg": preprocess}))
    _seeded()
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))


def write_timm_dino(folder: Path) -> None:
    """A ViT-S/16-shaped DINO model (no head), in timm's hub layout (config.json + model.safetensors)."""
    import timm
    from safetensors.torch import save_file

    args = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    _seeded()
    model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0, **args)
    keep = ("tag", "input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes", "first_conv", "classifier")
    cfg = {
        "architecture": "vit_small_patch16_224",
        "num_classes": 0,
        "num_features": 32,
        "model_args": args,
        "pretrained_cfg": {k: v for k, v in model.pretrained_cfg.items() if k in keep},
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file(model.state_dict(), str(folder / "model.safetensors"))


def write_hf_clip(folder: Path) -> None:
    """A transformers CLIPModel (ViT-B/32 shape, tiny) with its CLIPProcessor, via save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "eos_token_id": 49407,
            "bos_token_id": 49406,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 224,
            "patch_size": 32,
            "hidden_act": "quick_gelu",
        },
        projection_dim=32,
    )
    _seeded()
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
        resample=3,
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer(folder, "clip")).save_pretrained(folder)


def write_owlv2(folder: Path) -> None:
    """An OWLv2 open-vocabulary detector (tiny, 64 px input) with its processor, via save_pretrained."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    config = Owlv2Config(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 49408,
            "max_position_embeddings": 16,
            "eos_token_id": 49407,
            "bos_token_id": 49406,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    _seeded()
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    tokenizer = clip_tokenizer(folder, "clip", model_max_length=16)  # OWLv2's text length
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


# Class words of the bundled benches (DreamBench, MS-Bench) and the words of COCO-style queries:
# the tiny BERT vocabulary, so that test queries tokenize to real words rather than [UNK].
_GROUNDING_WORDS = (
    "a photo of . , and the dog cat backpack teddy bear plushie can bowl vase sneaker shoe toy glasses boot "
    "candle clock berry duck monster cartoon person man woman car chair table cup bottle bag hat shirt dress "
    "pants jacket flower tree house robot sunglasses"
)


def write_grounding_dino(folder: Path) -> None:
    """A Grounding DINO (Swin backbone, BERT text encoder; one encoder, two decoder layers) with
    its processor and a small WordPiece vocabulary, via save_pretrained."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(_GROUNDING_WORDS.split())]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7, out_features=["stage2", "stage3", "stage4"]
        ),
        text_config=BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=20,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    _seeded()
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 224, "longest_edge": 320})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=BertTokenizer(str(folder / "vocab.txt"))).save_pretrained(folder)


def write_qwen25_vl(folder: Path) -> None:
    """A Qwen2.5-VL (Vision-R1's architecture) with a one-block vision tower and a one-layer
    language model, with the real Qwen2-VL image processor, via save_pretrained."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    _seeded()
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT_TEMPLATE
    ).save_pretrained(folder)


BUILDERS = {
    "clip": ("open_clip", write_open_clip),
    "hf_clip": ("hf_clip", write_hf_clip),
    "dino": ("dino", write_timm_dino),
    "owlv2": ("owlv2", write_owlv2),
    "grounding-dino": ("grounding_dino", write_grounding_dino),
    "vision-r1": ("vision_r1", write_qwen25_vl),
}
"""role -> (folder name under :func:`tiny_dir`, writer of that folder)"""


def tiny_weights(role: str) -> Path:
    """The folder of the tiny model for a role, built and published on first use."""
    name, write = BUILDERS[role]
    return publish_folder(tiny_dir() / name, write)
