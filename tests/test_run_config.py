"""RunConfig to and from the record a shard stores: one place, every field, a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from picbench.runner import RunConfig, Shard

PER_INVOCATION = {"out", "shard", "retry_failed"}


def _everything_set(out: Path) -> RunConfig:
    return RunConfig(
        method="paste",
        bench="dreambench-multi",
        out=out,
        seeds=(3, 1),
        limit=7,
        device="cuda:1",
        models="tiny",
        shard=Shard(1, 4),
        data_dir=Path("/data/root"),
        detector="owlv2",
        metrics=("clip_i", "iou"),
        params={"fit": "contain", "background": "white"},
        weights={"clip": "/w/clip"},
        weights_dir=Path("/w/methods"),
        batch_size=2,
        retry_failed=True,
    )


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    config = _everything_set(tmp_path / "run")
    record = json.loads(json.dumps(config.to_record()))
    rebuilt = RunConfig.from_record(record, out=config.out)
    per_invocation = {"shard": None, "retry_failed": False}
    assert rebuilt == RunConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, **per_invocation})


def test_every_field_is_recorded_unless_it_belongs_to_one_invocation(tmp_path: Path) -> None:
    record = _everything_set(tmp_path).to_record()
    assert set(record) == {f.name for f in fields(RunConfig)} - PER_INVOCATION
    assert record["data_dir"] == "/data/root" and record["seeds"] == [3, 1] and record["metrics"] == ["clip_i", "iou"]


def test_defaults_fill_what_an_older_record_lacks_and_overrides_win(tmp_path: Path) -> None:
    record = RunConfig(method="paste", bench="dreambench", out=tmp_path).to_record()
    del record["weights_dir"]  # stores written before --weights-dir
    rebuilt = RunConfig.from_record(record, out=tmp_path / "elsewhere", device="cuda")
    assert rebuilt.weights_dir is None and rebuilt.out == tmp_path / "elsewhere" and rebuilt.device == "cuda"
    assert rebuilt.data_dir is None and rebuilt.metrics is None and rebuilt.seeds == (0,)
