"""The tokenizers of the tiny models: the real tokenizer classes, built from vocabularies made
here, so nothing is fetched from the hub.

CLIP comes in two vocabularies, both written as the files a released CLIP checkpoint ships
(``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) and loaded back with
``CLIPTokenizer.from_pretrained``, the loader the real checkpoints go through:

- ``"bytes"``: byte-level BPE with no merges (every character is a token): the 256 byte symbols of
  transformers' ``bytes_to_unicode``, then each with CLIP's end-of-word marker ``</w>``, then the
  two special tokens (514 entries). For generators whose tiny text encoders have a small vocabulary.
- ``"clip"``: CLIP's real 49408-token BPE (shipped with open_clip), for the metric models, whose
  text towers keep CLIP's vocabulary size and end-of-text id 49407.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, PreTrainedTokenizerFast, T5Tokenizer

CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
CLIP_MAX_LENGTH = 77
ClipVocabulary = Literal["bytes", "clip"]


def byte_clip_vocab() -> dict[str, int]:
    """The ``"bytes"`` vocabulary: byte symbols, the same with ``</w>``, then the special tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + list(CLIP_SPECIAL_TOKENS)
    return {t: i for i, t in enumerate(tokens)}


def _real_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP's BPE from open_clip's SimpleTokenizer, renamed to transformers' special tokens."""
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    rename = {"<start_of_text>": CLIP_SPECIAL_TOKENS[0], "<end_of_text>": CLIP_SPECIAL_TOKENS[1]}
    vocab = {rename.get(tok, tok): idx for tok, idx in simple.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    return vocab, merges


def write_clip_tokenizer(folder: str | Path, vocabulary: ClipVocabulary = "bytes", model_max_length: int = CLIP_MAX_LENGTH) -> Path:
    """Write a CLIP tokenizer's files into ``folder`` (created if needed) and return it."""
    if vocabulary == "bytes":
        vocab, merges = byte_clip_vocab(), []
    elif vocabulary == "clip":
        vocab, merges = _real_clip_vocab()
    else:
        raise ValueError(f"unknown CLIP vocabulary {vocabulary!r}; known: 'bytes', 'clip'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": CLIP_SPECIAL_TOKENS[0],
        "eos_token": CLIP_SPECIAL_TOKENS[1],
        "unk_token": CLIP_SPECIAL_TOKENS[1],
        "pad_token": CLIP_SPECIAL_TOKENS[1],
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def clip_tokenizer(
    folder: str | Path | None = None, vocabulary: ClipVocabulary = "bytes", model_max_length: int = CLIP_MAX_LENGTH
) -> CLIPTokenizer:
    """Write the tokenizer into ``folder`` (a temporary one if None) and load it back."""
    from transformers import CLIPTokenizer

    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp, vocabulary, model_max_length))
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder, vocabulary, model_max_length))


def t5_tokenizer(model_max_length: int) -> T5Tokenizer:
    """Unigram vocabulary: T5's special tokens, the word-start marker and printable ASCII."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_CORPUS = (
    "Locate every dog and backpack in the image and output the coordinates in JSON format.",
    '```json\n[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}]\n```',
    'system user assistant You are a helpful assistant. 0123456789 {}[],:"',
)
"""What the tiny Qwen BPE learns its merges from: a Vision-R1 query (its detector's prompt,
written out so that ``tiny`` stays below ``metrics``; tests/test_tiny.py checks it still matches
``picbench.metrics.detectors.vision_r1.PROMPT``), an answer in Vision-R1's format, and chat words."""
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE with Qwen2.5-VL's special tokens and chat template: enough to drive
    the real processor and generate() end to end (its text is random, like its weights)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        list(QWEN_CORPUS),
        trainers.BpeTrainer(vocab_size=400, special_tokens=QWEN_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return fast
