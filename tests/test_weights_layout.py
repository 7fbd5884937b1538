"""One weights layout: FLUX.1-dev stored once, as DIR/black-forest-labs/FLUX.1-dev (tiny random
files in the released diffusers layout), serves `picbench run`, `picbench train` and `picbench data
build bmpds`, with the hub offline and an empty Hugging Face cache; every other model sits beside it
as DIR/<hub id>. Without the folder, each names the `picbench weights download` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_bench_helpers import tiny_samples, write_tiny_bench
from safetensors.torch import save_file
from train_helpers import tiny_config
from typer.testing import CliRunner

from picbench.cli import app
from picbench.pairs import read_pairs
from picbench.results import load_result

pytestmark = pytest.mark.slow  # three real loads of a tiny FLUX, a training run and a BMPDS build: minutes on a CPU

FLUX_DEV = "black-forest-labs/FLUX.1-dev"
UNO = "bytedance-research/UNO"


def _link(target: Path, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(target, target_is_directory=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/<hub id> for FLUX.1-dev (written once, here), UNO's LoRA and every model of the three verbs."""
    root = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as patch:  # the test home of conftest's _isolated_home, never ~/.cache
        patch.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        _fill(root)
    return root


def _fill(root: Path) -> None:
    from diffusers import FluxPipeline

    from picbench.metrics.detectors import DETECTORS
    from picbench.metrics.weights import hub_id
    from picbench.reference_impl.bmpds.roles import HUB_IDS
    from picbench.reference_impl.lora import random_uno_lora
    from picbench.tiny.data_models import tiny_data_weights
    from picbench.tiny.flux import tiny_components
    from picbench.tiny.metric_models import tiny_weights

    flux = FluxPipeline(**tiny_components(seed=0))
    flux.save_pretrained(root / FLUX_DEV)
    (root / UNO).mkdir(parents=True)
    save_file(random_uno_lora(flux.transformer, rank=4, seed=5), str(root / UNO / "dit_lora.safetensors"))
    _link(tiny_data_weights("sam"), root / HUB_IDS["segmenter"])
    _link(tiny_data_weights("flux_fill"), root / HUB_IDS["outpainter"])
    detector = DETECTORS.get("grounding-dino")
    _link(detector.smoke_folder(), root / detector.hub_id)
    for role in ("clip", "dino"):
        _link(tiny_weights(role), root / hub_id(role))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub, an empty cache and no $PICBENCH_WEIGHTS_DIR: only the folder a command is given serves it."""
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)


def _text(output: str) -> str:
    return " ".join(output.split())


def test_flux_is_stored_once(weights: Path) -> None:
    indexes = sorted(p.parent.relative_to(weights) for p in weights.rglob("model_index.json") if "Fill" not in str(p.resolve()))
    assert indexes == [Path(FLUX_DEV)]
    assert not any((weights / role).exists() for role in ("renderer", "clip", "dino", "detector", "segmenter", "outpainter"))


def test_run_reads_flux_from_the_weights_dir(weights: Path, offline: None, tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, samples=tiny_samples(2)[:1])

    def run(folder: Path, out: Path):
        args = ["run", "--method", "positionic", "--bench", str(bench), "--data-dir", str(data_dir), "--weights-dir", str(folder)]
        return CliRunner().invoke(app, [*args, "--detector", "none", "--out", str(out), "--param", "steps=2"])

    done = run(weights, tmp_path / "run")
    assert done.exit_code == 0, done.output
    result = load_result(tmp_path / "run")
    assert result.smoke is False and result.counts["generation_failures"] == 0 and result.metrics["clip_i"] is not None
    refused = run(tmp_path / "empty", tmp_path / "run2")
    assert refused.exit_code == 2
    assert "picbench weights download" in _text(refused.output) and str(tmp_path / "empty") in _text(refused.output)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    from picbench.pairs.paste import build_paste_pairs

    out = tmp_path_factory.mktemp("pairs") / "paste-pairs"
    build_paste_pairs(data_dir, out, seed=0, n_multi=2, n_single=1)
    return out


def test_train_reads_flux_and_the_uno_lora_from_the_weights_dir(weights: Path, offline: None, tmp_path: Path, pairs: Path) -> None:
    def train(folder: Path, name: str):
        (tmp_path / name).mkdir()
        config = tiny_config(tmp_path / name, pairs, top={"models": "default", "weights_dir": str(folder)}, model={"base": FLUX_DEV})
        return CliRunner().invoke(app, ["train", str(config), "--no-progress"])

    done = train(weights, "a")
    assert done.exit_code == 0, done.output
    assert "trained 12 steps" in _text(done.output)
    refused = train(tmp_path / "empty", "b")
    assert refused.exit_code == 2
    assert "picbench weights download positionic" in _text(refused.output) and str(tmp_path / "empty" / FLUX_DEV) in _text(refused.output)


BMPDS = """
name = "bmpds-layout"
seed = 0
size = 64
weights_dir = {weights}
[sources]
subjects = ["dreambench"]
[stages]
single = 1
forward = 0
backward = 1
[roles]
steps = 2
fill_steps = 2
detector_threshold = 0.0
max_sequence_length = 16
subject_params = {{steps = 2, ref_long_side = 64}}
[filter]
keep_top = 1.0
"""


def test_data_build_bmpds_reads_flux_from_the_weights_dir(weights: Path, offline: None, tmp_path: Path, data_dir: Path) -> None:
    from picbench.reference_impl.bmpds.roles import folder_hash

    def build(folder: Path, name: str):
        config = tmp_path / f"{name}.toml"
        config.write_text(BMPDS.format(weights=json.dumps(str(folder))))
        return CliRunner().invoke(app, ["data", "build", "bmpds", str(config), "--out", str(tmp_path / name), "--data-dir", str(data_dir)])

    done = build(weights, "built")
    assert done.exit_code == 0, done.output
    models = {s.id: s.meta["bmpds"]["models"] for s in read_pairs(tmp_path / "built").samples}
    assert sorted(models) == ["backward-00000", "single-00000"], models
    assert models["backward-00000"]["renderer"] == {"weights_sha256": folder_hash(weights / FLUX_DEV)}  # the renderer's FLUX.1-dev
    assert all(m["subject"]["method"] == "uno" and m["models"] == "default" for m in models.values())  # uno: the same folder
    refused = build(tmp_path / "empty", "refused")
    assert refused.exit_code == 2
    assert "picbench weights download --data" in _text(refused.output) and str(tmp_path / "empty") in _text(refused.output)
