"""`reference_impl.sample_inputs`: the one rule by which a Sample becomes PositionIC's inputs, for the
`positionic`/`uno` methods and the trainer's validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from picbench.errors import BenchFormatError
from picbench.records import Sample, Subject
from picbench.reference_impl.sample_inputs import sample_inputs, sample_layout

DOG = "dreambench/dataset/dog/00.jpg"
BACKPACK = "dreambench/dataset/backpack/00.jpg"
BOXES = ((0.05, 0.3, 0.55, 0.95), (0.4, 0.1, 0.95, 0.7))


def _sample(boxes=BOXES, depths=(1, 0), refs=(DOG, BACKPACK), sample_id: str = "s") -> Sample:
    subjects = tuple(Subject(n, n, (r,), box=b, depth=d) for n, r, b, d in zip(("dog", "backpack"), refs, boxes, depths))
    return Sample(sample_id, "a dog and a backpack", 64, 64, "multi", subjects)


def test_references_boxes_and_ranks_in_subject_order(data_dir: Path) -> None:
    refs, boxes, depths = sample_inputs(_sample(), data_dir)
    assert len(refs) == 2 and all(r.mode == "RGB" for r in refs)
    assert boxes == list(BOXES) and depths == [1, 0]
    assert sample_layout(_sample(depths=(None, None))).depths == [0, 1]  # no ranks: the listing order


def test_no_layout_without_boxes_or_when_not_wanted(data_dir: Path) -> None:
    assert sample_inputs(_sample(boxes=(None, None), depths=(None, None)), data_dir)[1:] == (None, None)
    unboxed = sample_inputs(_sample(depths=(5, 5)), data_dir, with_layout=False)  # UNO: the layout is not read, nor checked
    assert unboxed.boxes is None and unboxed.depths is None and len(unboxed.references) == 2


@pytest.mark.parametrize(
    ("boxes", "depths", "field", "match"),
    [
        (BOXES, (0, None), "subjects.depth", "some subjects have a depth rank"),
        (BOXES, (0, 0), "subjects", "depth rank 0"),
        (((0.6, 0.1, 0.2, 0.5), BOXES[1]), (0, 1), "subjects", "inverted"),
    ],
)
def test_bad_layout_names_sample_and_field_before_any_file_is_read(tmp_path: Path, boxes, depths, field: str, match: str) -> None:
    bad = _sample(boxes, depths, refs=("missing/a.png", "missing/b.png"), sample_id="bad-one")
    with pytest.raises(BenchFormatError, match=match) as err:
        sample_inputs(bad, tmp_path)
    assert (err.value.sample_id, err.value.field) == ("bad-one", field)
