"""The ``positionic`` method: Samples in, images of each Sample's size out, bad layouts refused early."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from picbench.adapters.positionic import PositionICMethod
from picbench.errors import BenchFormatError, MissingWeightsError
from picbench.methods import METHODS
from picbench.records import Sample, Subject

FAST = {"steps": 2, "ref_long_side": 32}
DOG = "dreambench/dataset/dog/00.jpg"
BACKPACK = "dreambench/dataset/backpack/00.jpg"


def two_subjects(
    sample_id: str, width: int = 64, height: int = 64, boxes=((0.05, 0.3, 0.55, 0.95), (0.4, 0.1, 0.95, 0.7)), depths=(0, 1)
) -> Sample:
    subjects = tuple(
        Subject(name, word, (ref,), box=box, depth=depth)
        for name, word, ref, box, depth in zip(("dog", "backpack"), ("dog", "backpack"), (DOG, BACKPACK), boxes, depths)
    )
    return Sample(sample_id, "a dog and a backpack in the jungle", width, height, "multi", subjects)


@pytest.fixture(scope="module")
def method() -> PositionICMethod:
    return PositionICMethod(models="tiny", params=FAST)


def test_registered_with_its_capabilities() -> None:
    cls = METHODS.get("positionic")
    assert cls is PositionICMethod
    caps = cls.capabilities
    assert caps.references and caps.boxes and caps.multi_subject and caps.depth_order
    assert cls.checkpoints["base"] == "black-forest-labs/FLUX.1-dev"
    assert {"steps", "guidance", "sigma", "delta", "attention_backend", "lora"} <= set(cls.default_params)


def test_depth_order_changes_the_image(method: PositionICMethod, data_dir: Path) -> None:
    front_dog, front_bag = method.generate([two_subjects("a"), two_subjects("b", depths=(1, 0))], seed=4, data_root=data_dir)
    assert not np.array_equal(np.asarray(front_dog), np.asarray(front_bag))


def test_sample_without_boxes_runs_without_vaa(method: PositionICMethod, data_dir: Path) -> None:
    sample = two_subjects("dreambench-like", boxes=(None, None), depths=(None, None))
    (image,) = method.generate([sample], seed=0, data_root=data_dir)
    assert image.size == (64, 64)


@pytest.mark.parametrize(
    ("boxes", "depths", "match"),
    [
        (((0.1, 0.1, 0.5, 0.5), (0.7, 0.2, 0.3, 0.6)), (0, 1), "inverted"),
        (((0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6)), (0, 0), "depth rank 0"),
        (((0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6)), (0, None), "some subjects have a depth rank"),
    ],
)
def test_bad_layout_is_refused_before_the_model_is_built(data_dir: Path, boxes, depths, match) -> None:
    fresh = PositionICMethod(models="tiny", params=FAST)
    with pytest.raises(BenchFormatError, match=match) as err:
        fresh.generate([two_subjects("good"), two_subjects("bad-one", boxes=boxes, depths=depths)], seed=0, data_root=data_dir)
    assert err.value.sample_id == "bad-one"
    assert not fresh.loaded


def test_missing_lora_and_base_weights_are_named(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(MissingWeightsError, match="positionic_lora.safetensors"):
        PositionICMethod(models="tiny", params={**FAST, "lora": str(tmp_path / "positionic_lora.safetensors")}).load()
    (tmp_path / "FLUX.1-dev").mkdir()
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        PositionICMethod(weights_dir=tmp_path, params=FAST).load()


def _uno_file(folder: Path, seed: int) -> dict:
    """A tiny LoRA file in UNO's released layout at DIR/UNO/dit_lora.safetensors."""
    from safetensors.torch import save_file

    from picbench.reference_impl.lora import random_uno_lora
    from picbench.tiny.flux import tiny_components

    weights = random_uno_lora(tiny_components()["transformer"], rank=4, seed=seed)
    (folder / "UNO").mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "UNO" / "dit_lora.safetensors"))
    return weights


def test_uno_lora_missing_offline_names_the_file_and_the_lora_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline with no local copy, the error names UNO's file, where it looked and the 'lora' parameter;
    a folder without the file is named too. A tiny run without a copy takes a random LoRA instead."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    method = PositionICMethod(models="default", params=FAST, weights_dir=tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        method._weights().uno_lora_file()
    message = str(err.value)
    assert "bytedance-research/UNO/dit_lora.safetensors" in message and str(tmp_path / "UNO") in message
    assert "'lora' parameter" in message and "hf download bytedance-research/UNO dit_lora.safetensors" in message
    (tmp_path / "UNO").mkdir()
    with pytest.raises(MissingWeightsError, match="dit_lora.safetensors"):
        method._weights().uno_lora_file()
    assert PositionICMethod(models="tiny", params=FAST, weights_dir=tmp_path / "elsewhere")._weights().uno_lora_file() is None


def test_default_weights_are_unos_lora_with_vaa(tmp_path: Path) -> None:
    """PositionIC starts from UNO: without a trained LoRA the method is "VAA on UNO"."""
    weights = _uno_file(tmp_path, seed=5)
    method = PositionICMethod(models="tiny", params=FAST, weights_dir=tmp_path)
    assert method.params["lora"] == "uno"
    assert method._weights().uno_lora_file() == tmp_path / "UNO" / "dit_lora.safetensors"
    pipe = method.load()
    to_q = pipe.transformer.transformer_blocks[0].attn.to_q
    assert np.array_equal(to_q.lora_A["uno"].weight.detach().numpy(), weights["double_blocks.0.processor.qkv_lora1.down.weight"].numpy())
    assert pipe.vaa_default is True
    assert "bytedance-research/UNO/dit_lora.safetensors" in method.checkpoints["lora"] and "VAA on UNO" in method.checkpoints["lora"]


def test_lora_none_is_plain_flux_and_a_file_is_a_trained_lora(tmp_path: Path, data_dir: Path) -> None:
    plain = PositionICMethod(models="tiny", params={**FAST, "lora": "none"})
    assert not getattr(plain.load().transformer, "peft_config", None)
    assert "plain FLUX.1-dev" in plain.checkpoints["lora"]
    _uno_file(tmp_path / "as-uno", seed=6)
    from_uno_layout = PositionICMethod(models="tiny", params={**FAST, "lora": str(tmp_path / "as-uno" / "UNO" / "dit_lora.safetensors")})
    assert "trained PositionIC LoRA" in from_uno_layout.checkpoints["lora"]
    sample = two_subjects("s")
    (a,) = plain.generate([sample], seed=0, data_root=data_dir)
    (b,) = from_uno_layout.generate([sample], seed=0, data_root=data_dir)
    assert not np.array_equal(np.asarray(a), np.asarray(b))
