"""``instancediffusion`` against the authors' LDM code (frank-xwang/InstanceDiffusion @ 722900e).

picbench rebuilds InstanceDiffusion on diffusers (a gated ``UNet2DConditionModel``, its own
``InstanceFusion`` and ``ScaleU``, diffusers' PNDM in PLMS mode); the authors run their LDM
``UNetModel`` with ``UniFusion`` under their ``PLMSSamplerInst``. The tiny weights are made by the
authors' code (their ``configs/test_box.yaml`` at tiny widths) and saved in the released ``.pth``
container; picbench reads that file and a tiny SD 1.5 folder through ``--weights-dir``. Both sides
get the same text embeddings (picbench's tiny CLIP: the authors' text encoders are not theirs),
boxes, phrases and seed. Stages: the initial noise; per trajectory (the full layout, then each
instance of the multi-instance sampler) the grounding input the UNet receives and the grounding
tokens ``position_net`` makes of it (conditional and null); the PLMS schedule (time, alpha-bar and
the previous alpha-bar per step); every UNet evaluation's input, time and both CFG predictions; the
final latents; the 8-bit image (the authors decode with their LDM autoencoder, picbench with
diffusers' conversion of it). fp32, within 1e-4 of the largest final latent; the image within one
grey level, its mean within 0.02.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ldm_vae import IMAGE_STAGES, IMAGE_TOLERANCE, TINY_DDCONFIG, image_stages, sd_folder_with_authors_vae
from parity_harness import assert_parity, checkout, compare_stages, dog_and_cat, run_side

UNET = {
    "image_size": 32,
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [1, 2],
    "num_heads": 8,
    "context_dim": 32,
}
"""The authors' UNetModel at picbench's tiny SD shape (``tiny_sd_unet``: 32/64 channels, one layer per level, 8 heads)."""
FUSION = {"in_dim": 32, "out_dim": 32, "mid_dim": 64}  # released: 768 / 768 / 3072
SEG_FEATURE_DIM = 64  # released: 3072 (convnext_tiny's features)
SIZE, SEED, GUIDANCE = 64, 7, 7.5
GROUNDING = tuple(f"grounding_{name}_{kind}" for kind in ("cond", "null") for name in ("boxes", "masks", "embeddings", "tokens"))
STAGES = ("noise", *GROUNDING, "schedule", "timesteps", "step_inputs", "predictions", "latents", *IMAGE_STAGES)
EXACT = ("noise", *(g for g in GROUNDING if "tokens" not in g), "timesteps")
"""Given, not computed: the noise (same seeded draw), the grounding input (picbench's embeddings in the authors' slots), the times."""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR laid out for --weights-dir: a tiny SD 1.5 folder and the authors' tiny ``instancediffusion_sd15.pth``."""
    checkout("InstanceDiffusion")  # skips here, before any import or building, when the suite is off
    from picbench.adapters.instancediffusion import (
        INSTANCEDIFFUSION_CHECKPOINT,
        INSTANCEDIFFUSION_FILE,
        SD15_CHECKPOINT,
        build_tiny_instancediffusion,
    )

    root = tmp_path_factory.mktemp("instancediffusion")
    base = build_tiny_instancediffusion(root / "base")  # its own random .pth is not used
    weights = root / "weights"
    checkpoint = weights / INSTANCEDIFFUSION_CHECKPOINT / INSTANCEDIFFUSION_FILE
    checkpoint.parent.mkdir(parents=True)
    settings = {"mode": "build", "unet": UNET, "fusion": FUSION, "seg_feature_dim": SEG_FEATURE_DIM, "text_dim": FUSION["in_dim"]}
    settings |= {"ddconfig": TINY_DDCONFIG, "seed": 0, "gate_std": 0.5, "zero_std": 0.05, "out": str(checkpoint)}
    run_side("InstanceDiffusion", "instancediffusion_side.py", root / "build", settings)
    autoencoder = torch.load(checkpoint, map_location="cpu", weights_only=False)["autoencoder"]
    sd_folder_with_authors_vae(base, autoencoder, weights / SD15_CHECKPOINT)  # the SD 1.5 folder, the authors' VAE in it
    return weights


