"""``gligen`` (text-box and text-image variants) against the authors' LDM code (gligen/GLIGEN @ f9dccb9).

picbench runs GLIGEN through diffusers' GLIGEN pipelines on diffusers folders (the released models
are published that way: ``masterful/gligen-1-4-generation-text-box``, ``anhnct/Gligen_Text_Image``),
with PNDM in PLMS mode and the authors' scheduled sampling applied by a UNet pre-hook. The tiny
weights are made by the authors' code (their ``UNetModel`` + the variant's ``PositionNet`` at tiny
widths) and saved in their ``.pth`` container; the diffusers folder picbench reads through
``--weights-dir`` is diffusers' conversion of it (``convert_ldm_unet_checkpoint``; the position
net's keys are the same in both; text-image: ``image_project`` holds the authors'
``projection_matrix`` transposed, as ``x @ P`` is what their ``project`` computes). Both sides get the
same text embeddings (picbench's tiny CLIP), phrase embeddings, CLIP image embeddings of the
references, boxes and initial noise (the authors' script passes none: it draws from the unseeded
global RNG). Stages: the grounding input and tokens (conditional; the null half's masks and tokens:
diffusers keeps boxes and embeddings there and masks them, the authors zero them), the PLMS
schedule, every UNet evaluation's input, time and both CFG predictions, the final latents, the
8-bit image (the authors decode with their LDM autoencoder, picbench with diffusers' conversion of
it). fp32, within 1e-4 of the largest final latent; the image within one grey level, its mean
within 0.02.
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
POSITION_NET = {"in_dim": 32, "out_dim": 32}  # released: 768 / 768
SIZE, SEED, GUIDANCE, STEPS = 64, 3, 7.5, 4  # STEPS divides 1000: the authors' schedule is range(0, 1000, 1000 // S) + 1
GIVEN = ("boxes", "masks", "phrase_masks", "image_masks", "phrase_embeddings")
"""The grounding input each side receives as given (picbench's phrase embeddings in the authors' slots)."""
NAMES = {
    "boxes": "boxes",
    "masks": "masks",
    "positive_embeddings": "phrase_embeddings",
    "phrases_embeddings": "phrase_embeddings",
    "phrases_masks": "phrase_masks",
    "image_masks": "image_masks",
    "image_embeddings": "image_embeddings",
}
"""diffusers' names of the position net's inputs -> the stage names both sides use."""
VARIANT_BETA = {"text-box": 0.3, "text-image": 1.0}  # gligen_inference.py: alpha_type [0.3, 0, 0.7] and [1, 0, 0]


def stages(variant: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stages in pipeline order, the exact ones) of a variant."""
    given = GIVEN[:2] + ("phrase_embeddings",) if variant == "text-box" else GIVEN
    grounding = [f"grounding_{g}_cond" for g in given]
    if variant == "text-image":
        grounding.append("grounding_image_embeddings_cond")  # computed: CLIP image embeds projected and normalized
    grounding += ["grounding_tokens_cond", "grounding_masks_null", "grounding_tokens_null"]
    exact = (*(f"grounding_{g}_cond" for g in given), "grounding_masks_null", "timesteps")
    return (*grounding, "schedule", "timesteps", "step_inputs", "predictions", "latents", *IMAGE_STAGES), exact


