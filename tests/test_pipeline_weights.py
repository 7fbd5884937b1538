"""`reference_impl.pipeline_weights`: the one base-plus-LoRA decision of `picbench run` (positionic, uno)
and `picbench train`, and its one remedy text when UNO's LoRA is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from picbench.errors import MissingWeightsError
from picbench.reference_impl.pipeline_weights import LoraSource, PipelineWeights, WeightsSettings

RUN = WeightsSettings("the 'lora' parameter", "--weights-dir DIR")
TRAIN = WeightsSettings("model.init_lora", "weights_dir = DIR (in the config)")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(("method", "settings"), [("uno", RUN), ("positionic (picbench train)", TRAIN)])
def test_missing_uno_lora_names_the_front_ends_own_settings(tmp_path: Path, method: str, settings: WeightsSettings) -> None:
    weights = PipelineWeights(method, tmp_path / "weights", False, settings)
    with pytest.raises(MissingWeightsError) as err:
        weights.lora("uno")
    message = str(err.value)
    remedy = (
        f"put it under {settings.weights_dir} as DIR/bytedance-research/UNO/dit_lora.safetensors, "
        f"or set {settings.lora} to a LoRA file (or 'none')"
    )
    assert message.endswith(remedy + ".") and weights.uno_lora_remedy == remedy
    assert f"picbench weights download {method.split()[0]}" in message and str(tmp_path / "weights" / "UNO") in message


def test_smoke_run_without_unos_file_takes_a_random_lora_and_finds_a_local_copy(tmp_path: Path) -> None:
    smoke = PipelineWeights("positionic", tmp_path, True, RUN)
    assert smoke.lora("uno") == LoraSource(random_uno=True) and smoke.lora("UNO") == LoraSource(random_uno=True)
    assert smoke.lora("none") == LoraSource()
    copy = tmp_path / "bytedance-research" / "UNO" / "dit_lora.safetensors"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"")
    assert smoke.lora("uno") == LoraSource(copy)


def test_a_lora_file_is_found_as_given_under_the_weights_folder_or_relative_to_a_config(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "lora.safetensors").write_bytes(b"")
    run = PipelineWeights("positionic", tmp_path, False, RUN)
    assert run.lora("mine/lora.safetensors") == LoraSource(tmp_path / "mine" / "lora.safetensors")  # DIR/<name>
    train = PipelineWeights("positionic (picbench train)", None, False, TRAIN, resolve=lambda p: tmp_path / "mine" / p)
    assert train.lora("lora.safetensors") == LoraSource(tmp_path / "mine" / "lora.safetensors")
    with pytest.raises(
        MissingWeightsError, match=r"method positionic \(picbench train\): LoRA file .*nope.safetensors does not exist \(model.init_lora"
    ):
        train.lora("nope.safetensors")
