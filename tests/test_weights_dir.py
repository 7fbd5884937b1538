"""`picbench run --method M --weights-dir DIR` with the hub offline: each of the six generating
methods finds every checkpoint it needs in DIR laid out as its MissingWeightsError says
(DIR/<hub id>/...), here tiny random files in the released layouts; the metric models come from
$PICBENCH_WEIGHTS_DIR/<role>/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_bench_helpers import tiny_samples, write_tiny_bench
from safetensors.torch import save_file
from typer.testing import CliRunner

from picbench.cli import app
from picbench.results import load_result

pytestmark = pytest.mark.slow  # six real method loads and runs: a minute or two on a CPU

# method -> (parameters of a small run, the checkpoints it must read from DIR)
RUNS = {
    "gligen": (["steps=2", "resolution=32"], ["anhnct/Gligen_Text_Image"]),
    "instancediffusion": (
        ["steps=2", "resolution=32", "mis=0.0"],
        ["xudongw/InstanceDiffusion", "stable-diffusion-v1-5/stable-diffusion-v1-5"],
    ),
    "msdiffusion": (
        ["steps=2", "resolution=64"],
        ["stabilityai/stable-diffusion-xl-base-1.0", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "doge1516/MS-Diffusion"],
    ),
    "dreamo": (
        ["steps=2", "resolution=64", "ref_res=64"],
        ["black-forest-labs/FLUX.1-dev", "ByteDance/DreamO", "alimama-creative/FLUX.1-Turbo-Alpha"],
    ),
    "uno": (["steps=2"], ["black-forest-labs/FLUX.1-dev", "bytedance-research/UNO"]),
    "positionic": (["steps=2"], ["black-forest-labs/FLUX.1-dev", "bytedance-research/UNO"]),
}


def _link(target: Path, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(target, target_is_directory=target.is_dir())


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding every method's checkpoints under their hub ids, and the metric models."""
    root = tmp_path_factory.mktemp("weights")
    built = tmp_path_factory.mktemp("built")
    with pytest.MonkeyPatch.context() as patch:  # the test home of conftest's _isolated_home, never ~/.cache
        patch.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        _fill(root, built)
    return root


def _fill(root: Path, built: Path) -> None:
    from diffusers import FluxPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection

    from picbench.adapters.dreamo import TURBO_FILE, write_tiny_checkpoints
    from picbench.adapters.gligen import build_tiny_gligen
    from picbench.adapters.instancediffusion import INSTANCEDIFFUSION_FILE, build_tiny_instancediffusion
    from picbench.adapters.msdiffusion import (
        ADAPTER_FILE,
        GroundingResampler,
        ResamplerConfig,
        build_tiny_checkpoints,
        write_random_adapter,
    )
    from picbench.reference_impl.lora import random_uno_lora
    from picbench.tiny.flux import tiny_components
    from picbench.tiny.metric_models import tiny_weights

    build_tiny_gligen(root / "anhnct" / "Gligen_Text_Image", "text-image")
    sd15 = build_tiny_instancediffusion(built / "instancediffusion")
    _link(sd15, root / "stable-diffusion-v1-5" / "stable-diffusion-v1-5")
    _link(sd15 / INSTANCEDIFFUSION_FILE, root / "xudongw" / "InstanceDiffusion" / INSTANCEDIFFUSION_FILE)

    sdxl = build_tiny_checkpoints(built / "msdiffusion")
    _link(sdxl["sdxl"], root / "stabilityai" / "stable-diffusion-xl-base-1.0")
    _link(sdxl["image_encoder"], root / "laion" / "CLIP-ViT-bigG-14-laion2B-39B-b160k")
    unet = UNet2DConditionModel.from_pretrained(sdxl["sdxl"] / "unet")
    cfg = ResamplerConfig(
        embedding_dim=CLIPVisionModelWithProjection.from_pretrained(sdxl["image_encoder"]).config.hidden_size,
        output_dim=unet.config.cross_attention_dim,
        phrase_dim=CLIPTextModel.from_pretrained(sdxl["sdxl"] / "text_encoder").config.projection_dim,
        dim=32,
        depth=1,
        dim_head=64,
        heads=1,
        num_queries=4,  # a shape read off the file, heads of the authors' 64
    )
    (root / "doge1516" / "MS-Diffusion").mkdir(parents=True)
    write_random_adapter(root / "doge1516" / "MS-Diffusion" / ADAPTER_FILE, GroundingResampler(cfg), unet)

    flux = FluxPipeline(**tiny_components(seed=0))
    flux.save_pretrained(root / "black-forest-labs" / "FLUX.1-dev")
    (root / "bytedance-research" / "UNO").mkdir(parents=True)
    save_file(random_uno_lora(flux.transformer, rank=4, seed=5), str(root / "bytedance-research" / "UNO" / "dit_lora.safetensors"))
    dreamo = write_tiny_checkpoints(root / "ByteDance" / "DreamO", flux.transformer, flux.text_encoder_2.config.d_model)
    (root / "alimama-creative" / "FLUX.1-Turbo-Alpha").mkdir(parents=True)
    (dreamo / TURBO_FILE).rename(root / "alimama-creative" / "FLUX.1-Turbo-Alpha" / TURBO_FILE)

    for role in ("clip", "dino"):
        _link(tiny_weights(role), root / role)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights: Path) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("PICBENCH_WEIGHTS_DIR", str(weights))  # the metric models: $PICBENCH_WEIGHTS_DIR/clip, /dino


