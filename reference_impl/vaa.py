"""Visibility-Aware Attention: the additive mask over the joint sequence, written out densely.

Rules (docs/reference_impl.md), for the sequence `[text, target, ref_0 .. ref_{K-1}]`:
- ref_i <-> ref_j, i != j: -inf (references never see each other);
- target token p <-> ref_k, both directions: log w_k(p), so -inf where subject k is not visible at p;
- everything else 0. In particular text <-> ref stays open: the prompt's class words must bind to
  the reference's appearance (as in UNO, which VAA extends), and text tokens have no position
  for a visibility weight to apply to.

This dense version is the semantics every faster backend is tested against; it costs L x L
memory, which is why the FlexAttention backend never builds it. :class:`VAASettings` holds the
four settings that decide VAA for a call, carried as one record from a method's parameters or a
training config to `conditioning.build_conditioning`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from picbench.reference_impl.layout import TokenLayout
from picbench.reference_impl.vwr import DEFAULT_DELTA, DEFAULT_SIGMA


@dataclass(frozen=True)
class VAASettings:
    """Whether VAA is on, VWR's `sigma` (one, or one per subject) and `delta`, and the attention
    backend that applies the mask (`auto`: chosen by device); off means plain attention."""

    vaa: bool = True
    sigma: float | Sequence[float] = DEFAULT_SIGMA
    delta: float = DEFAULT_DELTA
    attention_backend: str = "auto"


def check_weights(layout: TokenLayout, weights: torch.Tensor) -> None:
    """Weights must hold at least one [rows, cols] map per reference on the target grid."""
    rows, cols = layout.target_hw
    if weights.dim() != 3 or tuple(weights.shape[1:]) != (rows, cols) or weights.shape[0] < layout.n_refs:
        raise ValueError(
            f"VAA weights must have shape [>= {layout.n_refs}, {rows}, {cols}] (one map per reference on the "
            f"target token grid), got {list(weights.shape)}"
        )
    if weights.min() < 0 or weights.max() > 1:
        raise ValueError("VAA weights must lie in [0, 1]")


def target_log_weights(layout: TokenLayout, weights: torch.Tensor) -> torch.Tensor:
    """[n_target, n_refs] log visibility per target token (row-major, as FLUX packs latents)."""
    check_weights(layout, weights)
    return torch.log(weights[: layout.n_refs].to(torch.float32)).reshape(layout.n_refs, -1).T


def dense_vaa_mask(layout: TokenLayout, weights: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[L, L] additive mask: 0, log w or -inf. Reference k pairs with weight map k."""
    log_w = target_log_weights(layout, weights)
    mask = torch.zeros(layout.length, layout.length, dtype=torch.float32, device=weights.device)
    target = layout.target_slice
    for i in range(layout.n_refs):
        ref_i = layout.ref_slice(i)
        for j in range(layout.n_refs):
            if i != j:
                mask[ref_i, layout.ref_slice(j)] = float("-inf")
        mask[target, ref_i] = log_w[:, i : i + 1]
        mask[ref_i, target] = log_w[:, i][None, :]
    return mask.to(dtype)
