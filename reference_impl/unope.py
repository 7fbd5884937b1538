"""UnoPE: position ids that place each reference image diagonally after the target (from UNO).

Target token (r, c) gets `[0, r, c]`, exactly diffusers' FLUX `img_ids`; reference k gets
`[0, r + h_off_k, c + w_off_k]` with offsets starting at the target's token height and width
and growing by each earlier reference's height and width. References thus never share a
rotary position with the target or with each other, and keep their own 2-D structure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def grid_ids(rows: int, cols: int, row_offset: int = 0, col_offset: int = 0) -> torch.Tensor:
    """[rows * cols, 3] ids `[0, row, col]` in row-major order, shifted by the offsets."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([torch.zeros_like(r), r + row_offset, c + col_offset], dim=-1).reshape(-1, 3)


def unope_image_ids(
    target_hw: tuple[int, int],
    ref_hws: Sequence[tuple[int, int]],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[N_img, 3] ids for the target tokens, then each reference's, as FluxTransformer2DModel's `img_ids`."""
    rows, cols = target_hw
    parts = [grid_ids(rows, cols)]
    h_off, w_off = rows, cols
    for ref_rows, ref_cols in ref_hws:
        parts.append(grid_ids(ref_rows, ref_cols, h_off, w_off))
        h_off, w_off = h_off + ref_rows, w_off + ref_cols
    return torch.cat(parts).to(device=device, dtype=dtype)
