"""``positionic``: the reference PositionIC (FLUX.1-dev + UnoPE + VWR + VAA) behind the method interface.

A Sample becomes pipeline inputs by `reference_impl/sample_inputs.py` (the rule the trainer's
validation uses too): the first reference image and the box of each subject, reference k paired with
box k, depth ranks from the subjects (none given: the listing order, first = front). A sample
without boxes (DreamBench) runs with VAA off: references in context with UnoPE only. The output is
exactly the Sample's width x height. Every sample's layout is checked (and its references read)
before the pipeline is built, so bad input fails fast and names the sample.

Defaults: 25 steps and guidance 4.0 (UNO's published defaults; PositionIC builds on UNO and its
paper gives none), UNO's sampling time shift (`reference_impl/schedule.py`: mu 0.46 at 512 px;
``schedule=flux`` for diffusers' rule), VWR sigma/delta from `reference_impl.vwr`, attention
backend `auto`. PositionIC samples as UNO does (same sampler): references at UNO's sizes, encoded
by a float32 VAE to a posterior sample from the item's seed, UNO's bf16 time rounding and Euler
update, UNO's LoRA arithmetic (`reference_impl/pipeline.py`, `reference_impl/lora.py`).

Noise (parameter ``noise``): ``uno`` (default) draws the initial noise in the model's dtype from
a generator on the device seeded with the seed, as UNO's `get_noise` (bytedance/UNO @ d305981,
`uno/flux/sampling.py:28-45` via `uno/flux/pipeline.py:255-258`), so on CUDA a seed gives UNO's
image for that seed; ``float32`` draws float32 noise from a CPU generator (picbench's draw
before version 3: the same noise for a seed on every device). On the CPU both are identical.

Weights (parameter ``lora``), because PositionIC is initialized from UNO and its own LoRA is not public:
- ``lora=uno`` (default): UNO's released LoRA (`bytedance-research/UNO/dit_lora.safetensors`,
  from ``--weights-dir DIR/UNO/`` or the hub cache) with VAA on: "VAA on UNO", the untrained
  PositionIC, a training-free baseline;
- ``lora=FILE``: a trained PositionIC LoRA (what `picbench train` writes, diffusers/peft layout,
  or the same LoRA in UNO's layout);
- ``lora=none``: plain FLUX.1-dev, never trained to read reference tokens (identity scores mean
  little).
Which one ran is in the run's method parameters and in its checkpoints (results.json
provenance), and from there in leaderboard rows and the report. ``--models tiny`` with
``lora=uno`` loads a random LoRA in UNO's key layout (or ``DIR/UNO/dit_lora.safetensors`` when
``--weights-dir`` holds one), so tiny runs take the same conversion path as the real weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from picbench.checkpoints import HubFiles, hub_files
from picbench.methods.base import Capabilities, Method
from picbench.methods.params import GUIDANCE, MAX_RESOLUTION, STEPS, Param
from picbench.records import Sample

if TYPE_CHECKING:
    from picbench.reference_impl.pipeline_weights import PipelineWeights
    from picbench.reference_impl.vaa import VAASettings

FLUX_DEV = "black-forest-labs/FLUX.1-dev"
UNO_LORA = "uno"
NO_LORA = "none"
UNO_LORA_CHECKPOINT = "bytedance-research/UNO/dit_lora.safetensors"
NOISE_DRAWS = ("uno", "float32")


class PositionICMethod(Method):
    name = "positionic"
    version = "3"  # 3: UNO's reference sizes (320 for 3+), bf16 arithmetic, posterior refs, device noise; 2: UNO's shift, resize, LoRA
    capabilities = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=True)
    default_params = {
        "steps": 25,
        "guidance": 4.0,
        "sigma": 3.0,
        "delta": 1.0,
        "attention_backend": "auto",
        "ref_long_side": None,
        "schedule": "uno",
        "base": FLUX_DEV,
        "lora": UNO_LORA,
        "lora_scale": 1.0,
        "noise": "uno",
    }
    checkpoints = {"base": FLUX_DEV, "lora": f"{UNO_LORA_CHECKPOINT} (lora=uno: VAA on UNO, untrained PositionIC)"}
    param_specs = {
        "steps": STEPS,
        "guidance": GUIDANCE,
        "sigma": Param("float", 0.0, 1e3),
        "delta": Param("float", 0.0, 1e3),
        "ref_long_side": Param("int", 8, MAX_RESOLUTION, optional=True),
        "lora_scale": Param("float", -10.0, 10.0),
        "noise": Param("str", choices=NOISE_DRAWS),
    }
    uses_vaa = True
    cuda_dtype = "bfloat16"  # FLUX.1-dev's release dtype

    def __init__(self, **kwargs: Any) -> None:
        from picbench.environment import require_extra

        super().__init__(**kwargs)
        require_extra(f"method {self.name}", ("diffusers", "peft"))
        self.checkpoints = {"base": str(self.params["base"]), "lora": self._lora_description()}
        if "attention_backend" in self.params:
            self._check_attention_backend(str(self.params["attention_backend"]))

    def _check_attention_backend(self, name: str) -> None:
        """A backend name the registry knows (plug-ins included), refused before any model loads."""
        from picbench.reference_impl.attention import ATTENTION_BACKENDS

        if name != "auto" and name not in ATTENTION_BACKENDS:
            raise ValueError(f"method {self.name}: parameter 'attention_backend': {ATTENTION_BACKENDS.suggest(name)}, or 'auto'")

    def _lora_description(self) -> str:
        """What the ``lora`` parameter loads, for provenance, leaderboards and reports."""
        lora = str(self.params["lora"])
        if lora.lower() == UNO_LORA:
            return f"{UNO_LORA_CHECKPOINT} (lora=uno: VAA on UNO, untrained PositionIC)" if self.uses_vaa else UNO_LORA_CHECKPOINT
        if lora.lower() == NO_LORA:
            return "none (lora=none: plain FLUX.1-dev)"
        return f"{lora} (trained PositionIC LoRA)" if self.uses_vaa else lora

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        from dataclasses import replace

        from picbench.reference_impl.sample_inputs import sample_inputs

        prepared = [sample_inputs(sample, data_root, with_layout=self.uses_vaa) for sample in samples]
        pipe = self.load()
        vaa = self._vaa_settings()
        return [
            pipe(
                sample.prompt,
                refs,
                boxes,
                depths,
                width=sample.width,
                height=sample.height,
                vaa=vaa if boxes is not None else replace(vaa, vaa=False),
                generator=self._generator(seed),
                **self._call_params(),
            ).images[0]
            for sample, (refs, boxes, depths) in zip(samples, prepared)
        ]

    def _vaa_settings(self) -> VAASettings:
        """The VAA parameters as the pipeline's record (a sample without boxes runs with VAA off)."""
        from picbench.reference_impl.vaa import VAASettings

        p = self.params
        return VAASettings(True, p["sigma"], float(p["delta"]), str(p["attention_backend"]))

    def _generator(self, seed: int) -> Any:
        """UNO's generator on the device (``noise=uno``), or picbench's earlier CPU generator (``noise=float32``)."""
        import torch

        return torch.Generator(self.device if self.params["noise"] == "uno" else "cpu").manual_seed(seed)

    def _call_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "num_inference_steps": int(p["steps"]),
            "guidance_scale": float(p["guidance"]),
            "ref_long_side": p["ref_long_side"],
            "schedule": str(p["schedule"]),
            "noise": str(p["noise"]),
        }

    def _load(self) -> Any:
        """The pipeline (tiny: random weights; default: FLUX.1-dev + LoRA), its VAE in float32 as UNO's
        (`uno/flux/pipeline.py:266-272,297-298` @ d305981: references encoded and images decoded in float32)."""
        import torch

        pipe = self._build()
        pipe.vae.to(torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _build(self) -> Any:
        from picbench.reference_impl.lora import load_lora, load_uno_lora, random_uno_lora
        from picbench.reference_impl.pipeline import PositionICPipeline

        weights = self._weights()
        pipe = self._base_pipeline(PositionICPipeline, weights)
        lora, scale = weights.lora(str(self.params["lora"])), float(self.params["lora_scale"])
        if lora.random_uno:
            load_uno_lora(pipe, random_uno_lora(pipe.transformer, rank=4), scale=scale)
        elif lora.file is not None and _is_uno_layout(lora.file):
            load_uno_lora(pipe, lora.file, scale=scale)
        elif lora.file is not None:
            load_lora(pipe, lora.file, scale=scale)
        pipe.vaa_default = self.uses_vaa
        return pipe

    def _weights(self) -> PipelineWeights:
        """Where this run's base and LoRA come from (`reference_impl/pipeline_weights.py`, shared with the trainer)."""
        from picbench.reference_impl.pipeline_weights import PipelineWeights, WeightsSettings

        return PipelineWeights(self.name, self.weights_dir, self.smoke, WeightsSettings("the 'lora' parameter", "--weights-dir DIR"))

    def downloads(self) -> tuple[HubFiles, ...]:
        """FLUX.1-dev's diffusers folder (or the 'base' parameter's repository) and, with lora=uno,
        UNO's released LoRA file."""
        repo, file = UNO_LORA_CHECKPOINT.rsplit("/", 1)
        wanted = [hub_files(str(self.params["base"])), HubFiles(repo, (file,)) if self.params["lora"] == UNO_LORA else None]
        return tuple(w for w in wanted if w is not None)

    def _base_pipeline(self, cls: Any, weights: PipelineWeights) -> Any:
        if self.smoke:
            from picbench.tiny.flux import tiny_components

            return cls(**tiny_components()).to(self.device)
        import torch

        # the VAE read in float32 from the file, not rounded to the model dtype first and upcast after
        # (UNO loads ae.safetensors as stored; a bf16 round trip moved its references by 0.05 and its
        # images by 2 grey levels on a tiny model: tests/parity/test_parity_uno.py)
        dtypes = {"default": self.dtype, "vae": torch.float32}
        return weights.load_base(str(self.params["base"]), lambda path: cls.from_pretrained(path, dtype=dtypes)).to(self.device)


def _is_uno_layout(file: Path) -> bool:
    """True when a LoRA file holds UNO's processor keys (`double_blocks.N.processor...`)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        return any(".processor." in key for key in handle.keys())