@pytest.mark.parametrize("method", sorted(RUNS))
def test_every_checkpoint_comes_from_the_weights_dir(method: str, weights: Path, offline: None, tmp_path: Path, data_dir: Path) -> None:
    params, needed = RUNS[method]
    assert all((weights / repo).exists() for repo in needed)
    bench = write_tiny_bench(tmp_path, data_dir, samples=tiny_samples(2)[:1])
    out = tmp_path / "run"
    args = [
        "run",
        "--method",
        method,
        "--bench",
        str(bench),
        "--data-dir",
        str(data_dir),
        "--weights-dir",
        str(weights),
        "--detector",
        "none",
        "--out",
        str(out),
        *[a for p in params for a in ("--param", p)],
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = load_result(out)
    assert run.smoke is False and run.counts["generation_failures"] == 0 and run.metrics["clip_t"] is not None
    assert json.loads((out / "results.json").read_text())["provenance"]["models"] == "default"


def test_without_the_folder_the_error_names_the_layout(offline: None, tmp_path: Path, data_dir: Path) -> None:
    # $PICBENCH_WEIGHTS_DIR still serves the metric models; --weights-dir, given, is where methods look
    bench = write_tiny_bench(tmp_path, data_dir, samples=tiny_samples(2)[:1])
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--method",
            "gligen",
            "--bench",
            str(bench),
            "--data-dir",
            str(data_dir),
            "--weights-dir",
            str(tmp_path / "nothing"),
            "--detector",
            "none",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "anhnct/Gligen_Text_Image" in text and "--weights-dir DIR as DIR/anhnct/Gligen_Text_Image" in text
    from picbench.errors import MissingWeightsError
    from picbench.methods import METHODS

    with pytest.raises(MissingWeightsError) as info:
        METHODS.get("gligen")(weights_dir=tmp_path / "nothing").load()
    assert f"not in {tmp_path / 'nothing' / 'anhnct' / 'Gligen_Text_Image'} nor {tmp_path / 'nothing' / 'Gligen_Text_Image'}" in str(
        info.value
    )


def test_picbench_weights_dir_serves_method_checkpoints_too(offline: None, weights: Path, tmp_path: Path, data_dir: Path) -> None:
    """No --weights-dir: $PICBENCH_WEIGHTS_DIR (set by `offline`) is where the method looks."""
    from picbench.methods import METHODS

    assert METHODS.get("gligen")().weights_dir == weights
    assert METHODS.get("gligen")(weights_dir=tmp_path).weights_dir == tmp_path  # the argument wins
    bench = write_tiny_bench(tmp_path, data_dir, samples=tiny_samples(2)[:1])
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--method",
            "gligen",
            "--bench",
            str(bench),
            "--data-dir",
            str(data_dir),
            "--detector",
            "none",
            "--out",
            str(tmp_path / "run"),
            "--param",
            "steps=2",
            "--param",
            "resolution=32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_result(tmp_path / "run").counts["generation_failures"] == 0
