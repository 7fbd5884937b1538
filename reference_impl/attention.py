"""Masked attention backends: one VAA semantics (`vaa.dense_vaa_mask`), several ways to compute it.

- `sdpa`: `scaled_dot_product_attention` with the dense additive mask. Any device, backward
  everywhere; the readable exact path. Memory grows as L^2.
- `sdpa_lowrank`: the VAA mask has rank 2K (log w_k(p) on target-ref_k pairs, -inf on
  ref_i-ref_j pairs), so it rides in 2K extra head dimensions of q and k; SDPA then runs
  unmasked with its fused kernel. O(L K) memory, backward everywhere, exact in fp32/bf16.
- `flex`: compiled FlexAttention. The VAA bias comes from a compact lookup, never an L x L
  tensor: each token carries one integer code, and `table[code[q] + code[kv]]` is the bias
  (see `vaa_lookup`). The BlockMask is counted directly from the token groups and weight maps
  (`vaa_block_mask`), so blocks that VAA masks entirely are skipped. No backward on CPU.
- `auto`: the fastest exact backend per device, chosen on `benchmarks/bench_attention.py`'s
  figures (docs/benchmarks.md, "Figures behind defaults"). On CPU the CPU flex kernel is slow
  even unmasked, and the low-rank bias is faster than the dense mask at a small fraction of its
  memory, so CPU -> `sdpa_lowrank`. On CUDA the Triton flex kernel skips masked blocks and never
  builds the L^2 mask, so CUDA -> `flex` (expected, not measured yet).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from picbench.errors import UnknownNameError
from picbench.reference_impl.layout import TokenLayout
from picbench.reference_impl.vaa import dense_vaa_mask, target_log_weights
from picbench.registry import Registry

DEFAULT_BLOCK_SIZE = 128
# Lookup tables are padded to a power of two (at least this long) so layouts of one sequence
# length reuse one compiled kernel instead of recompiling for every table size.
_MIN_TABLE_CAPACITY = 4096
_MAX_REFS = 12  # ref codes are powers of two: the table grows as 2^K


class MaskedAttention(ABC):
    """The base of every backend, built in or plugged in (:data:`ATTENTION_BACKENDS`): `prepare`
    once per layout (and step), then call per layer: q, k, v [B, H, L, D] -> [B, H, L, D].
    ``block_size`` is a tiling hint; backends without tiles ignore it."""

    name: ClassVar[str]
    # device types ("cpu", "cuda") where gradients flow through the backend (training); the
    # conformance suite checks its gradient against the dense reference's on each it can reach
    backward_devices: ClassVar[frozenset[str]] = frozenset()
    # True where every new shape compiles a kernel (seconds): suites run such a backend on one layout
    compiles_per_shape: ClassVar[bool] = False

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.block_size = block_size

    @abstractmethod
    def prepare(self, layout: TokenLayout, weights: torch.Tensor | None, *, device: str | torch.device, dtype: torch.dtype) -> Any: ...

    @abstractmethod
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prepared: Any) -> torch.Tensor: ...


class SdpaAttention(MaskedAttention):
    """Dense additive VAA mask through `F.scaled_dot_product_attention` (prepared = the mask or None)."""

    name = "sdpa"
    backward_devices = frozenset({"cpu", "cuda"})

    def prepare(
        self, layout: TokenLayout, weights: torch.Tensor | None, *, device: str | torch.device, dtype: torch.dtype
    ) -> torch.Tensor | None:
        if weights is None:
            return None
        return dense_vaa_mask(layout, weights.to(device), dtype=dtype)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prepared: torch.Tensor | None) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=prepared)


@dataclass(frozen=True)
class LowRankBias:
    """VAA as 2K extra head dimensions: bias(i, j) = q_extra[i] . k_extra[j] (at most one nonzero term).

    Channel A (k = 0..K-1): keys of ref k carry 1; a target query carries log w_k(p), a ref_i
    query -inf for k != i. Channel B: a ref_i query carries 1 at i; target keys carry log w_k(p).
    Entries are log values (-inf allowed) or indicators; `LowRankSdpaAttention` makes them finite
    once it knows the head size.
    """

    q_values: torch.Tensor  # [L, 2K]
    k_values: torch.Tensor  # [L, 2K]
    q_is_log: torch.Tensor  # [L, 2K] bool: entry is a log value (scaled), not an indicator
    k_is_log: torch.Tensor


def low_rank_vaa_bias(layout: TokenLayout, weights: torch.Tensor, device: str | torch.device) -> LowRankBias:
    """The rank-2K factorization of the VAA mask: O(L K) memory instead of L^2."""
    k_refs, n = layout.n_refs, layout.length
    log_w = target_log_weights(layout, weights)  # [n_target, K]
    q_values = torch.zeros(n, 2 * k_refs)
    k_values = torch.zeros(n, 2 * k_refs)
    q_is_log = torch.zeros(n, 2 * k_refs, dtype=torch.bool)
    k_is_log = torch.zeros(n, 2 * k_refs, dtype=torch.bool)
    target = layout.target_slice
    q_values[target, :k_refs] = log_w.cpu()
    q_is_log[target, :k_refs] = True
    k_values[target, k_refs:] = log_w.cpu()
    k_is_log[target, k_refs:] = True
    for i in range(k_refs):
        ref_i = layout.ref_slice(i)
        k_values[ref_i, i] = 1.0
        q_values[ref_i, k_refs + i] = 1.0
        others = [j for j in range(k_refs) if j != i]
        q_values[ref_i, others] = float("-inf")
        q_is_log[ref_i, others] = True
    return LowRankBias(*(t.to(device) for t in (q_values, k_values, q_is_log, k_is_log)))


class LowRankSdpaAttention(MaskedAttention):
    """VAA through unmasked-shape SDPA: q, k, v extended by 2K dims (v with zeros), no L x L tensor.

    softmax is exact: -inf entries become a finite value so negative that exp() underflows to 0
    in fp32/bf16, and each pair's extra dot product has a single nonzero term, so nothing
    overflows. Has a backward on every device.
    """

    name = "sdpa_lowrank"
    backward_devices = frozenset({"cpu", "cuda"})

    def prepare(
        self, layout: TokenLayout, weights: torch.Tensor | None, *, device: str | torch.device, dtype: torch.dtype
    ) -> LowRankBias | None:
        if weights is None:
            return None
        if dtype == torch.float16:
            raise ValueError("sdpa_lowrank cannot represent -inf exactly in float16: use the 'sdpa' or 'flex' backend")
        return low_rank_vaa_bias(layout, weights, device)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prepared: LowRankBias | None) -> torch.Tensor:
        if prepared is None:
            return F.scaled_dot_product_attention(q, k, v)
        head_dim = q.shape[-1]
        # SDPA scales q.k by 1/sqrt(D); log values are pre-multiplied by sqrt(D) so the bias lands exact.
        very_negative = torch.finfo(q.dtype).max / 1024

        def finite(values: torch.Tensor, is_log: torch.Tensor) -> torch.Tensor:
            scaled = torch.where(is_log, values * head_dim**0.5, values)
            return torch.where(torch.isinf(scaled), -very_negative, scaled).to(q.dtype).expand(*q.shape[:-2], -1, -1)

        q_ext = torch.cat([q, finite(prepared.q_values, prepared.q_is_log)], dim=-1)
        k_ext = torch.cat([k, finite(prepared.k_values, prepared.k_is_log)], dim=-1)
        v_ext = F.pad(v, (0, q_ext.shape[-1] - v.shape[-1]))  # equal head dims keep SDPA's fused kernel
        out = F.scaled_dot_product_attention(q_ext, k_ext, v_ext, scale=head_dim**-0.5)
        return out[..., : v.shape[-1]]


@dataclass(frozen=True)
class VaaLookup:
    """Per-token codes [L_pad] and a flat bias table: bias(q, kv) = table[code[q] + code[kv]]."""

    code: torch.Tensor
    table: torch.Tensor
    n_regions: int


def vaa_lookup(layout: TokenLayout, weights: torch.Tensor, pad_to: int) -> VaaLookup:
    """Encode the VAA bias so one table read gives it for any token pair.

    Target tokens with equal log-weight vectors form a region r (0..R-1). Codes: text and padding
    0; ref k `2^k`; a target token of region r `(r + 1) * C` with C = 2^K + 1. A pair's code sum
    then lands on: row r+1, column 2^k for target-ref_k (table: log w_k of region r); row 0,
    column 2^i + 2^j (two bits) for ref_i-ref_j, i != j (table: -inf); every other pair on a
    cell holding 0 (one bit or none in row 0, column 0 in any row).
    """
    k_refs = layout.n_refs
    if k_refs > _MAX_REFS:
        raise ValueError(f"flex VAA supports at most {_MAX_REFS} references, got {k_refs}")
    log_w = target_log_weights(layout, weights.cpu())
    regions, region_of = torch.unique(log_w, dim=0, return_inverse=True)
    n_cols = 2**k_refs + 1
    n_rows = 2 * len(regions) + 1  # target-target pairs reach row r1 + r2 + 2
    table = torch.zeros(n_rows, n_cols)
    ref_cols = [2**k for k in range(k_refs)]
    table[1 : len(regions) + 1, ref_cols] = regions
    for i in range(k_refs):
        for j in range(i + 1, k_refs):
            table[0, 2**i + 2**j] = float("-inf")
    capacity = max(_MIN_TABLE_CAPACITY, 1 << (table.numel() - 1).bit_length())
    flat = torch.cat([table.flatten(), torch.zeros(capacity - table.numel())])

    code = torch.zeros(pad_to, dtype=torch.int32)
    code[layout.target_slice] = ((region_of + 1) * n_cols).to(torch.int32)
    for k in range(k_refs):
        code[layout.ref_slice(k)] = 2**k
    return VaaLookup(code=code, table=flat, n_regions=len(regions))


@dataclass(frozen=True)
class BlockCounts:
    """Per (q-block, kv-block): how many VAA-masked pairs, and how many pairs in all."""

    masked: torch.Tensor
    total: torch.Tensor
    complete: torch.Tensor  # [n_blocks] bool: the block holds no padding


def vaa_block_counts(layout: TokenLayout, weights: torch.Tensor, block_size: int) -> BlockCounts:
    """Count masked pairs per block pair from group ranges and weight maps: O(L K + n_blocks^2 K).

    Per block: a_k = tokens of ref k, z_k = target tokens where w_k = 0. Masked pairs between
    blocks Q and V: sum_{i != j} a_i(Q) a_j(V) + z(Q) . a(V) + a(Q) . z(V).
    """
    n_blocks = -(-layout.length // block_size)
    pad = n_blocks * block_size
    k_refs = layout.n_refs
    is_ref = torch.zeros(pad, k_refs, dtype=torch.float64)
    zero_w = torch.zeros(pad, k_refs, dtype=torch.float64)
    real = torch.zeros(pad, dtype=torch.float64)
    real[: layout.length] = 1
    for k in range(k_refs):
        is_ref[layout.ref_slice(k), k] = 1
    weights_flat = weights[:k_refs].detach().cpu().reshape(k_refs, -1).T
    zero_w[layout.target_slice] = (weights_flat == 0).to(torch.float64)

    def per_block(x: torch.Tensor) -> torch.Tensor:
        return x.view(n_blocks, block_size, *x.shape[1:]).sum(1)

    a, z, size = per_block(is_ref), per_block(zero_w), per_block(real)
    a_sum = a.sum(1)
    masked = torch.outer(a_sum, a_sum) - a @ a.T + z @ a.T + a @ z.T
    return BlockCounts(masked=masked, total=torch.outer(size, size), complete=size == block_size)


def _dense_to_block_indices(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[nq, nk] bool -> (num [1, 1, nq], indices [1, 1, nq, nk]) with the True columns first."""
    num = blocks.sum(-1, dtype=torch.int32)
    indices = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return num[None, None], indices[None, None]


