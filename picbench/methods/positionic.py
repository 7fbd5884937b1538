"""``positionic``: the reference PositionIC (FLUX.1-dev + UnoPE + VWR + VAA) behind the method interface.

How a Sample becomes pipeline inputs:
- each subject gives its first reference image (loaded with `load_rgb` from the data root) and its
  box; reference k is paired with box k;
- depth ranks come from the subjects; a sample with no ranks uses the listing order (first = front);
- a sample without boxes (DreamBench) runs with VAA off: references in context with UnoPE only;
- the output is exactly the Sample's width x height.
Every sample's layout is checked (and its references read) before the pipeline is built, so bad
input fails fast and names the sample.

Defaults: 25 steps and guidance 4.0 (UNO's published defaults; PositionIC builds on UNO and its
paper gives none), VWR sigma/delta from `reference_impl.vwr`, attention backend `auto`. The
PositionIC LoRA is not public: pass a local diffusers/peft LoRA file as the ``lora`` parameter;
without it the run is training-free VAA on FLUX.1-dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from picbench.errors import BenchFormatError
from picbench.imaging import load_rgb
from picbench.methods.base import Capabilities, Method
from picbench.paths import resolve_in_root
from picbench.records import Sample

FLUX_DEV = "black-forest-labs/FLUX.1-dev"


class PositionICMethod(Method):
    name = "positionic"
    version = "1"
    capabilities = Capabilities(references=True, boxes=True, multi_subject=True, depth_order=True)
    default_params = {
        "steps": 25,
        "guidance": 4.0,
        "sigma": 3.0,
        "delta": 1.0,
        "attention_backend": "auto",
        "ref_long_side": None,
        "base": FLUX_DEV,
        "lora": None,
        "lora_scale": 1.0,
    }
    checkpoints = {"base": FLUX_DEV, "lora": "PositionIC LoRA (not public): a local file, parameter 'lora'"}
    uses_vaa = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pipe: Any = None

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        prepared = [self._inputs(sample, data_root) for sample in samples]
        pipe = self.pipeline()
        return [
            pipe(refs, sample.prompt, boxes, depths, seed=seed, width=sample.width, height=sample.height, vaa=boxes is not None, **self._call_params())
            for sample, (refs, boxes, depths) in zip(samples, prepared)
        ]

    def _call_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "steps": int(p["steps"]),
            "guidance": float(p["guidance"]),
            "ref_long_side": p["ref_long_side"],
            "sigma": p["sigma"],
            "delta": float(p["delta"]),
            "attention_backend": str(p["attention_backend"]),
        }

    def _inputs(self, sample: Sample, data_root: Path) -> tuple[list[Image.Image], list[tuple[float, ...]] | None, list[int] | None]:
        """References, boxes and depth ranks of one sample, validated before any model runs."""
        from picbench.reference_impl.layout import validate_layout

        boxes = [s.box for s in sample.subjects] if self.uses_vaa and sample.has_layout else None
        depths = None
        if boxes is not None:
            ranks = [s.depth for s in sample.subjects]
            depths = list(range(len(boxes))) if all(d is None for d in ranks) else ranks
            if any(d is None for d in depths):
                raise BenchFormatError("some subjects have a depth rank and some do not", sample_id=sample.id, field="subjects.depth")
            try:
                validate_layout(boxes, depths, len(sample.subjects), sample.width, sample.height)
            except ValueError as exc:
                raise BenchFormatError(str(exc), sample_id=sample.id, field="subjects") from exc
        refs = [load_rgb(resolve_in_root(data_root, s.references[0])) for s in sample.subjects]
        return refs, boxes, depths

    def pipeline(self) -> Any:
        """The pipeline, built on first use (tiny: random weights; default: FLUX.1-dev + LoRA)."""
        if self._pipe is None:
            self._pipe = self._build()
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def _build(self) -> Any:
        from picbench.reference_impl.lora import load_lora
        from picbench.reference_impl.pipeline import PositionICPipeline

        pipe = self._base_pipeline(PositionICPipeline)
        if self.params["lora"]:
            load_lora(pipe, self._local(str(self.params["lora"])), scale=float(self.params["lora_scale"]))
        return pipe

    def _base_pipeline(self, cls: Any) -> Any:
        import torch

        if self.smoke:
            from picbench.reference_impl.tiny import tiny_components

            return cls(**tiny_components()).to(self.device)
        dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
        return cls.from_pretrained(self._local(str(self.params["base"])), torch_dtype=dtype).to(self.device)

    def _local(self, ref: str) -> str:
        """`ref` as given, or its copy under ``weights_dir`` (as DIR/<hub id> or DIR/<last part>)."""
        if self.weights_dir is not None and not Path(ref).expanduser().exists():
            for candidate in (self.weights_dir / ref, self.weights_dir / ref.rsplit("/", 1)[-1]):
                if candidate.exists():
                    return str(candidate)
        return ref
