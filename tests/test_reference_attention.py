"""Masked attention backends agree with the dense VAA reference; the flex lookup and BlockMask are exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from picbench.reference_impl import TokenLayout, dense_vaa_mask, get_backend, volume_weights
from picbench.reference_impl.attention import (
    ATTENTION_BACKENDS,
    FlexAttention,
    LowRankSdpaAttention,
    SdpaAttention,
    vaa_block_counts,
    vaa_lookup,
)
from picbench.testing.attention import BLOCK, CASES, LENGTH, reference_attention
from picbench.testing.attention import TARGET as CASE_TARGET

# every registered backend that compiles no kernel per shape (property tests draw many shapes)
UNCOMPILED = [n for n in ATTENTION_BACKENDS.names() if not ATTENTION_BACKENDS.get(n).compiles_per_shape]
TRAIN_ON_CPU = [n for n in ATTENTION_BACKENDS.names() if "cpu" in ATTENTION_BACKENDS.get(n).backward_devices]


@st.composite
def layout_and_weights(draw: st.DrawFn) -> tuple[TokenLayout, torch.Tensor]:
    """Random VAA layouts: 1-3 references, lattice boxes (borders, overlaps, single cells), both coverage rules."""
    k = draw(st.integers(1, 3))
    grid = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    edge = st.lists(st.integers(0, 24), min_size=2, max_size=2, unique=True).map(lambda v: sorted(x / 24 for x in v))
    boxes = []
    for _ in range(k + draw(st.integers(0, 1))):  # sometimes one spare box that only occludes
        x, y = draw(edge), draw(edge)
        boxes.append((x[0], y[0], x[1], y[1]))
    weights = volume_weights(
        boxes,
        draw(st.permutations(range(len(boxes)))),
        grid,
        sigma=draw(st.floats(0.2, 6.0)),
        coverage=draw(st.sampled_from(["any", "fraction"])),
    )
    refs = tuple((draw(st.integers(1, 5)), draw(st.integers(1, 5))) for _ in range(k))
    return TokenLayout(draw(st.integers(0, 9)), grid, refs), weights


@settings(max_examples=80, deadline=None)
@given(layout_and_weights())
def test_flex_lookup_table_reproduces_the_dense_mask(case: tuple[TokenLayout, torch.Tensor]) -> None:
    layout, weights = case
    lookup = vaa_lookup(layout, weights, pad_to=layout.length + 5)
    code = lookup.code[: layout.length].long()
    from_table = lookup.table[code[:, None] + code[None, :]]
    assert torch.equal(from_table, dense_vaa_mask(layout, weights))
    assert lookup.table.numel() <= 4096, "the lookup must stay compact, not grow with L^2"
    assert torch.all(lookup.code[layout.length :] == 0)


@settings(max_examples=80, deadline=None)
@given(layout_and_weights(), st.sampled_from([1, 4, 8, 16]))
def test_block_counts_match_the_dense_mask(case: tuple[TokenLayout, torch.Tensor], block: int) -> None:
    layout, weights = case
    counts = vaa_block_counts(layout, weights, block)
    n_blocks = -(-layout.length // block)
    masked = torch.zeros(n_blocks * block, n_blocks * block, dtype=torch.bool)
    masked[: layout.length, : layout.length] = torch.isinf(dense_vaa_mask(layout, weights))
    brute = masked.view(n_blocks, block, n_blocks, block).sum((1, 3))
    assert torch.equal(counts.masked.long(), brute)
    real = torch.zeros(n_blocks * block)
    real[: layout.length] = 1
    size = real.view(n_blocks, block).sum(1)
    assert torch.equal(counts.total, torch.outer(size, size).double())


@pytest.mark.parametrize("name", UNCOMPILED)
@settings(max_examples=30, deadline=None)
@given(case=layout_and_weights())
def test_sdpa_backends_equal_written_out_attention(name: str, case: tuple[TokenLayout, torch.Tensor]) -> None:
    layout, weights = case
    backend = get_backend(name, "cpu")
    gen = torch.Generator().manual_seed(layout.length)
    q, k, v = (torch.randn(2, 3, layout.length, 8, generator=gen) for _ in range(3))
    mask = dense_vaa_mask(layout, weights)
    out = backend(q, k, v, backend.prepare(layout, weights, device="cpu", dtype=torch.float32))
    torch.testing.assert_close(out, reference_attention(q, k, v, mask), rtol=0, atol=1e-5)
    assert not torch.isnan(out).any()
    plain = backend(q, k, v, backend.prepare(layout, None, device="cpu", dtype=torch.float32))
    torch.testing.assert_close(plain, reference_attention(q, k, v, None), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", TRAIN_ON_CPU)
def test_sdpa_backends_train_on_cpu_with_the_reference_gradient(name: str) -> None:
    layout = TokenLayout(3, (4, 4), ((2, 2), (2, 3)))
    weights = volume_weights([(0, 0, 0.6, 0.6), (0.4, 0.4, 1, 1)], [0, 1], layout.target_hw)
    backend = get_backend(name, "cpu")
    q = torch.randn(1, 2, layout.length, 8, requires_grad=True)
    backend(q, q, q, backend.prepare(layout, weights, device="cpu", dtype=torch.float32)).square().sum().backward()
    q_ref = q.detach().clone().requires_grad_(True)
    reference_attention(q_ref, q_ref, q_ref, dense_vaa_mask(layout, weights)).square().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    torch.testing.assert_close(q.grad, q_ref.grad, rtol=1e-5, atol=1e-5)


def test_lowrank_bias_is_exact_in_bfloat16_and_refuses_float16() -> None:
    layout = TokenLayout(4, (6, 6), ((3, 3), (2, 2)))
    weights = volume_weights([(0, 0, 0.7, 0.7), (0.3, 0.3, 1, 1)], [1, 0], layout.target_hw)
    backend = LowRankSdpaAttention()
    q, k, v = (torch.randn(1, 2, layout.length, 16) for _ in range(3))
    out = backend(*(t.bfloat16() for t in (q, k, v)), backend.prepare(layout, weights, device="cpu", dtype=torch.bfloat16))
    expected = reference_attention(q, k, v, dense_vaa_mask(layout, weights))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=5e-2)
    with pytest.raises(ValueError, match="float16"):
        backend.prepare(layout, weights, device="cpu", dtype=torch.float16)


def test_get_backend_picks_per_device_and_rejects_unknown_names() -> None:
    assert isinstance(get_backend("auto", "cpu"), LowRankSdpaAttention)
    assert isinstance(get_backend("sdpa", "cpu"), SdpaAttention)
    assert isinstance(get_backend("auto", torch.device("cuda")), FlexAttention)
    flex = get_backend("flex", "cpu", block_size=64)
    assert flex.name == "flex" and flex.block_size == 64
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        get_backend("xformers", "cpu")  # type: ignore[arg-type]


def test_flex_prepare_builds_no_square_tensor() -> None:
    layout = TokenLayout(512, (64, 64), ((20, 20), (20, 20)))
    weights = volume_weights([(0.05, 0.05, 0.55, 0.55), (0.45, 0.4, 0.95, 0.9)], [0, 1], layout.target_hw)
    plan = FlexAttention().prepare(layout, weights, device="cpu", dtype=torch.float32)
    closure = [c.cell_contents for c in plan.score_mod.__closure__]
    assert all(t.numel() < 2 * layout.length for t in closure if isinstance(t, torch.Tensor))
    # Blocks of 128 over ref-ref and target-ref pairs outside the boxes are skipped.
    assert 0.05 < plan.skipped_fraction < 0.5
    padded = -(-layout.length // 128) * 128
    assert plan.padded_length == padded and plan.block_mask.shape[-2:] == (padded, padded)


# --- compiled FlexAttention: one sequence length, block size and table capacity, so one compile ---

FLEX_LEN, FLEX_BLOCK, TARGET, FLEX_CASES = LENGTH, BLOCK, CASE_TARGET, CASES  # the suite's cases (picbench.testing.attention)


@pytest.mark.slow
@pytest.mark.parametrize("case", FLEX_CASES)
def test_flex_backend_matches_dense_reference(case: str) -> None:
    boxes, refs, coverage = FLEX_CASES[case]
    n_image = TARGET[0] * TARGET[1] + sum(h * w for h, w in refs)
    layout = TokenLayout(FLEX_LEN - n_image, TARGET, tuple(refs))
    weights = volume_weights(boxes, list(range(len(boxes)))[::-1], TARGET, coverage=coverage)
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 2, FLEX_LEN, 16, generator=gen) for _ in range(3))
    backend = get_backend("flex", "cpu", block_size=FLEX_BLOCK)
    plan = backend.prepare(layout, weights, device="cpu", dtype=torch.float32)
    out = backend(q, k, v, plan)
    expected = reference_attention(q, k, v, dense_vaa_mask(layout, weights))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    if len(refs) > 1:
        assert plan.skipped_fraction > 0, "ref-ref blocks should be skipped"


@pytest.mark.slow
def test_flex_backend_is_exact_when_the_sequence_is_not_whole_blocks() -> None:
    """L=40 with blocks of 128: unpadded, the compiled CPU kernel returned wrong text rows."""
    layout = TokenLayout(16, (4, 4), ((2, 2), (2, 2)))
    weights = volume_weights([(0.05, 0.3, 0.55, 0.95), (0.4, 0.1, 0.95, 0.7)], [0, 1], layout.target_hw)
    backend = get_backend("flex", "cpu")
    plan = backend.prepare(layout, weights, device="cpu", dtype=torch.float32)
    expected_mask = dense_vaa_mask(layout, weights)
    gen = torch.Generator().manual_seed(11)
    for _ in range(3):
        q, k, v = (torch.randn(1, 2, layout.length, 16, generator=gen) for _ in range(3))
        out = backend(q, k, v, plan)
        assert out.shape == q.shape
        torch.testing.assert_close(out, reference_attention(q, k, v, expected_mask), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_unmasked_flex_matches_unmasked_attention() -> None:
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, FLEX_LEN, 16, generator=gen) for _ in range(3))
    backend = get_backend("flex", "cpu")
    out = backend(q, k, v, backend.prepare(TokenLayout(FLEX_LEN - 208, TARGET, ((8, 8),)), None, device="cpu", dtype=torch.float32))
    torch.testing.assert_close(out, reference_attention(q, k, v, None), rtol=0, atol=1e-5)
