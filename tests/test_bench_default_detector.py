"""Each bench's default detector: the paper's Vision-R1 on the PositionIC benches, Grounding DINO
elsewhere; a run records the one it resolved, so a merge and the results name it."""

from __future__ import annotations

import json
from pathlib import Path

from run_bench_helpers import tiny_samples, write_tiny_bench

from picbench.benches import default_detector
from picbench.runner import RunConfig, run
from picbench.store import RunStore


def test_positionic_benches_default_to_vision_r1() -> None:
    """PositionIC computes IoU and AP "via Vision-R1" (the paper, DESIGN.md "Detection")."""
    assert default_detector("positionic") == default_detector("positionic-open") == "vision-r1"
    assert default_detector("dreambench") == default_detector("msbench") == default_detector("my-bench") == "grounding-dino"


def _run(tmp_path: Path, data_dir: Path, name: str, **kw) -> dict:
    bench = write_tiny_bench(tmp_path / name, data_dir, samples=tiny_samples(2, size=48), name=name)
    out = tmp_path / name / "run"
    config = RunConfig("paste", str(bench), out, seeds=(0,), models="tiny", data_dir=data_dir, metrics=("iou",), **kw)
    run(config)
    with RunStore(out) as store:
        ((recorded, _),) = store.parts().values()
    result = json.loads((out / "results.json").read_text())
    return {"recorded": recorded["detector"], "engine": result["provenance"]["metric_engine"]["detector"]}


def test_a_run_on_positionic_open_scores_with_vision_r1_queried_per_category(tmp_path: Path, data_dir: Path) -> None:
    found = _run(tmp_path, data_dir, "positionic-open")
    assert found["recorded"] == "vision-r1"  # resolved before it is stored: `picbench merge` rebuilds the same engine
    assert found["engine"]["detector"] == "vision-r1" and found["engine"]["query_mode"] == "one query per category"
    chosen = _run(tmp_path, data_dir, "other", detector="vision-r1")
    assert chosen["recorded"] == "vision-r1"
    plain = _run(tmp_path, data_dir, "plain")
    assert plain["recorded"] == "grounding-dino" and plain["engine"]["query_mode"] == "all categories in one query"
