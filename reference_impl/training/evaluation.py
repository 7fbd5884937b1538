"""Training scored by the benchmark: a fixed validation subset generated with the current LoRA and
scored by the metric engine (`picbench.metrics`), the same numbers `picbench run` reports.

The subset is the first `n_single` single-subject and `n_multi` multi-subject samples (bench order)
of `eval.bench` (default positionic-open, built with `picbench bench build positionic-open`; a
`.jsonl` path also works), generated at one fixed seed with VAA on, through the training
pipeline itself (same transformer, LoRA active), so nothing is reloaded. A sample becomes
pipeline inputs as in `picbench run` (`reference_impl.sample_inputs`); every selected sample's
layout is checked when the validator is built, before training starts. Images land in
`OUT/eval/step-NNNNNNN/`, named by the sample id made safe the way `picbench run` names its
images (`picbench.paths.safe_file_stem`), so no id can write outside that folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from picbench.benches import load_bench
from picbench.paths import safe_file_stem
from picbench.records import Sample
from picbench.reference_impl.sample_inputs import sample_inputs, sample_layout
from picbench.reference_impl.training.config import Config


class Validator:
    def __init__(self, config: Config, device: str | torch.device) -> None:
        from picbench.metrics.engine import MetricEngine

        ev = config.eval
        self.config = config
        self.bench = load_bench(ev.bench, ev.data_dir or None)
        singles = [s for s in self.bench.samples if s.split == "single" and s.has_layout][: ev.n_single]
        multis = [s for s in self.bench.samples if s.split == "multi" and s.has_layout][: ev.n_multi]
        self.samples: list[Sample] = singles + multis
        for sample in self.samples:  # a bad layout fails before training starts, naming the sample
            sample_layout(sample)
        self.engine = MetricEngine(
            models=config.models,
            device=str(device),
            detector=None if ev.detector in ("", "none") else ev.detector,
            batch_size=8,
            weights_dir=config.resolve(config.weights_dir) if config.weights_dir else None,
        )

    @torch.no_grad()
    def __call__(self, pipe: Any, step: int, out: Path) -> dict[str, Any]:
        from picbench.metrics.decoding import ScoreItem

        ev, m = self.config.eval, self.config.model
        folder = out / "eval" / f"step-{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        was_training = pipe.transformer.training
        pipe.transformer.eval()
        try:
            for sample in self.samples:
                refs, boxes, depths = sample_inputs(sample, self.bench.data_root)
                image = pipe(
                    sample.prompt,
                    refs,
                    boxes,
                    depths,
                    width=sample.width,
                    height=sample.height,
                    num_inference_steps=ev.steps,
                    guidance_scale=ev.guidance,
                    generator=torch.Generator().manual_seed(ev.seed),
                    vaa=m.vaa_settings,
                ).images[0]
                path = folder / f"{safe_file_stem(sample.id)}.png"
                image.save(path)
                items.append(ScoreItem(sample=sample, seed=ev.seed, image_path=path, image=image))
        finally:
            pipe.transformer.train(was_training)
        scores = list(self.engine.score(items, self.bench.data_root))
        return self.engine.aggregate(scores, {s.id: s for s in self.samples})
