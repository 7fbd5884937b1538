"""``dreamo`` (v1.1, its default, and v1) against the authors' ``DreamOPipeline`` (bytedance/DreamO @ 461e35b).

Both sides load the same tiny files through their own loaders: FLUX.1-dev's diffusers folder, DreamO's
LoRA files in the released layouts (``dreamo.safetensors`` with the embeddings, the CFG-distill LoRA,
v1's quality LoRAs or v1.1's SFT/DPO LoRAs) and the Turbo LoRA with ``.alpha`` keys; picbench through
``--weights-dir``, the authors through ``load_dreamo_model`` (their conversion, fusing and T5
tokens), both fed picbench's text embeddings. DreamO publishes no code that writes weights, so the files come from picbench's
``write_tiny_checkpoints``. Same prompt, references (the authors' INTER_AREA area resize), seed,
and posterior draw for the references. fp32 within 1e-4 of the largest final latent; bf16 (the
authors' GPU dtype) bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flux_capture import FluxCapture
from flux_side import method_in
from parity_harness import assert_parity, compare_stages, run_side
from safetensors.torch import load_file, save_file

from picbench.records import Sample, Subject

DOG, CAT = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/cat/00.jpg"
SEED, STEPS, SIZE, REF_RES = 42, 3, 64, 96
STAGES = (
    "prompt_embeds",
    "pooled",
    "txt_ids",
    "img_ids",
    "noise",
    "ref_tokens",
    "timesteps",
    "guidance",
    "step_inputs",
    "predictions",
    "latents",
    "image",
)
LATENT_STAGES = ("prompt_embeds", "pooled", "noise", "ref_tokens", "step_inputs", "predictions", "latents")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR laid out for --weights-dir: FLUX.1-dev (tiny), ByteDance/DreamO (both versions' files), the Turbo LoRA."""
    from diffusers import FluxPipeline

    from picbench.adapters.dreamo import DREAMO_REPO, FLUX_REPO, TURBO_FILE, TURBO_REPO, write_tiny_checkpoints
    from picbench.tiny.flux import tiny_components

    root = tmp_path_factory.mktemp("dreamo") / "weights"
    flux = FluxPipeline(**tiny_components(seed=0))
    flux.save_pretrained(root / FLUX_REPO)
    dreamo = write_tiny_checkpoints(root / DREAMO_REPO, flux.transformer, flux.text_encoder_2.config.d_model)
    (root / TURBO_REPO).mkdir(parents=True)
    (dreamo / TURBO_FILE).rename(root / TURBO_REPO / TURBO_FILE)
    return root


@pytest.fixture(scope="module")
def weights_bf16(weights: Path) -> Path:
    """The same folder with DreamO's files stored in bf16: the authors' pipeline adds the task and index
    embeddings as stored to the bf16 hidden states, so it runs in bf16 only with a bf16 file."""
    from picbench.adapters.dreamo import DREAMO_REPO, FLUX_REPO, TURBO_REPO

    root = weights.parent / "weights-bf16"
    for repo in (FLUX_REPO, TURBO_REPO):
        (root / repo).parent.mkdir(parents=True, exist_ok=True)
        (root / repo).symlink_to(weights / repo, target_is_directory=True)
    for file in (weights / DREAMO_REPO).rglob("*.safetensors"):
        target = root / DREAMO_REPO / file.relative_to(weights / DREAMO_REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(file)).items()}, str(target))
    return root


def _sample() -> Sample:
    subjects = (Subject("dog", "dog", (DOG,)), Subject("cat", "cat", (CAT,)))
    return Sample("parity-dreamo", "a dog and a cat on the grass", SIZE, SIZE, "multi", subjects)


def _check(weights: Path, tmp_path: Path, data_dir: Path, version: str | None, dtype: torch.dtype) -> None:
    from picbench.adapters.dreamo import DreamOMethod

    params = {"steps": STEPS, "resolution": SIZE, "ref_res": REF_RES} | ({"version": version} if version else {})
    method = method_in(DreamOMethod, dtype)(weights_dir=weights, params=params)
    sample = _sample()
    model = method.load()
    capture = FluxCapture(model.pipe, (SIZE // 16) ** 2)
    image = method.generate([sample], SEED, data_dir)[0]
    ours = capture.result() | {"image": torch.from_numpy(np.asarray(image).copy())}
    draws = {k: v for k, v in ours.items() if k.startswith("draw.")}
    assert len(draws) == len(sample.subjects)  # one posterior draw per reference, handed to the authors
    settings = {
        "weights": str(weights),
        "version": method.params["version"],
        "dtype": str(dtype).removeprefix("torch."),
        "prompt": sample.prompt,
        "refs": [str(data_dir / s.references[0]) for s in sample.subjects],
        "ref_res": REF_RES,
        "steps": STEPS,
        "guidance": float(method.params["guidance"]),
        "seed": SEED,
        "width": SIZE,
        "height": SIZE,
    }
    fed = {"prompt_embeds": ours["prompt_embeds"], "pooled": ours["pooled"]}
    theirs = run_side("DreamO", "dreamo_side.py", tmp_path / "authors", settings, draws | fed)
    if dtype == torch.float32:
        latent = 1e-4 * float(theirs["latents"].double().abs().max())
        tolerance = {**dict.fromkeys(STAGES, 1e-6), **dict.fromkeys(LATENT_STAGES, latent), "txt_ids": 0.0, "img_ids": 0.0, "image": 1.0}
    else:
        tolerance = dict.fromkeys(STAGES, 0.0)
    mode = f"{method.params['version']}, {str(dtype).removeprefix('torch.')}, 2 references"
    assert_parity("dreamo", mode, compare_stages(ours, theirs, STAGES, tolerance))


@pytest.mark.parametrize("version", [None, "v1"], ids=["default-v1.1", "v1"])
def test_dreamo_matches_the_authors_in_fp32(weights: Path, tmp_path: Path, data_dir: Path, version: str | None) -> None:
    _check(weights, tmp_path, data_dir, version, torch.float32)


@pytest.mark.parametrize("version", [None, "v1"], ids=["default-v1.1", "v1"])
def test_dreamo_is_bit_exact_in_bf16(weights_bf16: Path, tmp_path: Path, data_dir: Path, version: str | None) -> None:
    _check(weights_bf16, tmp_path, data_dir, version, torch.bfloat16)
