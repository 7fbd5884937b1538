"""The one tiny-model package: its CLIP tokenizers (transformers' byte table, CLIP's real BPE) and
its atomic folder publishing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from picbench.tiny.publish import publish_folder
from picbench.tiny.tokenizers import CLIP_SPECIAL_TOKENS, QWEN_CORPUS, byte_clip_vocab, clip_tokenizer, write_clip_tokenizer


def test_byte_vocabulary_is_transformers_byte_table_then_word_final_then_specials() -> None:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = byte_clip_vocab()
    assert len(vocab) == 2 * 256 + 2
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:256] == symbols
    assert vocab[symbols[0] + "</w>"] == 256
    assert [vocab[t] for t in CLIP_SPECIAL_TOKENS] == [512, 513]


def test_byte_tokenizer_gives_one_token_per_character(tmp_path: Path) -> None:
    tok = clip_tokenizer(tmp_path / "tok")
    ids = tok("a dog")["input_ids"]
    assert ids[0] == tok.bos_token_id == 512 and ids[-1] == tok.eos_token_id == 513
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "d", "o", "g</w>"]
    assert tok.model_max_length == 77
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"
    assert clip_tokenizer()("a dog")["input_ids"] == ids  # no folder: the same tokenizer from a temporary one


def test_clip_vocabulary_tokenizes_as_open_clip_does(tmp_path: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tok = clip_tokenizer(tmp_path, "clip", model_max_length=16)
    prompt = "a photo of a backpack in the jungle"
    assert tok(prompt)["input_ids"][1:-1] == SimpleTokenizer().encode(prompt)
    assert len(tok) == 49408 and tok.eos_token_id == 49407 and tok.model_max_length == 16


def test_unknown_clip_vocabulary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown CLIP vocabulary 'bpe'"):
        write_clip_tokenizer(tmp_path, "bpe")  # type: ignore[arg-type]


def test_publish_builds_once_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "weights.bin").write_bytes(b"w")

    folder = tmp_path / "models" / "tiny-x"
    assert publish_folder(folder, build) == folder
    assert (folder / "weights.bin").read_bytes() == b"w"
    assert publish_folder(folder, build) == folder and len(calls) == 1  # published: not built again
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-x"]  # no staging left behind

    def broken(staging: Path) -> None:
        (staging / "part").write_bytes(b"p")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        publish_folder(tmp_path / "models" / "tiny-y", broken)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-x"]


def test_publish_keeps_the_folder_another_process_published_first(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-z"

    def racing(staging: Path) -> None:
        folder.mkdir()
        (folder / "theirs").write_text("first")
        (staging / "ours").write_text("second")

    assert publish_folder(folder, racing) == folder
    assert [p.name for p in folder.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-z"]


def test_qwen_corpus_holds_vision_r1s_own_query() -> None:
    """The tiny Qwen BPE learns Vision-R1's real query: its corpus spells out the detector's prompt."""
    from picbench.metrics.detectors.vision_r1 import PROMPT

    assert QWEN_CORPUS[0] == PROMPT.format(category="dog and backpack")
