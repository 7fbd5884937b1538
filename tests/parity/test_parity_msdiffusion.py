"""``msdiffusion`` against MS-Diffusion's own ``MSAdapter.generate`` (MS-Diffusion/MS-Diffusion @ 74eb2d6).

The adapter is made by the authors' code (``Resampler``, ``MaskedIPAttnProcessor2_0`` as their
training script installs them) and saved by their ``save_to_checkpoint`` as ``ms_adapter.bin``;
the base SDXL and CLIP image encoder are tiny diffusers folders (both sides load diffusers' SDXL).
picbench reads all three through ``--weights-dir``. Same sample (two subjects in boxes), seed and
steps on both sides; the stages are the CLIP image features, the resampler's tokens, the text and
image conditioning the UNet sees, every UNet call (inputs, times, predictions), the final latents
and the image. fp32 within 1e-4 of the largest final latent; fp16 (the authors' GPU dtype) bit
for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from parity_harness import assert_parity, compare_stages, run_side
from sd_capture import SDCapture

from picbench.records import Sample, Subject

DOG, CAT = "dreambench/dataset/dog/00.jpg", "dreambench/dataset/cat/00.jpg"
RESAMPLER = {"dim": 32, "depth": 1, "dim_head": 64, "heads": 1, "num_queries": 4}  # the authors' dim_head 64; 1280/4/20/16 released
SEED, STEPS, SIZE, SCALE, GUIDANCE = 0, 3, 64, 0.6, 7.5
STAGES = (
    "image_features",
    "resampler_tokens",
    "prompt_embeds",
    "image_tokens",
    "pooled",
    "time_ids",
    "timesteps",
    "step_inputs",
    "predictions",
    "latents",
    "image",
)
LATENT_STAGES = ("image_features", "resampler_tokens", "prompt_embeds", "image_tokens", "pooled", "step_inputs", "predictions", "latents")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR laid out for --weights-dir: tiny SDXL and image encoder, and the authors' ms_adapter.bin."""
    from picbench.adapters.msdiffusion import ADAPTER_FILE, ADAPTER_REPO, IMAGE_ENCODER_REPO, SDXL_REPO, build_tiny_checkpoints

    root = tmp_path_factory.mktemp("msdiffusion")
    base = build_tiny_checkpoints(root / "base")
    weights = root / "weights"
    for repo, target in ((SDXL_REPO, base["sdxl"]), (IMAGE_ENCODER_REPO, base["image_encoder"])):
        (weights / repo).parent.mkdir(parents=True, exist_ok=True)
        (weights / repo).symlink_to(target, target_is_directory=True)
    adapter = weights / ADAPTER_REPO / ADAPTER_FILE
    adapter.parent.mkdir(parents=True)
    settings = {"mode": "build", "dtype": "float32", "sdxl": str(base["sdxl"]), "image_encoder": str(base["image_encoder"])}
    run_side(
        "MS-Diffusion",
        "msdiffusion_side.py",
        root / "build",
        settings | {"resampler": RESAMPLER, "seed": 0, "perturb": 0.02, "out": str(adapter)},
    )
    return weights


def _sample() -> Sample:
    subjects = (Subject("dog", "dog", (DOG,), box=(0.0, 0.25, 0.45, 0.8)), Subject("cat", "cat", (CAT,), box=(0.5, 0.2, 1.0, 0.9)))
    return Sample("parity-ms", "a dog and a cat on the beach", SIZE, SIZE, "multi", subjects)


def _ours(weights: Path, dtype: torch.dtype, data_dir: Path) -> dict[str, torch.Tensor]:
    from flux_side import method_in

    from picbench.adapters.msdiffusion import MSDiffusionMethod

    method = method_in(MSDiffusionMethod, dtype)(weights_dir=weights, params={"steps": STEPS, "resolution": SIZE})
    model = method.load()
    features: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    hooks = [
        model.image_encoder.register_forward_hook(lambda m, a, out: features.append(out.hidden_states[-2])),
        model.resampler.register_forward_hook(lambda m, a, out: tokens.append(out)),
    ]
    capture = SDCapture(model.pipe)
    image = method.generate([_sample()], SEED, data_dir)[0]
    for hook in hooks:
        hook.remove()
    ours = capture.result()
    ours.update(image_features=features[0], resampler_tokens=tokens[0], image=torch.from_numpy(np.asarray(image).copy()))
    return ours


def _check(weights: Path, tmp_path: Path, data_dir: Path, dtype: torch.dtype) -> None:
    from picbench.adapters.msdiffusion import ADAPTER_FILE, ADAPTER_REPO, IMAGE_ENCODER_REPO, SDXL_REPO

    ours = _ours(weights, dtype, data_dir)
    sample = _sample()
    settings = {
        "mode": "run",
        "dtype": str(dtype).removeprefix("torch."),
        "sdxl": str((weights / SDXL_REPO).resolve()),
        "image_encoder": str((weights / IMAGE_ENCODER_REPO).resolve()),
        "adapter": str(weights / ADAPTER_REPO / ADAPTER_FILE),
        "resampler": RESAMPLER,
        "prompt": f"best quality, high quality, {sample.prompt}",  # inference.py's prompt prefix
        "phrases": [s.class_word for s in sample.subjects],
        "boxes": [list(s.box) for s in sample.subjects],
        "refs": [str(data_dir / s.references[0]) for s in sample.subjects],
        "steps": STEPS,
        "seed": SEED,
        "scale": SCALE,
        "guidance": GUIDANCE,
        "width": SIZE,
        "height": SIZE,
    }
    theirs = run_side("MS-Diffusion", "msdiffusion_side.py", tmp_path / "authors", settings)
    if dtype == torch.float32:
        tolerance = {
            **dict.fromkeys(STAGES, 1e-6),
            **dict.fromkeys(LATENT_STAGES, 1e-4 * float(theirs["latents"].abs().max())),
            "image": 1.0,
        }
    else:
        tolerance = dict.fromkeys(STAGES, 0.0)
    assert_parity("msdiffusion", f"{str(dtype).removeprefix('torch.')}, 2 subjects", compare_stages(ours, theirs, STAGES, tolerance))


def test_msdiffusion_matches_the_authors_in_fp32(weights: Path, tmp_path: Path, data_dir: Path) -> None:
    _check(weights, tmp_path, data_dir, torch.float32)


def test_msdiffusion_is_bit_exact_in_fp16(weights: Path, tmp_path: Path, data_dir: Path) -> None:
    _check(weights, tmp_path, data_dir, torch.float16)