def vaa_block_mask(
    layout: TokenLayout, weights: torch.Tensor, block_size: int = DEFAULT_BLOCK_SIZE, device: str | torch.device = "cpu"
) -> tuple[BlockMask, float]:
    """The BlockMask of VAA over the sequence padded to whole blocks, and the fraction of block
    pairs it skips as fully masked.

    Full blocks hold no masked pair and no padding; partial blocks are the rest that are not
    entirely masked. The mask itself (-inf) comes from the score lookup, so mask_mod is a no-op.
    """
    counts = vaa_block_counts(layout, weights, block_size)
    empty = counts.masked >= counts.total
    full = (counts.masked == 0) & counts.complete[:, None] & counts.complete[None, :]
    partial = ~empty & ~full
    kv_num, kv_idx = _dense_to_block_indices(partial)
    full_num, full_idx = _dense_to_block_indices(full)
    block_mask = BlockMask.from_kv_blocks(
        kv_num.to(device),
        kv_idx.to(device),
        full_num.to(device),
        full_idx.to(device),
        BLOCK_SIZE=block_size,
        seq_lengths=(counts.complete.numel() * block_size,) * 2,
    )
    return block_mask, empty.double().mean().item()


@dataclass(frozen=True)
class FlexPlan:
    """What `FlexAttention` needs per layout: the BlockMask and score_mod (None = unmasked)."""

    block_mask: BlockMask | None
    score_mod: Any
    skipped_fraction: float
    padded_length: int = 0  # q, k, v are zero-padded to this many tokens (whole blocks)


