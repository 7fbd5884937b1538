"""Methods for the run tests: a slowed-down paste (so a run can be killed midway) and a faulty
method whose outputs exercise every per-sample generation check. Subprocess tests install them
as a third-party plugin (a dist-info folder declaring the `picbench.methods` entry points)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from picbench.methods.paste import PasteMethod
from picbench.records import Sample


class SlowPasteMethod(PasteMethod):
    name = "slowpaste"

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        time.sleep(0.4 * len(samples))
        return super().generate(samples, seed, data_root)


class FaultyMethod(PasteMethod):
    """Sample s00 is fine; m01 comes back the wrong size; s02 as a broken PNG; m03 as NaNs; s04
    raises (inside a batch, so the runner must isolate it)."""

    name = "faulty"
    default_params = {**PasteMethod.default_params, "broken_png": ""}

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list:
        if any(s.id == "s04" for s in samples):
            raise RuntimeError("the sampler diverged")
        good = super().generate(samples, seed, data_root)
        out: list = []
        for sample, image in zip(samples, good):
            if sample.id == "m01":
                out.append(image.resize((sample.width + 8, sample.height)))
            elif sample.id == "s02":
                out.append(Image.open(self.params["broken_png"]))
            elif sample.id == "m03":
                out.append(np.full((sample.height, sample.width, 3), np.nan, dtype=np.float32))
            else:
                out.append(image)
        return out


def install_plugin(folder: Path) -> Path:
    """Make `folder` an importable plugin distribution declaring `slowpaste`; returns the folder
    to put on PYTHONPATH."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).parent / "run_bench_helpers.py", folder / "run_bench_helpers.py")
    shutil.copy(Path(__file__), folder / "slow_methods_plugin.py")
    dist = folder / "slow_methods_plugin-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-methods-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[picbench.methods]\nslowpaste = slow_methods_plugin:SlowPasteMethod\n")
    return folder