class PicbenchRecorder:
    """The same records as the authors' side, from hooks on picbench's model: trajectories are told
    apart by their text context (one tensor per trajectory), rows 0/1 of each call are the
    conditional and the null halves of classifier-free guidance."""

    def __init__(self, model: Any) -> None:
        self.branch_of: dict[int, int] = {}
        self.contexts: list[torch.Tensor] = []  # per trajectory: its [prompt, negative prompt] text states
        self.evals: list[list[dict[str, torch.Tensor]]] = []
        self.grounding: list[dict[str, torch.Tensor]] = []
        self.latents: list[torch.Tensor] = []
        self.handles = [
            model.unet.register_forward_pre_hook(self._before, with_kwargs=True),
            model.unet.register_forward_hook(self._after),
            model.unet.position_net.register_forward_hook(self._tokens, with_kwargs=True),
        ]
        decode, factor = model.vae.decode, model.vae.config.scaling_factor

        def decode_recorded(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.latents.append(latents * factor)
            return decode(latents, *args, **kwargs)

        model.vae.decode = decode_recorded

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        context = kwargs["encoder_hidden_states"]
        if id(context) not in self.branch_of:
            self.branch_of[id(context)] = len(self.evals)
            self.contexts.append(context)
            self.evals.append([])
            self.grounding.append({})
        self.current = self.branch_of[id(context)]
        sample, t = args[0], args[1]
        self.evals[self.current].append({"x": sample[:1].clone(), "t": torch.as_tensor(t).reshape(-1)[:1].double()})

    def _tokens(self, module: Any, args: Any, kwargs: dict[str, Any], output: torch.Tensor) -> None:
        record = self.grounding[self.current]
        if not record:
            for kind, row in (("cond", 0), ("null", 1)):
                record.update(
                    {
                        f"{name}_{kind}": kwargs[key][row : row + 1].clone()
                        for name, key in (("boxes", "boxes"), ("masks", "masks"), ("embeddings", "positive_embeddings"))
                    }
                )
                record[f"tokens_{kind}"] = output[row : row + 1].clone()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        self.evals[self.current][-1]["predictions"] = output.sample.clone()

    def stages(self, scheduler: Any, steps: int) -> dict[str, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        out = {f"grounding_{key}": torch.cat([g[key] for g in self.grounding]) for key in self.grounding[0]}
        evals = [e for branch in self.evals for e in branch]
        out.update(
            timesteps=torch.cat([e["t"] for e in evals]),
            step_inputs=torch.cat([e["x"] for e in evals]),
            predictions=torch.stack([e["predictions"] for e in evals]),
            latents=self.latents[-1],
            evaluations_per_branch=torch.tensor([len(b) for b in self.evals]),
        )
        # the PLMS schedule as PNDM applies it: each step from t to t - 1000 // steps, alpha-bar of
        # a negative time being final_alpha_cumprod (alphas_cumprod[0] with set_alpha_to_one=False)
        times = sorted({int(t) for t in scheduler.timesteps}, reverse=True)
        ratio = scheduler.config.num_train_timesteps // steps
        bar = scheduler.alphas_cumprod.double()
        prev = [bar[t - ratio] if t - ratio >= 0 else torch.as_tensor(scheduler.final_alpha_cumprod).double() for t in times]
        out["schedule"] = torch.stack([torch.tensor(times).double(), bar[times], torch.stack(prev)], dim=1)
        return out


def _check(weights: Path, tmp_path: Path, steps: int, alpha: float, mis: float) -> None:
    from picbench.adapters.instancediffusion import (
        AUTHORS_NEGATIVE_PROMPT,
        INSTANCEDIFFUSION_CHECKPOINT,
        INSTANCEDIFFUSION_FILE,
        SD15_CHECKPOINT,
        InstanceDiffusionMethod,
        initial_noise,
        read_sd_conv_in,
    )

    sample = dog_and_cat("parity-instancediffusion", SIZE)
    method = InstanceDiffusionMethod(
        weights_dir=weights, params={"resolution": SIZE, "guidance_scale": GUIDANCE, "steps": steps, "alpha": alpha, "mis": mis}
    )
    model = method.load()
    recorder = PicbenchRecorder(model)
    image = method.generate([sample], SEED, tmp_path)[0]
    ours = recorder.stages(model.scheduler, steps) | image_stages(image)
    ours["noise"] = initial_noise(SEED, SIZE, SIZE, model.latent_factor) * model.scheduler.init_noise_sigma

    branches = recorder.contexts  # the full layout, then each instance
    n = len(sample.subjects)
    conv_in = tmp_path / "SD_v1_5_input_conv_weight_bias.pth"  # the file restore_first_conv_from_SD reads, from the tiny SD 1.5
    torch.save(read_sd_conv_in(weights / SD15_CHECKPOINT), conv_in)
    tensors = {
        "context": branches[0][:1],
        "uncond": branches[0][1:],
        "instance_context": torch.cat([b[:1] for b in branches[1:]]),
        "instance_pooled": ours["grounding_embeddings_cond"][0, :n],
    }
    settings = {
        "mode": "run",
        "checkpoint": str(weights / INSTANCEDIFFUSION_CHECKPOINT / INSTANCEDIFFUSION_FILE),
        "sd_conv_in": str(conv_in),
        "seg_feature_dim": SEG_FEATURE_DIM,
        "text_dim": FUSION["in_dim"],
        "prompt": sample.prompt,
        "negative_prompt": AUTHORS_NEGATIVE_PROMPT,
        "phrases": [s.class_word for s in sample.subjects],
        "boxes": [list(s.box) for s in sample.subjects],
        "width": 512,
        "height": 512,
        "latent_size": SIZE // model.latent_factor,
        "steps": steps,
        "seed": SEED,
        "guidance": GUIDANCE,
        "alpha": alpha,
        "mis": mis,
    }
    theirs = run_side("InstanceDiffusion", "instancediffusion_side.py", tmp_path / "authors", settings, tensors)
    assert torch.equal(ours["evaluations_per_branch"], theirs["evaluations_per_branch"]), (
        f"trajectories differ: UNet evaluations per trajectory ours {ours['evaluations_per_branch'].tolist()}, "
        f"authors' {theirs['evaluations_per_branch'].tolist()}"
    )
    latent_tolerance = 1e-4 * float(theirs["latents"].abs().max())
    tolerance = {**dict.fromkeys(STAGES, latent_tolerance), **dict.fromkeys(EXACT, 0.0), "schedule": 1e-6, **IMAGE_TOLERANCE}
    assert_parity(
        "instancediffusion", f"fp32, {n} boxes, {steps} steps, alpha {alpha}, mis {mis}", compare_stages(ours, theirs, STAGES, tolerance)
    )


@pytest.mark.parametrize(
    ("steps", "alpha", "mis"),
    [
        # steps divide 1000: the authors' schedule is range(0, 1000, 1000 // S) + 1, S steps only then
        pytest.param(4, 1.0, 0.36, id="defaults"),  # picbench's defaults: grounded throughout, multi-instance for int(0.36 * 4) = 1 step
        pytest.param(4, 0.5, 0.5, id="alpha0.5"),  # grounding off after 2 of 4 steps (SD's first convolution back), 2 multi-instance steps
    ],
)
def test_instancediffusion_matches_the_authors_in_fp32(weights: Path, tmp_path: Path, steps: int, alpha: float, mis: float) -> None:
    _check(weights, tmp_path, steps, alpha, mis)
