"""The joint token sequence of PositionIC and the checks a layout must pass before any model runs.

FLUX attends over one sequence `[text, target-image latents, ref_1 latents, ..., ref_K latents]`
(diffusers concatenates text before image tokens). Every mask, weight map and kernel in
`picbench.reference_impl` addresses tokens through one `TokenLayout`, so they cannot disagree
on where a group starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from picbench.errors import BenchFormatError, PicbenchError
from picbench.records import check_box


class LayoutError(PicbenchError, ValueError):
    """A subject layout (boxes, depth ranks, references) that no model should be run on."""


class TokenGroup(NamedTuple):
    """A contiguous run of tokens: `kind` is "text", "target" or "ref_<k>" (k counted from 0)."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class TokenLayout:
    """Where each token group sits in the joint sequence; grids are (rows, cols) of latent tokens."""

    n_text: int
    target_hw: tuple[int, int]
    ref_hws: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if self.n_text < 0:
            raise ValueError(f"TokenLayout: n_text must be >= 0, got {self.n_text}")
        for name, hw in [("target_hw", self.target_hw)] + [(f"ref_hws[{k}]", hw) for k, hw in enumerate(self.ref_hws)]:
            if len(hw) != 2 or min(hw) < 1:
                raise ValueError(f"TokenLayout: {name} must be (rows, cols) with both >= 1, got {hw!r}")
        # Normalise lists (from JSON, callers) to tuples so the layout stays hashable.
        object.__setattr__(self, "target_hw", tuple(int(x) for x in self.target_hw))
        object.__setattr__(self, "ref_hws", tuple(tuple(int(x) for x in hw) for hw in self.ref_hws))

    @property
    def n_target(self) -> int:
        return self.target_hw[0] * self.target_hw[1]

    @property
    def n_refs(self) -> int:
        return len(self.ref_hws)

    @property
    def ref_lengths(self) -> tuple[int, ...]:
        return tuple(h * w for h, w in self.ref_hws)

    @property
    def length(self) -> int:
        return self.n_text + self.n_target + sum(self.ref_lengths)

    @property
    def text_slice(self) -> slice:
        return slice(0, self.n_text)

    @property
    def target_slice(self) -> slice:
        return slice(self.n_text, self.n_text + self.n_target)

    @property
    def image_slice(self) -> slice:
        """Target and reference tokens: the part of the sequence FLUX calls `hidden_states`."""
        return slice(self.n_text, self.length)

    def ref_slice(self, k: int) -> slice:
        if not 0 <= k < self.n_refs:
            raise IndexError(f"reference {k} out of range: the layout has {self.n_refs} references")
        start = self.target_slice.stop + sum(self.ref_lengths[:k])
        return slice(start, start + self.ref_lengths[k])

    @property
    def groups(self) -> tuple[TokenGroup, ...]:
        """Every non-empty group in sequence order."""
        out = []
        if self.n_text:
            out.append(TokenGroup(0, self.n_text, "text"))
        out.append(TokenGroup(self.target_slice.start, self.target_slice.stop, "target"))
        for k in range(self.n_refs):
            s = self.ref_slice(k)
            out.append(TokenGroup(s.start, s.stop, f"ref_{k}"))
        return tuple(out)


def validate_layout(
    boxes: Sequence[Sequence[float]],
    depths: Sequence[int],
    n_refs: int,
    width: int | None = None,
    height: int | None = None,
) -> None:
    """Reject a subject layout with a message naming the subject and what is wrong.

    `boxes` are normalized xyxy in [0, 1] (one per subject), `depths` their depth ranks
    (0 = front-most, each rank once), `n_refs` the number of reference images given. With
    `width`/`height` (output pixels) a box must also span at least one pixel each way.
    """
    if len(boxes) != len(depths):
        raise LayoutError(f"layout: {len(boxes)} boxes but {len(depths)} depth ranks; give one depth rank per box")
    if n_refs > len(boxes):
        raise LayoutError(f"layout: {n_refs} reference images but only {len(boxes)} boxes; every reference needs a box")
    if n_refs < 1:
        raise LayoutError("layout: at least one reference image is required")
    for name, size in (("width", width), ("height", height)):
        if size is not None and size < 1:
            raise LayoutError(f"layout: output {name} must be >= 1 pixel, got {size}")
    for i, box in enumerate(boxes):
        try:
            x0, y0, x1, y1 = check_box(box, field_name=f"boxes[{i}]")
        except BenchFormatError as err:
            raise LayoutError(f"layout: box {i}: {err.reason}") from err
        if width is not None and (x1 - x0) * width < 1.0:
            raise LayoutError(f"layout: box {i} {list(box)!r} is narrower than one pixel at width {width}")
        if height is not None and (y1 - y0) * height < 1.0:
            raise LayoutError(f"layout: box {i} {list(box)!r} is shorter than one pixel at height {height}")
    seen: dict[int, int] = {}
    for i, d in enumerate(depths):
        if isinstance(d, bool) or int(d) != d or d < 0:
            raise LayoutError(f"layout: depth rank of box {i} must be an integer >= 0, got {d!r}")
        if int(d) in seen:
            raise LayoutError(f"layout: depth rank {d} is given to both box {seen[int(d)]} and box {i}; ranks must be distinct")
        seen[int(d)] = i
