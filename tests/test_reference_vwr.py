"""VWR properties, the layout checks, the token layout, UnoPE ids and the dense VAA rules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from picbench.reference_impl import (
    DEFAULT_DELTA,
    DEFAULT_SIGMA,
    LayoutError,
    TokenLayout,
    dense_vaa_mask,
    unope_image_ids,
    validate_layout,
    volume_weights,
)
from picbench.reference_impl.vwr import axis_occupancy

FAST = settings(max_examples=60, deadline=None)


@st.composite
def boxes_st(draw: st.DrawFn, min_n: int = 1, max_n: int = 4) -> list[tuple[float, float, float, float]]:
    n = draw(st.integers(min_n, max_n))
    out = []
    # Coordinates on a 1/240 lattice: edges land on cell boundaries of most grids, and inside cells.
    edge = st.lists(st.integers(0, 240), min_size=2, max_size=2, unique=True).map(lambda v: sorted(x / 240 for x in v))
    for _ in range(n):
        x, y = draw(edge), draw(edge)
        out.append((x[0], y[0], x[1], y[1]))
    return out


@st.composite
def scene_st(draw: st.DrawFn, min_n: int = 1, max_n: int = 4) -> dict:
    boxes = draw(boxes_st(min_n, max_n))
    n = len(boxes)
    return {
        "boxes": boxes,
        "depths": draw(st.permutations(range(n))),
        "sigma": draw(st.lists(st.floats(0.1, 8.0), min_size=n, max_size=n)),
        "delta": draw(st.floats(0.1, 2.0)),
        "grid_hw": (draw(st.integers(1, 12)), draw(st.integers(1, 12))),
        "coverage": draw(st.sampled_from(["any", "fraction"])),
    }


def weights_of(scene: dict, **override) -> torch.Tensor:
    return volume_weights(**{**scene, **override}, dtype=torch.float64)


def cells_touching(box: tuple[float, float, float, float], grid_hw: tuple[int, int]) -> torch.Tensor:
    """Cells whose area overlaps the box by more than float dust (an independent, brute-force rule)."""
    rows, cols = grid_hw
    x0, y0, x1, y1 = box
    r = torch.arange(rows, dtype=torch.float64)
    c = torch.arange(cols, dtype=torch.float64)
    overlap_y = ((r + 1) / rows).clamp(max=y1) - (r / rows).clamp(min=y0) > 1e-9
    overlap_x = ((c + 1) / cols).clamp(max=x1) - (c / cols).clamp(min=x0) > 1e-9
    return overlap_y[:, None] & overlap_x[None, :]


@FAST
@given(scene_st())
def test_weights_lie_in_unit_interval(scene: dict) -> None:
    w = weights_of(scene)
    assert w.shape == (len(scene["boxes"]), *scene["grid_hw"])
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0


@FAST
@given(scene_st())
def test_weight_is_zero_outside_its_box_and_positive_inside(scene: dict) -> None:
    w = weights_of(scene)
    for k, box in enumerate(scene["boxes"]):
        touching = cells_touching(box, scene["grid_hw"])
        assert torch.all(w[k][~touching] == 0), f"box {k} leaks outside its cells"
        if scene["coverage"] == "any":
            assert torch.all(w[k][touching] > 0), f"box {k} is invisible in a cell it covers"


@FAST
@given(scene_st(min_n=2))
def test_subject_unaffected_by_those_behind_it(scene: dict) -> None:
    w = weights_of(scene)
    for n, depth in enumerate(scene["depths"]):
        keep = [m for m, d in enumerate(scene["depths"]) if d <= depth]
        sub = weights_of(
            scene,
            boxes=[scene["boxes"][m] for m in keep],
            depths=[scene["depths"][m] for m in keep],
            sigma=[scene["sigma"][m] for m in keep],
        )
        torch.testing.assert_close(sub[keep.index(n)], w[n], rtol=0, atol=1e-12)


@FAST
@given(scene_st(max_n=3), boxes_st(max_n=1))
def test_weight_falls_as_a_subject_steps_in_front(scene: dict, new_box: list) -> None:
    before = weights_of(scene)
    after = weights_of(
        scene,
        boxes=new_box + scene["boxes"],
        depths=[-1] + list(scene["depths"]),
        sigma=[1.0] + list(scene["sigma"]),
    )[1:]
    assert torch.all(after <= before + 1e-15)
    covered = cells_touching(new_box[0], scene["grid_hw"]) if scene["coverage"] == "any" else None
    if covered is not None:
        visible = (before > 0) & covered[None]
        assert torch.all(after[visible] < before[visible])
        torch.testing.assert_close(after[:, ~covered], before[:, ~covered], rtol=0, atol=0)


@FAST
@given(scene_st())
def test_weights_on_a_ray_sum_to_at_most_one(scene: dict) -> None:
    total = weights_of(scene).sum(0)
    assert float(total.max()) <= 1.0 + 1e-12


@FAST
@given(scene_st(min_n=2), st.randoms(use_true_random=False))
def test_only_depth_ranks_matter_not_listing_order(scene: dict, rnd) -> None:
    w = weights_of(scene)
    order = list(range(len(scene["boxes"])))
    rnd.shuffle(order)
    shuffled = weights_of(
        scene,
        boxes=[scene["boxes"][i] for i in order],
        depths=[10 * scene["depths"][i] + 7 for i in order],  # same ranking, other numbers
        sigma=[scene["sigma"][i] for i in order],
    )
    torch.testing.assert_close(shuffled, w[order], rtol=0, atol=0)


def test_overlap_follows_the_nerf_weight_with_documented_defaults() -> None:
    w = volume_weights([(0.0, 0.0, 0.5, 1.0), (0.25, 0.0, 1.0, 1.0)], [1, 0], (1, 4), dtype=torch.float64)
    s = DEFAULT_SIGMA * DEFAULT_DELTA
    front = 1 - math.exp(-s)
    assert w[1].tolist() == [[0.0, pytest.approx(front), pytest.approx(front), pytest.approx(front)]]
    behind = math.exp(-s) * front
    assert w[0].tolist() == [[pytest.approx(front), pytest.approx(behind), 0.0, 0.0]]


def test_box_edge_rules() -> None:
    # An edge exactly on a cell boundary (0.5 of 8 cells) does not spill into the next cell.
    assert axis_occupancy(0.0, 0.5, 8, "any").tolist() == [1.0] * 4 + [0.0] * 4
    # Float dust (0.3 * 10 = 3.0000000000000004) does not reach cell 3.
    assert axis_occupancy(0.1, 0.3, 10, "any").nonzero().flatten().tolist() == [1, 2]
    # A cut cell counts as inside under "any", by its covered share under "fraction".
    assert axis_occupancy(0.05, 0.3, 4, "any").tolist() == [1.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(axis_occupancy(0.05, 0.3, 4, "fraction"), torch.tensor([0.8, 0.2, 0.0, 0.0], dtype=torch.float64))
    # A box far smaller than a cell still owns exactly one token.
    w = volume_weights([(0.51, 0.51, 0.5101, 0.5101)], [0], (8, 8))
    assert (w[0] > 0).nonzero().tolist() == [[4, 4]]
    # A box touching the right/bottom border covers the last cell and nothing beyond.
    w = volume_weights([(0.9, 0.9, 1.0, 1.0)], [0], (4, 4))
    assert (w[0] > 0).nonzero().tolist() == [[3, 3]]


def test_fraction_coverage_scales_density_by_covered_share() -> None:
    w = volume_weights([(0.0, 0.0, 0.125, 1.0)], [0], (1, 4), sigma=2.0, delta=1.0, coverage="fraction", dtype=torch.float64)
    assert w[0, 0, 0].item() == pytest.approx(1 - math.exp(-2.0 * 0.5))
    assert w[0, 0, 1:].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"sigma": 0.0}, "sigma and delta must be > 0"),
        ({"delta": -1.0}, "sigma and delta must be > 0"),
        ({"sigma": [1.0, 2.0, 3.0]}, "3 sigma values"),
        ({"coverage": "center"}, "coverage must be one of"),
        ({"depths": [0]}, "1 depth ranks"),
        ({"boxes": [(0, 0, 0.5, 0.5), (0.5, 0.9, 1, 0.2)]}, "empty or inverted"),
    ],
)
def test_volume_weights_rejects_bad_parameters(kwargs: dict, needle: str) -> None:
    args = {"boxes": [(0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)], "depths": [0, 1], "grid_hw": (4, 4)} | kwargs
    with pytest.raises(ValueError, match=needle):
        volume_weights(**args)


@pytest.mark.parametrize(
    ("boxes", "depths", "n_refs", "size", "needle"),
    [
        ([(0.1, 0.1, 1.2, 0.5)], [0], 1, {}, r"box 0: .* outside \[0, 1\]"),
        ([(-0.1, 0.1, 0.5, 0.5)], [0], 1, {}, r"outside \[0, 1\]"),
        ([(0.5, 0.1, 0.5, 0.5)], [0], 1, {}, "empty or inverted"),
        ([(0.1, 0.1, 0.5, 0.5), (0.6, 0.6, 0.2, 0.9)], [0, 1], 2, {}, "box 1: .* empty or inverted"),
        ([(0.1, 0.1, 0.5, 0.5)], [0], 2, {}, "2 reference images but only 1 boxes"),
        ([(0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6)], [1, 1], 2, {}, "depth rank 1 is given to both box 0 and box 1"),
        ([(0.1, 0.1, 0.5, 0.5)], [0, 1], 1, {}, "1 boxes but 2 depth ranks"),
        ([(0.1, 0.1, 0.5, 0.5)], [-1], 1, {}, "integer >= 0"),
        ([(0.1, 0.1, 0.5, 0.5)], [0], 0, {}, "at least one reference"),
        ([(0.1, 0.1, 0.1005, 0.5)], [0], 1, {"width": 512, "height": 512}, "narrower than one pixel at width 512"),
        ([(0.1, 0.1, float("nan"), 0.5)], [0], 1, {}, "NaN or infinite"),
    ],
)
def test_validate_layout_names_the_problem(boxes, depths, n_refs, size, needle) -> None:
    with pytest.raises(LayoutError, match=needle):
        validate_layout(boxes, depths, n_refs, **size)


def test_validate_layout_accepts_a_border_box_and_spare_boxes() -> None:
    validate_layout([(0.0, 0.0, 1.0, 1.0), (0.0, 0.5, 0.5, 1.0)], [1, 0], 1, width=512, height=512)


def test_token_layout_tiles_the_sequence() -> None:
    layout = TokenLayout(7, (3, 4), ((2, 2), (1, 5)))
    assert layout.length == 7 + 12 + 4 + 5
    groups = layout.groups
    assert [g.kind for g in groups] == ["text", "target", "ref_0", "ref_1"]
    assert groups[0].start == 0 and groups[-1].end == layout.length
    assert all(a.end == b.start for a, b in zip(groups, groups[1:]))
    assert (layout.target_slice.start, layout.target_slice.stop) == (7, 19)
    assert (layout.ref_slice(1).start, layout.ref_slice(1).stop) == (23, 28)
    assert layout.image_slice == slice(7, 28)
    with pytest.raises(IndexError, match="2 references"):
        layout.ref_slice(2)
    with pytest.raises(ValueError, match="ref_hws\\[0\\]"):
        TokenLayout(0, (2, 2), ((0, 3),))


def test_unope_matches_flux_target_ids_and_shifts_refs_diagonally() -> None:
    ids = unope_image_ids((4, 6), [(3, 3), (2, 5)])
    assert ids.shape == (24 + 9 + 10, 3) and ids.dtype == torch.float32
    # Target: diffusers FluxPipeline._prepare_latent_image_ids, i.e. [0, row, col] in row-major order.
    assert [tuple(r) for r in ids[:24].int().tolist()] == [(0, r, c) for r in range(4) for c in range(6)]
    ref0, ref1 = ids[24:33], ids[33:]
    assert ref0[0].tolist() == [0, 4, 6] and ref0[-1].tolist() == [0, 6, 8]
    assert ref1[0].tolist() == [0, 7, 9] and ref1[-1].tolist() == [0, 8, 13]
    assert torch.all(ids[:, 0] == 0)
    assert len({tuple(r) for r in ids.tolist()}) == len(ids), "two image tokens share a position"


@FAST
@given(scene_st(max_n=3), st.integers(0, 6))
def test_dense_vaa_mask_follows_the_design_rules(scene: dict, n_text: int) -> None:
    k = len(scene["boxes"])
    layout = TokenLayout(n_text, scene["grid_hw"], tuple((1 + i, 2) for i in range(k)))
    w = volume_weights(**scene)
    mask = dense_vaa_mask(layout, w)
    assert mask.shape == (layout.length, layout.length)
    assert torch.equal(mask, mask.T)
    t = layout.target_slice
    assert torch.all(mask[layout.text_slice] == 0)
    assert torch.all(mask[t, t] == 0)
    for i in range(k):
        ri = layout.ref_slice(i)
        assert torch.all(mask[ri, ri] == 0)
        torch.testing.assert_close(mask[t, ri], torch.log(w[i]).reshape(-1, 1).expand(-1, ri.stop - ri.start))
        for j in range(k):
            if j != i:
                assert torch.all(mask[ri, layout.ref_slice(j)] == float("-inf"))
    assert torch.all(torch.isfinite(mask).any(1)), "a query row would attend to nothing"


def test_dense_vaa_mask_rejects_weights_off_the_target_grid() -> None:
    layout = TokenLayout(2, (4, 4), ((2, 2), (2, 2)))
    with pytest.raises(ValueError, match=r"\[>= 2, 4, 4\]"):
        dense_vaa_mask(layout, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dense_vaa_mask(layout, torch.full((2, 4, 4), 1.5))
