"""Fixtures of the parity suite: the authors' tiny weights, built once per session by their own code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from flux_side import LORA_RANK, TINY_AE, TINY_FLUX
from parity_harness import SIDES, run_side
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(SIDES))  # sd_capture.py: the same hooks on both sides of the diffusers-based comparisons


@pytest.fixture(scope="session")
def uno_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """UNO's tiny weights, built by UNO's code (``uno_side.py build``), with bf16 copies of the
    transformer (FLUX.1-dev's release dtype) and of the LoRA beside them."""
    work = tmp_path_factory.mktemp("uno_build")
    files = work / "files"
    settings = {"mode": "build", "flux": TINY_FLUX, "ae": TINY_AE, "lora_rank": LORA_RANK, "lora_up_std": 0.05, "seed": 0}
    run_side("UNO", "uno_side.py", work, settings | {"weights": str(files), "flux_dtype": "float32"})
    for name in ("flux1-dev", "dit_lora"):
        tensors = load_file(str(files / f"{name}.safetensors"))
        save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(files / f"{name}.bf16.safetensors"))
    return files