@pytest.fixture(scope="module", params=["text-box", "text-image"])
def weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(variant, DIR laid out for --weights-dir: the variant's diffusers folder converted from the authors' tiny ``.pth``)."""
    checkout("GLIGEN")  # skips here, before any import or building, when the suite is off
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint
    from diffusers.pipelines.stable_diffusion.clip_image_project_model import CLIPImageProjection

    from picbench.adapters.gligen import VARIANTS, build_tiny_gligen

    variant = request.param
    root = tmp_path_factory.mktemp(f"gligen-{variant}")
    base = build_tiny_gligen(root / "base", variant)  # tokenizer, encoders, VAE, scheduler; UNet and projection replaced
    authors = root / "checkpoint.pth"
    settings = {"mode": "build", "variant": variant, "unet": UNET, "position_net": POSITION_NET, "text_dim": POSITION_NET["in_dim"]}
    settings |= {"ddconfig": TINY_DDCONFIG, "seed": 0, "gate_std": 0.5, "zero_std": 0.05, "out": str(authors)}
    settings |= {"sd_conv_in_out": str(root / "SD_input_conv_weight_bias.pth"), "projection_matrix_out": str(root / "projection_matrix")}
    run_side("GLIGEN", "gligen_side.py", root / "build", settings)

    saved = torch.load(authors, map_location="cpu", weights_only=False)
    folder = sd_folder_with_authors_vae(base, saved["autoencoder"], root / "weights" / VARIANTS[variant]["checkpoint"])
    for part in ("unet", "image_project"):  # replaced below
        (folder / part).unlink(missing_ok=True)
    model = saved["model"]
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    ldm = {LDM_UNET_KEY + k: v for k, v in model.items() if not k.startswith("position_net.")}
    converted = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    converted |= {k: v for k, v in model.items() if k.startswith("position_net.")}
    unet.load_state_dict(converted, strict=True)
    unet.save_pretrained(folder / "unet")
    if variant == "text-image":
        project = CLIPImageProjection.from_pretrained(base / "image_project")
        project.load_state_dict({"project.weight": torch.load(root / "projection_matrix").T.contiguous()})
        project.save_pretrained(folder / "image_project")
    return variant, root / "weights"


class PicbenchRecorder:
    """The authors' side's records from hooks on picbench's pipeline. Rows 0/1 of each UNet call
    are diffusers' unconditional and conditional halves; the text-image pipeline calls the UNet
    twice per step, with the grounding (its conditional half is used) and with the null grounding
    (its unconditional half is used), as the authors' two calls."""

    def __init__(self, pipe: Any, calls_per_step: int) -> None:
        self.calls_per_step = calls_per_step
        self.calls: list[dict[str, torch.Tensor]] = []
        self.grounding: dict[str, torch.Tensor] = {}
        self.image_embeds: list[torch.Tensor] = []
        self.latents: list[torch.Tensor] = []
        self.handles = [
            pipe.unet.register_forward_pre_hook(self._before, with_kwargs=True),
            pipe.unet.register_forward_hook(self._after),
            pipe.unet.position_net.register_forward_hook(self._tokens, with_kwargs=True),
        ]
        if getattr(pipe, "image_encoder", None) is not None:
            self.handles.append(
                pipe.image_encoder.register_forward_hook(lambda m, a, out: self.image_embeds.append(out.image_embeds.clone()))
            )
        decode, factor = pipe.vae.decode, pipe.vae.config.scaling_factor

        def decode_recorded(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.latents.append(latents * factor)
            return decode(latents, *args, **kwargs)

        pipe.vae.decode = decode_recorded

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.calls:
            self.text = kwargs["encoder_hidden_states"].clone()
        self.calls.append({"x": args[0][1:].clone(), "t": torch.as_tensor(args[1]).reshape(-1)[:1].double()})

    def _tokens(self, module: Any, args: Any, kwargs: dict[str, torch.Tensor], output: torch.Tensor) -> None:
        call = len(self.calls) - 1
        if call >= self.calls_per_step:
            return
        grounded = call == 0  # text-box: one call, its rows 1 (grounded) and 0 (null); text-image: call 0 grounded, call 1 null
        for kind, row in (("cond", 1), ("null", 0)):
            if f"tokens_{kind}" not in self.grounding and (self.calls_per_step == 1 or grounded == (kind == "cond")):
                self.grounding.update({f"{NAMES[k]}_{kind}": v[row : row + 1].clone() for k, v in kwargs.items() if v is not None})
                self.grounding[f"tokens_{kind}"] = output[row : row + 1].clone()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        self.calls[-1]["out"] = output.sample.clone()

    def stages(self, scheduler: Any) -> dict[str, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        steps = [self.calls[i : i + self.calls_per_step] for i in range(0, len(self.calls), self.calls_per_step)]
        # (cond, uncond) per evaluation: the grounded call's conditional half, the last call's unconditional half
        predictions = [torch.cat([step[0]["out"][1:], step[-1]["out"][:1]]) for step in steps]
        times = sorted({int(t) for t in scheduler.timesteps}, reverse=True)
        ratio = scheduler.config.num_train_timesteps // STEPS
        bar = scheduler.alphas_cumprod.double()
        prev = [bar[t - ratio] if t - ratio >= 0 else torch.as_tensor(scheduler.final_alpha_cumprod).double() for t in times]
        return {
            **{f"grounding_{k}": v for k, v in self.grounding.items()},
            "timesteps": torch.cat([step[0]["t"] for step in steps]),
            "step_inputs": torch.cat([step[0]["x"] for step in steps]),
            "predictions": torch.stack(predictions),
            "latents": self.latents[-1],
            # the PLMS schedule as PNDM applies it (see test_parity_instancediffusion.py)
            "schedule": torch.stack([torch.tensor(times).double(), bar[times], torch.stack(prev)], dim=1),
        }


def test_gligen_matches_the_authors_in_fp32(weights: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    from picbench.adapters.gligen import AUTHORS_NEGATIVE_PROMPT, SCHEDULED_SAMPLING_BETA, GligenMethod

    variant, folder = weights
    assert SCHEDULED_SAMPLING_BETA[variant] == VARIANT_BETA[variant]
    sample = dog_and_cat("parity-gligen", SIZE)
    method = GligenMethod(weights_dir=folder, params={"variant": variant, "steps": STEPS, "resolution": SIZE, "guidance_scale": GUIDANCE})
    pipe = method.load()
    recorder = PicbenchRecorder(pipe, calls_per_step=2 if variant == "text-image" else 1)
    image = method.generate([sample], SEED, data_dir)[0]
    ours = recorder.stages(pipe.scheduler) | image_stages(image)
    n = len(sample.subjects)
    tensors = {
        "context": recorder.text[1:],
        "uncond": recorder.text[:1],
        "phrase_pooled": ours["grounding_phrase_embeddings_cond"][0, :n],
        "noise": ours["step_inputs"][:1],
    }
    settings = {
        "mode": "run",
        "variant": variant,
        "checkpoint": str(folder.parent / "checkpoint.pth"),
        "sd_conv_in": str(folder.parent / "SD_input_conv_weight_bias.pth"),
        "projection_matrix": str(folder.parent / "projection_matrix"),
        "text_dim": POSITION_NET["in_dim"],
        "prompt": sample.prompt,
        "negative_prompt": AUTHORS_NEGATIVE_PROMPT,
        "phrases": [s.class_word for s in sample.subjects],
        "boxes": [list(s.box) for s in sample.subjects],
        "latent_size": ours["step_inputs"].shape[-1],
        "steps": STEPS,
        "guidance": GUIDANCE,
        "beta": VARIANT_BETA[variant],
    }
    if variant == "text-image":
        settings["images"] = [str(data_dir / s.references[0]) for s in sample.subjects]
        tensors["image_embeds"] = torch.cat(recorder.image_embeds)
    theirs = run_side("GLIGEN", "gligen_side.py", tmp_path / "authors", settings, tensors)
    names, exact = stages(variant)
    tolerance = {**dict.fromkeys(names, 1e-4 * float(theirs["latents"].abs().max())), **dict.fromkeys(exact, 0.0), "schedule": 1e-6}
    tolerance |= IMAGE_TOLERANCE
    mode = f"{variant}, fp32, {n} boxes, {STEPS} steps, beta {VARIANT_BETA[variant]}"
    assert_parity("gligen", mode, compare_stages(ours, theirs, names, tolerance))
