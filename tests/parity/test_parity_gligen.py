"""``gligen`` (text-box variant) against the authors' LDM code (gligen/GLIGEN @ f9dccb9).

picbench runs GLIGEN through diffusers' ``StableDiffusionGLIGENPipeline`` on a diffusers folder
(the released text-box model is published that way, ``masterful/gligen-1-4-generation-text-box``),
with PNDM in PLMS mode and the authors' scheduled sampling applied by a UNet pre-hook. The tiny
weights are made by the authors' code (their ``UNetModel`` + ``PositionNet``, text-box config at
tiny widths) and saved in their ``.pth`` container; the diffusers folder picbench reads through
``--weights-dir`` is diffusers' conversion of it (``convert_ldm_unet_checkpoint``; the position
net's keys are the same in both). Both sides get the same text embeddings (picbench's tiny CLIP),
phrase embeddings, boxes and initial noise (the authors' script passes none: it draws from the
unseeded global RNG). Stages: the grounding input and tokens (conditional; the null half's mask
and tokens: diffusers keeps the boxes and embeddings there and masks them, the authors zero them),
the PLMS schedule, every UNet evaluation's input, time and both CFG predictions, the final latents.
fp32, within 1e-4 of the largest final latent. The reference-image variant (text-image) is not
compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from parity_harness import assert_parity, checkout, compare_stages, run_side

from picbench.records import Sample, Subject

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
STAGES = (
    "grounding_boxes_cond",
    "grounding_masks_cond",
    "grounding_embeddings_cond",
    "grounding_tokens_cond",
    "grounding_masks_null",
    "grounding_tokens_null",
    "schedule",
    "timesteps",
    "step_inputs",
    "predictions",
    "latents",
)
EXACT = ("grounding_boxes_cond", "grounding_masks_cond", "grounding_embeddings_cond", "grounding_masks_null", "timesteps")
"""Given, not computed: the grounding input (picbench's phrase embeddings in the authors' slots) and the times."""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR laid out for --weights-dir: the text-box diffusers folder converted from the authors' tiny ``.pth``."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

    from picbench.adapters.gligen import VARIANTS, build_tiny_gligen

    checkout("GLIGEN")  # skips here, before any building, when the suite is off
    root = tmp_path_factory.mktemp("gligen")
    base = build_tiny_gligen(root / "base", "text-box")  # tokenizer, text encoder, VAE, scheduler; its UNet is replaced
    authors = root / "checkpoint_generation_text.pth"
    settings = {"mode": "build", "unet": UNET, "position_net": POSITION_NET, "text_dim": POSITION_NET["in_dim"], "seed": 0}
    settings |= {"gate_std": 0.5, "zero_std": 0.05, "out": str(authors), "sd_conv_in_out": str(root / "SD_input_conv_weight_bias.pth")}
    run_side("GLIGEN", "gligen_side.py", root / "build", settings)

    folder = root / "weights" / VARIANTS["text-box"]["checkpoint"]
    folder.mkdir(parents=True)
    for part in base.iterdir():
        if part.name != "unet":
            (folder / part.name).symlink_to(part, target_is_directory=part.is_dir())
    model = torch.load(authors, map_location="cpu", weights_only=False)["model"]
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    ldm = {LDM_UNET_KEY + k: v for k, v in model.items() if not k.startswith("position_net.")}
    converted = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    converted |= {k: v for k, v in model.items() if k.startswith("position_net.")}
    unet.load_state_dict(converted, strict=True)
    unet.save_pretrained(folder / "unet")
    return root / "weights"


def _sample() -> Sample:
    subjects = (
        Subject("dog", "dog", ("dreambench/dataset/dog/00.jpg",), box=(0.05, 0.3, 0.5, 0.9)),
        Subject("cat", "cat", ("dreambench/dataset/cat/00.jpg",), box=(0.5, 0.15, 0.95, 0.75)),
    )
    return Sample("parity-gligen", "a dog and a cat in a garden", SIZE, SIZE, "multi", subjects)


class PicbenchRecorder:
    """The authors' side's records from hooks on picbench's pipeline: rows 0/1 of each UNet call
    are diffusers' unconditional and conditional halves."""

    def __init__(self, pipe: Any) -> None:
        self.evals: list[dict[str, torch.Tensor]] = []
        self.grounding: dict[str, torch.Tensor] = {}
        self.latents: list[torch.Tensor] = []
        self.handles = [
            pipe.unet.register_forward_pre_hook(self._before, with_kwargs=True),
            pipe.unet.register_forward_hook(self._after),
            pipe.unet.position_net.register_forward_hook(self._tokens, with_kwargs=True),
        ]
        decode, factor = pipe.vae.decode, pipe.vae.config.scaling_factor

        def decode_recorded(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.latents.append(latents * factor)
            return decode(latents, *args, **kwargs)

        pipe.vae.decode = decode_recorded

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.evals:
            self.text = kwargs["encoder_hidden_states"].clone()
        self.evals.append({"x": args[0][1:].clone(), "t": torch.as_tensor(args[1]).reshape(-1)[:1].double()})

    def _tokens(self, module: Any, args: Any, kwargs: dict[str, torch.Tensor], output: torch.Tensor) -> None:
        if not self.grounding:
            for kind, row in (("cond", 1), ("null", 0)):
                for name, key in (("boxes", "boxes"), ("masks", "masks"), ("embeddings", "positive_embeddings")):
                    self.grounding[f"{name}_{kind}"] = kwargs[key][row : row + 1].clone()
                self.grounding[f"tokens_{kind}"] = output[row : row + 1].clone()

    def _after(self, module: Any, args: Any, output: Any) -> None:
        self.evals[-1]["predictions"] = output.sample.flip(0).clone()  # (cond, uncond), as the authors' side stacks them

    def stages(self, scheduler: Any) -> dict[str, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        times = sorted({int(t) for t in scheduler.timesteps}, reverse=True)
        ratio = scheduler.config.num_train_timesteps // STEPS
        bar = scheduler.alphas_cumprod.double()
        prev = [bar[t - ratio] if t - ratio >= 0 else torch.as_tensor(scheduler.final_alpha_cumprod).double() for t in times]
        return {
            **{f"grounding_{k}": v for k, v in self.grounding.items()},
            "timesteps": torch.cat([e["t"] for e in self.evals]),
            "step_inputs": torch.cat([e["x"] for e in self.evals]),
            "predictions": torch.stack([e["predictions"] for e in self.evals]),
            "latents": self.latents[-1],
            # the PLMS schedule as PNDM applies it (see test_parity_instancediffusion.py)
            "schedule": torch.stack([torch.tensor(times).double(), bar[times], torch.stack(prev)], dim=1),
        }


def test_gligen_text_box_matches_the_authors_in_fp32(weights: Path, tmp_path: Path) -> None:
    from picbench.adapters.gligen import AUTHORS_NEGATIVE_PROMPT, SCHEDULED_SAMPLING_BETA, GligenMethod

    sample = _sample()
    method = GligenMethod(
        weights_dir=weights, params={"variant": "text-box", "steps": STEPS, "resolution": SIZE, "guidance_scale": GUIDANCE}
    )
    pipe = method.load()
    recorder = PicbenchRecorder(pipe)
    method.generate([sample], SEED, tmp_path)
    ours = recorder.stages(pipe.scheduler)
    n = len(sample.subjects)
    tensors = {
        "context": recorder.text[1:],
        "uncond": recorder.text[:1],
        "phrase_pooled": ours["grounding_embeddings_cond"][0, :n],
        "noise": ours["step_inputs"][:1],
    }
    settings = {
        "mode": "run",
        "checkpoint": str(weights.parent / "checkpoint_generation_text.pth"),
        "sd_conv_in": str(weights.parent / "SD_input_conv_weight_bias.pth"),
        "text_dim": POSITION_NET["in_dim"],
        "prompt": sample.prompt,
        "negative_prompt": AUTHORS_NEGATIVE_PROMPT,
        "phrases": [s.class_word for s in sample.subjects],
        "boxes": [list(s.box) for s in sample.subjects],
        "latent_size": ours["step_inputs"].shape[-1],
        "steps": STEPS,
        "guidance": GUIDANCE,
        "beta": SCHEDULED_SAMPLING_BETA["text-box"],  # gligen_inference.py: alpha_type [0.3, 0.0, 0.7]
    }
    theirs = run_side("GLIGEN", "gligen_side.py", tmp_path / "authors", settings, tensors)
    tolerance = {**dict.fromkeys(STAGES, 1e-4 * float(theirs["latents"].abs().max())), **dict.fromkeys(EXACT, 0.0), "schedule": 1e-6}
    assert_parity("gligen", f"text-box, fp32, {n} boxes, {STEPS} steps, beta 0.3", compare_stages(ours, theirs, STAGES, tolerance))
