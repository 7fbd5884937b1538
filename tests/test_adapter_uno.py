"""The ``uno`` adapter: the PositionIC pipeline with VAA off and UNO's LoRA (tiny: random, in UNO's layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from picbench.adapters.uno import UnoMethod
from picbench.errors import MissingWeightsError
from picbench.methods import METHODS
from picbench.records import Sample, Subject
from picbench.reference_impl.lora import random_uno_lora
from picbench.tiny.flux import tiny_components

FAST = {"steps": 2, "ref_long_side": 32}


def sample(sample_id: str, boxes=(None, None)) -> Sample:
    refs = ("dreambench/dataset/dog/00.jpg", "dreambench/dataset/backpack/00.jpg")
    subjects = tuple(
        Subject(n, n, (r,), box=b, depth=None if b is None else i) for i, (n, r, b) in enumerate(zip(("dog", "backpack"), refs, boxes))
    )
    return Sample(sample_id, "a dog and a backpack on the beach", 64, 64, "multi", subjects)


@pytest.fixture(scope="module")
def uno() -> UnoMethod:
    return UnoMethod(models="tiny", params=FAST)


def test_registered_with_unos_published_defaults() -> None:
    assert METHODS.get("uno") is UnoMethod
    assert UnoMethod.capabilities.boxes is False and UnoMethod.capabilities.multi_subject
    assert UnoMethod.default_params["steps"] == 25 and UnoMethod.default_params["guidance"] == 4.0
    assert UnoMethod.default_params["schedule"] == "uno"  # UNO's sampling shift: mu 0.46 at 512 px (test_reference_pipeline)
    assert UnoMethod(models="tiny")._call_params()["schedule"] == "uno"
    assert "dit_lora.safetensors" in UnoMethod.checkpoints["lora"]


def test_runs_in_uno_mode_and_ignores_boxes(uno: UnoMethod, data_dir: Path) -> None:
    plain, boxed = uno.generate(
        [sample("plain"), sample("boxed", boxes=((0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)))], seed=3, data_root=data_dir
    )
    assert plain.size == (64, 64)
    assert np.array_equal(np.asarray(plain), np.asarray(boxed))
    pipe = uno.load()
    assert pipe.vaa_default is False
    assert "uno" in pipe.transformer.peft_config  # UNO's LoRA went through the key conversion


def test_lora_file_in_unos_layout_loads_from_weights_dir(tmp_path: Path) -> None:
    (tmp_path / "UNO").mkdir()
    file = tmp_path / "UNO" / "dit_lora.safetensors"
    weights = random_uno_lora(tiny_components()["transformer"], rank=4, seed=9)
    save_file(weights, str(file))
    assert UnoMethod(weights_dir=tmp_path, params=FAST)._weights().uno_lora_file() == file
    pipe = UnoMethod(models="tiny", params={**FAST, "lora": str(file)}).load()
    to_q = pipe.transformer.transformer_blocks[0].attn.to_q
    assert np.array_equal(to_q.lora_A["uno"].weight.detach().numpy(), weights["double_blocks.0.processor.qkv_lora1.down.weight"].numpy())


def test_missing_uno_lora_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="dit_lora.safetensors"):
        UnoMethod(models="tiny", params={**FAST, "lora": str(tmp_path / "UNO" / "dit_lora.safetensors")}).load()
