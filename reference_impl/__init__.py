"""Reference PositionIC: UnoPE, Volume Weight Regulation, Visibility-Aware Attention and its kernels."""

from picbench.reference_impl.attention import (
    FlexAttention,
    LowRankSdpaAttention,
    MaskedAttention,
    SdpaAttention,
    get_backend,
)
from picbench.reference_impl.layout import LayoutError, TokenGroup, TokenLayout, validate_layout
from picbench.reference_impl.unope import unope_image_ids
from picbench.reference_impl.vaa import dense_vaa_mask
from picbench.reference_impl.vwr import DEFAULT_DELTA, DEFAULT_SIGMA, volume_weights

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_SIGMA",
    "FlexAttention",
    "LayoutError",
    "LowRankSdpaAttention",
    "MaskedAttention",
    "SdpaAttention",
    "TokenGroup",
    "TokenLayout",
    "dense_vaa_mask",
    "get_backend",
    "unope_image_ids",
    "validate_layout",
    "volume_weights",
]
