"""GLIGEN adapter: argument translation, scheduled sampling, tiny end-to-end runs on real
DreamBench references, and the offline missing-checkpoint error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from grounded_samples import BOXES, _one_thread, dreambench_multi_sample  # noqa: F401 (autouse fixture)

from picbench.adapters.gligen import (
    GligenMethod,
    build_tiny_gligen,
    gligen_call,
    grounding_steps,
    plms_scheduler,
)
from picbench.errors import MissingWeightsError
from picbench.methods.sd_grounding import generation_size, plms_step
from picbench.records import Sample, Subject


def test_translation_keeps_boxes_phrases_and_first_references(data_dir: Path) -> None:
    sample = dreambench_multi_sample(data_dir, 512, 512)
    call = gligen_call(sample, 512)
    assert call.prompt == sample.prompt == "a backpack and a stuffed animal in the jungle"
    assert call.phrases == ("backpack", "stuffed animal")
    assert call.boxes == BOXES  # normalised xyxy, GLIGEN's own format
    assert call.reference_paths == tuple(s.references[0] for s in sample.subjects)
    assert all((data_dir / p).is_file() for p in call.reference_paths)
    assert (call.width, call.height) == (512, 512)


@pytest.mark.parametrize(
    ("size", "resolution", "expected"),
    [((512, 512), 512, (512, 512)), ((1024, 768), 512, (512, 384)), ((100, 60), 512, (512, 304)), ((64, 64), 32, (32, 32))],
)
def test_generation_size_keeps_aspect_in_multiples_of_8(size, resolution, expected) -> None:
    assert generation_size(*size, resolution) == expected


def test_sample_without_boxes_gets_the_fallback_layout(data_dir: Path) -> None:
    sample = dreambench_multi_sample(data_dir)
    unboxed = Sample(sample.id, sample.prompt, 64, 64, "multi", tuple(Subject(s.name, s.class_word, s.references) for s in sample.subjects))
    method = GligenMethod(models="tiny")
    assert method.supports(unboxed) is None and method.supports(sample) is None
    with pytest.raises(ValueError, match="dreambench-multi-0"):
        gligen_call(unboxed, 512)
    call = gligen_call(unboxed.with_fallback_layout(), 512)
    assert call.boxes == ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0))


def test_scheduled_sampling_steps_and_validation() -> None:
    assert grounding_steps(50, 0.3) == 15  # gligen_inference.py alpha_generator: int(0.3 * 50) steps of alpha 1
    assert grounding_steps(3, 0.5) == 1
    assert grounding_steps(3, 1.0) == 3
    with pytest.raises(ValueError, match="scheduled_sampling_beta"):
        GligenMethod(params={"scheduled_sampling_beta": 0.0})
    with pytest.raises(ValueError, match="variant"):
        GligenMethod(params={"variant": "inpaint"})


def test_authors_schedule_per_variant_and_negative_prompt() -> None:
    """gligen/GLIGEN @ f9dccb9 gligen_inference.py: alpha_type [1,0,0] (text-image) and
    [0.3,0,0.7] (text-box), and its --negative_prompt default."""
    text_image, text_box = GligenMethod(), GligenMethod(params={"variant": "text-box"})
    assert text_image.params["scheduled_sampling_beta"] == 1.0 and text_box.params["scheduled_sampling_beta"] == 0.3
    assert grounding_steps(50, text_image.params["scheduled_sampling_beta"]) == 50  # grounded at every step
    assert (
        text_image.params["negative_prompt"]
        == text_box.params["negative_prompt"]
        == ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality")
    )
    assert GligenMethod(params={"scheduled_sampling_beta": 0.5}).params["scheduled_sampling_beta"] == 0.5
    assert text_image.cache_params()["scheduled_sampling_beta"] == 1.0  # the resolved value keys the cache


def _fuser_states(method: GligenMethod) -> list[bool]:
    """Record, per UNet call, whether the first gated fuser was switched on."""
    from diffusers.models.attention import GatedSelfAttentionDense

    fuser = next(m for m in method.load().unet.modules() if isinstance(m, GatedSelfAttentionDense))
    states: list[bool] = []
    fuser.register_forward_pre_hook(lambda module, args: states.append(module.enabled))
    return states


def test_text_image_end_to_end_tiny(data_dir: Path) -> None:
    method = GligenMethod(models="tiny", params={"steps": 2, "resolution": 32, "scheduled_sampling_beta": 0.5})
    assert method.smoke and method.capabilities.references
    sample = dreambench_multi_sample(data_dir)
    states = _fuser_states(method)
    first = method.generate([sample], seed=3, data_root=data_dir)
    assert len(first) == 1 and first[0].size == (64, 64) and first[0].mode == "RGB"
    # 2 PLMS steps = 3 PNDM entries (the first step takes two), beta 0.5 -> 1 grounded PLMS step
    # (entries 0 and 1), then plain; two UNet calls per entry (with and without grounding).
    # diffusers' text-image pipeline alone never turns it off.
    assert states == [True, True, True, True, False, False]


def test_sampler_is_the_authors_plms_whatever_scheduler_the_folder_ships(tmp_path: Path) -> None:
    """gligen/GLIGEN @ f9dccb9, gligen_inference.py:385-390: PLMSSampler with steps = 50 unless
    --no_plms; ldm/modules/diffusionmodules/util.py:55-66 make_ddim_timesteps('uniform'):
    range(0, 1000, 1000 // steps) + 1; ldm/models/diffusion/plms.py: alphas_prev starts at
    alphas_cumprod[0]. The folder ships DDIM (as diffusers' GLIGEN conversion writes)."""
    import json

    from diffusers import PNDMScheduler

    folder = build_tiny_gligen(tmp_path / "weights" / "masterful" / "gligen-1-4-generation-text-box", "text-box")
    shipped = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert shipped["_class_name"] == "DDIMScheduler"
    method = GligenMethod(params={"variant": "text-box"}, weights_dir=tmp_path / "weights")
    scheduler = method.load().scheduler
    assert isinstance(scheduler, PNDMScheduler) and scheduler.config.skip_prk_steps
    assert method.default_params["steps"] == 50 and method.version == "3"  # version 1 sampled with the folder's DDIM
    scheduler.set_timesteps(50)
    authors = (np.arange(0, 1000, 1000 // 50) + 1)[::-1].tolist()  # time_range = np.flip(ddim_timesteps)
    entries = scheduler.timesteps.tolist()
    assert [entries[0], *entries[2:]] == authors and entries[1] == entries[2]  # PLMS's first step: two entries
    assert [plms_step(j) for j in range(len(entries))][:3] == [0, 0, 1] and plms_step(len(entries) - 1) == 49
    assert float(scheduler.final_alpha_cumprod) == float(scheduler.alphas_cumprod[0])
    # a folder whose scheduler says otherwise keeps only its noise schedule
    odd = plms_scheduler({**shipped, "steps_offset": 0, "set_alpha_to_one": True, "timestep_spacing": "trailing", "beta_end": 0.02})
    odd.set_timesteps(50)
    assert [odd.timesteps[0].item(), *odd.timesteps[2:].tolist()] == authors and float(odd.final_alpha_cumprod) < 1.0
    assert not torch.allclose(odd.alphas_cumprod, scheduler.alphas_cumprod)  # the checkpoint's betas are kept


def _ldm_plms(eps, x: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """LDM's PLMS as gligen/GLIGEN @ f9dccb9 ldm/models/diffusion/plms.py writes it (eta 0): timesteps
    make_ddim_timesteps uniform (util.py:55-66), alphas_prev from alphas_cumprod[0] (util.py:72-75),
    DDIM update get_x_prev_and_pred_x0 (plms.py:125-139), pseudo improved Euler first (:144-148),
    then Adams-Bashforth of orders 2-4 over the e_t history (:150-158), history of e_t (:104)."""
    ddim = np.arange(0, 1000, 1000 // steps) + 1
    a = alphas_cumprod.double()
    alphas, alphas_prev = a[ddim], torch.cat([a[:1], a[ddim[:-1]]])

    def ddim_step(x: torch.Tensor, e: torch.Tensor, index: int) -> torch.Tensor:
        pred_x0 = (x - (1 - alphas[index]).sqrt() * e) / alphas[index].sqrt()
        return alphas_prev[index].sqrt() * pred_x0 + (1 - alphas_prev[index]).sqrt() * e

    old: list[torch.Tensor] = []
    time_range = ddim[::-1]
    for i, t in enumerate(time_range):
        index, t_next = steps - i - 1, time_range[min(i + 1, steps - 1)]
        e_t = eps(x, int(t))
        if not old:
            e_prime = (e_t + eps(ddim_step(x, e_t, index), int(t_next))) / 2
        elif len(old) == 1:
            e_prime = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = ddim_step(x, e_prime, index)
        old = (old + [e_t])[-3:]
    return x


def test_plms_scheduler_samples_as_the_authors_plms_sampler() -> None:
    """The same noise-prediction function sampled by the authors' PLMS and by :func:`plms_scheduler`
    (diffusers' PNDM, entry by entry as the pipelines call it) reaches the same latents."""
    from picbench.tiny.sd import sd_ddim_scheduler

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        return torch.sin(x * 1.3 + t / 250.0) * 0.8

    x_t = torch.randn((1, 4, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scheduler = plms_scheduler(sd_ddim_scheduler().config)
    scheduler.set_timesteps(10)
    x = x_t.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(eps(x, int(t)), t, x).prev_sample
    authors = _ldm_plms(eps, x_t, scheduler.alphas_cumprod, 10)
    assert torch.allclose(x, authors, atol=1e-5) and not torch.allclose(x, x_t, atol=1e-2)


def test_text_box_scheduled_sampling_counts_the_authors_plms_steps(data_dir: Path) -> None:
    """alpha_type [0.3, 0, 0.7] over 10 PLMS steps: int(0.3 * 10) = 3 grounded steps = PNDM entries
    0-3 (the first step takes two), then 7 plain entries; one UNet call per entry."""
    method = GligenMethod(models="tiny", params={"variant": "text-box", "steps": 10, "resolution": 32})
    states = _fuser_states(method)
    method.generate([dreambench_multi_sample(data_dir)], seed=0, data_root=data_dir)
    assert states == [True] * 4 + [False] * 7


def test_text_box_variant_end_to_end_tiny(data_dir: Path) -> None:
    method = GligenMethod(models="tiny", params={"variant": "text-box", "steps": 2, "resolution": 32})
    assert method.capabilities.references is False
    assert method.checkpoint == "masterful/gligen-1-4-generation-text-box"
    images = method.generate([dreambench_multi_sample(data_dir, 48, 40)], seed=0, data_root=data_dir)
    assert images[0].size == (48, 40)
    assert np.asarray(images[0]).std() > 0


def test_released_folder_loads_from_weights_dir(data_dir: Path, tmp_path: Path) -> None:
    """The non-smoke path: a diffusers-format GLIGEN folder (tiny random contents) found under
    --weights-dir by its hub id."""
    build_tiny_gligen(tmp_path / "weights" / "masterful" / "gligen-1-4-generation-text-box", "text-box")
    method = GligenMethod(params={"variant": "text-box", "steps": 2, "resolution": 32}, weights_dir=tmp_path / "weights")
    assert not method.smoke
    images = method.generate([dreambench_multi_sample(data_dir)], seed=0, data_root=data_dir)
    assert images[0].size == (64, 64)


def test_missing_checkpoint_offline_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    method = GligenMethod(params={"variant": "text-box"}, weights_dir=tmp_path / "weights")
    with pytest.raises(MissingWeightsError, match="masterful/gligen-1-4-generation-text-box") as info:
        method.load()
    assert "--weights-dir" in str(info.value)