@functools.cache
def compiled_flex_attention() -> Any:
    """One compiled FlexAttention per process. Static shapes: the CPU C++ kernel does not compile
    with dynamic shapes here, and same-shaped layouts reuse the kernel."""
    return torch.compile(flex_attention, dynamic=False)


class FlexAttention(MaskedAttention):
    """VAA through compiled FlexAttention with a block-sparse mask and a one-lookup score_mod."""

    name = "flex"
    backward_devices = frozenset({"cuda"})  # the compiled CPU kernel has no backward
    compiles_per_shape = True

    def prepare(self, layout: TokenLayout, weights: torch.Tensor | None, *, device: str | torch.device, dtype: torch.dtype) -> FlexPlan:
        if weights is None:
            return FlexPlan(block_mask=None, score_mod=None, skipped_fraction=0.0)
        n_blocks = -(-layout.length // self.block_size)
        padded = n_blocks * self.block_size
        lookup = vaa_lookup(layout, weights, pad_to=padded)
        code, table = lookup.code.to(device), lookup.table.to(device)
        length = layout.length

        def vaa_score(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return torch.where(kv < length, score + table[code[q] + code[kv]], float("-inf"))

        block_mask, skipped = vaa_block_mask(layout, weights, self.block_size, device)
        return FlexPlan(block_mask=block_mask, score_mod=vaa_score, skipped_fraction=skipped, padded_length=padded)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prepared: FlexPlan) -> torch.Tensor:
        # The compiled CPU kernel with a score_mod read garbage past a sequence length that is not
        # a whole number of blocks (text rows off by up to 0.7 at L=40, varying run to run), so
        # the masked path pads q, k, v to whole blocks and masks the padded keys in score_mod.
        length = q.shape[-2]
        extra = max(prepared.padded_length - length, 0)
        if extra:
            q, k, v = (F.pad(t, (0, 0, 0, extra)) for t in (q, k, v))
        out = compiled_flex_attention()(q, k, v, score_mod=prepared.score_mod, block_mask=prepared.block_mask)
        return out[..., :length, :] if extra else out


ATTENTION_BACKENDS: Registry[type[MaskedAttention]] = Registry(
    "attention backend", entry_point_group="picbench.attention_backends", base=MaskedAttention
)
"""Backends by name; other packages add theirs through the ``picbench.attention_backends``
entry-point group (a MaskedAttention subclass), then ``--param attention_backend=NAME`` uses it."""
ATTENTION_BACKENDS.register("sdpa", "picbench.reference_impl.attention:SdpaAttention", "dense additive VAA mask through SDPA")
ATTENTION_BACKENDS.register(
    "sdpa_lowrank", "picbench.reference_impl.attention:LowRankSdpaAttention", "VAA as a rank-2K bias in extra q/k dims, unmasked SDPA"
)
ATTENTION_BACKENDS.register("flex", "picbench.reference_impl.attention:FlexAttention", "compiled FlexAttention, block-sparse VAA mask")


def get_backend(name: str, device: str | torch.device, *, block_size: int = DEFAULT_BLOCK_SIZE) -> MaskedAttention:
    """A backend by name; `auto` is `flex` on CUDA and `sdpa_lowrank` elsewhere (see the module docstring).
    An unknown name is a bad parameter value: a ValueError with a "did you mean"."""
    if name == "auto":
        name = "flex" if torch.device(device).type == "cuda" else "sdpa_lowrank"
    try:
        backend = ATTENTION_BACKENDS.get(name)
    except UnknownNameError as exc:
        raise ValueError(f"{exc}; or 'auto'") from None
    return backend(block_size=block_size)
