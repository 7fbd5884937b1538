"""Shared by the box-grounded adapter tests (GLIGEN, InstanceDiffusion): a real DreamBench pair
with boxes, and single-threaded torch for tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from picbench.records import Sample, Subject

BOXES = ((0.05, 0.30, 0.50, 0.95), (0.55, 0.20, 0.98, 0.90))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core box run far faster single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dreambench_multi_sample(data_dir: Path, width: int = 64, height: int = 64) -> Sample:
    """The first entry of UNO's DreamBench multi-subject list, with boxes added."""
    entry = json.loads((data_dir / "dreambench" / "dreambench_multiip.json").read_text())[0]
    refs = [p.replace("./dreambooth/dataset/", "dreambench/dataset/") for p in entry["image_paths"]]
    classes = ["backpack", "stuffed animal"]
    subjects = tuple(Subject(Path(r).parent.name, c, (r,), box=b) for r, c, b in zip(refs, classes, BOXES))
    return Sample("dreambench-multi-0", entry["prompt"], width, height, "multi", subjects)
