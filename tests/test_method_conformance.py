"""One conformance suite over every registered method: what the runner relies on, checked the same
way for all of them on real DreamBench references with tiny random-weight models (1-2 steps).

- images have each sample's size (or its aspect ratio, for a method with ``exact_size = False``);
- the same (sample, seed) gives the same image whatever the batch it comes in, and another seed
  another image (unless the method declares ``seeded = False``);
- offline with no weights, loading fails with a MissingWeightsError naming a checkpoint;
- an unknown parameter is refused when the method is built; smoke parameters are declared ones,
  and explicit parameters win over them;
- the dtype: float32 on CPU and in smoke runs, the method's pinned dtype on CUDA.
Per-method tests keep what is particular to each method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from grounded_samples import _one_thread  # noqa: F401 (autouse fixture)
from PIL import Image

from picbench.errors import MissingWeightsError
from picbench.methods import METHODS, Method
from picbench.methods.base import same_aspect
from picbench.records import Sample, Subject

NAMES = METHODS.names()
DOG, BACKPACK = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/backpack/00.jpg"
# a shorter schedule for the methods whose smoke defaults keep the full one (FLUX: 25 steps)
FAST: dict[str, dict[str, Any]] = {"positionic": {"steps": 2, "ref_long_side": 32}, "uno": {"steps": 2, "ref_long_side": 32}}
# the CUDA dtype of each built-in method, as its authors release and run it
CUDA_DTYPES = {
    "gligen": "float16",
    "instancediffusion": "float16",
    "msdiffusion": "float16",
    "dreamo": "bfloat16",
    "positionic": "bfloat16",
    "uno": "bfloat16",
    "paste": "float32",
    "images": "float32",
}


def _samples() -> list[Sample]:
    pair = Sample(
        "pair",
        "a dog and a backpack in the jungle",
        64,
        64,
        "multi",
        (
            Subject("dog", "dog", (DOG,), box=(0.05, 0.3, 0.55, 0.95), depth=0),
            Subject("backpack", "backpack", (BACKPACK,), box=(0.4, 0.1, 0.95, 0.7), depth=1),
        ),
    )
    portrait = Sample(
        "portrait",
        "a backpack on a beach",
        48,
        64,
        "single",
        (Subject("backpack", "backpack", (BACKPACK,), box=(0.1, 0.2, 0.9, 0.8), depth=0),),
    )
    return [pair, portrait]


def _images_folder(folder: Path) -> Path:
    """The ``images`` method's input: FOLDER/seed<S>/<id>.png, other pixels per seed."""
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        for sample in _samples():
            (folder / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (sample.height, sample.width, 3), dtype=np.uint8)).save(
                folder / f"seed{seed}" / f"{sample.id}.png"
            )
    return folder


def _build(name: str, tmp: Path, **kwargs: Any) -> Method:
    params = {**FAST.get(name, {}), **kwargs.pop("params", {})}
    if name == "images":
        params.setdefault("dir", str(_images_folder(tmp / "images")))
    return METHODS.get(name)(params=params, **kwargs)


@pytest.fixture(scope="module", params=NAMES)
def generated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    """Each method's images, once per module: the batch of both samples at seed 0, each sample
    alone at seed 0, the first at seed 1."""
    name = request.param
    method = _build(name, tmp_path_factory.mktemp(name), models="tiny")
    samples = [s for s in _samples() if method.supports(s) is None]
    pixels = lambda images: [np.asarray(im.convert("RGB")) for im in images]  # noqa: E731
    return {
        "method": method,
        "samples": samples,
        "batch": method.generate(samples, seed=0, data_root=data_dir),
        "alone": [method.generate([s], seed=0, data_root=data_dir)[0] for s in samples],
        "other_seed": method.generate(samples[:1], seed=1, data_root=data_dir)[0],
        "pixels": pixels,
    }


def test_one_image_per_sample_of_its_size(generated: dict[str, Any]) -> None:
    method, samples, batch = generated["method"], generated["samples"], generated["batch"]
    assert samples, f"{method.name} serves none of the conformance samples"
    assert len(batch) == len(samples)
    for sample, image in zip(samples, batch):
        target = (sample.width, sample.height)
        assert image.size == target or (not method.exact_size and same_aspect(image.size, target)), (method.name, sample.id, image.size)


def test_same_seed_same_image_whatever_the_batch(generated: dict[str, Any]) -> None:
    pixels = generated["pixels"]
    for in_batch, alone in zip(pixels(generated["batch"]), pixels(generated["alone"])):
        assert np.array_equal(in_batch, alone), generated["method"].name


def test_another_seed_another_image_unless_unseeded(generated: dict[str, Any]) -> None:
    method, pixels = generated["method"], generated["pixels"]
    first, other = pixels([generated["batch"][0], generated["other_seed"]])
    assert np.array_equal(first, other) is (not method.seeded), method.name


@pytest.mark.parametrize("name", NAMES)
def test_offline_without_weights_the_error_names_a_checkpoint(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    method = _build(name, tmp_path, weights_dir=tmp_path / "no-weights")
    if not method.checkpoints:
        with pytest.raises(NotImplementedError, match="no networks"):  # nothing to load: it runs offline as it is
            method.load()
        return
    with pytest.raises(MissingWeightsError) as missing:
        method.load()
    named = [c.split(" ")[0] for c in method.checkpoints.values()]
    assert any(c in str(missing.value) for c in named), (str(missing.value), named)
    assert not method.loaded


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['no_such_parameter'\]"):
        _build(name, tmp_path, models="tiny", params={"no_such_parameter": 1})


@pytest.mark.parametrize("name", NAMES)
def test_smoke_parameters_are_declared_and_explicit_ones_win(name: str, tmp_path: Path) -> None:
    cls = METHODS.get(name)
    assert set(cls.smoke_params) <= set(cls.default_params), name
    smoke = _build(name, tmp_path, models="tiny")
    full = _build(name, tmp_path)
    for key, value in cls.smoke_params.items():
        if key not in FAST.get(name, {}):
            assert smoke.params[key] == value and full.params[key] == cls.default_params[key], (name, key)
            assert _build(name, tmp_path, models="tiny", params={key: cls.default_params[key]}).params[key] == cls.default_params[key]


@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_float32_off_cuda_and_in_smoke_runs(name: str, tmp_path: Path) -> None:
    import torch

    assert METHODS.get(name).cuda_dtype == CUDA_DTYPES[name]
    assert _build(name, tmp_path, device="cuda:1").dtype == getattr(torch, CUDA_DTYPES[name])  # built, not loaded: no GPU needed
    assert _build(name, tmp_path, device="cpu").dtype == torch.float32
    assert _build(name, tmp_path, models="tiny", device="cuda").dtype == torch.float32
