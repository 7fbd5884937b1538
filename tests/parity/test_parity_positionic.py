"""``positionic``'s reduced case against UNO (bytedance/UNO @ d305981): with one subject whose box
is the whole image and a large sigma, every VWR weight is 1 - exp(-sigma * delta) = 1, so VAA adds
a zero bias and PositionIC on UNO's LoRA is UNO. Same tiny weights, inputs and stages as
``test_parity_uno.py``; fp32 within 1e-4 of the largest final latent; bf16 bit for bit up to the
decoded image, whose 8-bit conversion rounds (``positionic``) where UNO truncates: within one level."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flux_side import compare_with_uno, mode_name, uno_sample
from parity_harness import assert_parity


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_positionic_with_one_full_box_reduces_to_uno(uno_files: Path, tmp_path: Path, data_dir: Path, dtype: torch.dtype) -> None:
    from picbench.adapters.positionic import PositionICMethod

    sample = uno_sample(1, full_box=True)
    assert sample.has_layout  # VAA is on: the box and depth reach the attention processors
    diffs, ours = compare_with_uno(
        PositionICMethod, {"sigma": 1e3}, sample, uno_files, tmp_path, data_dir, dtype, torch.float32, image_levels=1.0
    )
    assert int(ours["attention_kwargs"]) == 1  # the VAA mask went to the attention processors
    assert_parity("positionic (one full-image box, sigma 1e3)", mode_name(dtype, torch.float32, 1), diffs)
