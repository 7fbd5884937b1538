"""RunConfig to and from the record a shard stores (one place, every field, a JSON round trip), and
to and from the run file: `picbench run --config FILE`, and the OUT/run.toml every run writes."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from run_bench_helpers import write_tiny_bench
from typer.testing import CliRunner

from picbench.cli import app
from picbench.cli.run import parse_assignments
from picbench.run_file import RUN_FILE, read_run_file, write_run_file
from picbench.runner import RunConfig, Shard
from picbench.toml_config import read_toml

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


# -- the run file: `picbench run --config FILE`, and OUT/run.toml ------------------------------------


def _text(output: str) -> str:
    return " ".join(output.split())


def _results(out: Path) -> dict:
    """results.json without what differs between two invocations by design (none of the numbers)."""
    result = json.loads((out / "results.json").read_text())
    result["provenance"].pop("created", None)
    return result


def test_a_run_rerun_from_its_written_config_does_nothing_new_and_gives_the_same_results(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # paths as given, relative ones included, from the folder the run started in
    write_tiny_bench(tmp_path, data_dir, n=3)
    args = ["run", "--method", "paste", "--bench", "tiny-run-bench.jsonl", "--data-dir", str(data_dir), "--models", "tiny"]
    args += ["--detector", "none", "--limit", "2", "--seeds", "0,1", "--param", "fit=contain", "--out", "runs/first"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    written = Path("runs/first") / RUN_FILE
    options = read_toml(written)
    assert options["method"] == "paste" and options["seeds"] == [0, 1] and options["limit"] == 2 and options["out"] == "runs/first"
    assert options["param"] == {"fit": "contain"} and options["detector"] == "none" and options["models"] == "tiny"
    before = _results(Path("runs/first"))
    again = CliRunner().invoke(app, ["run", "--config", str(written)])
    assert again.exit_code == 0, again.output
    assert "generated 0 (4 reused)" in _text(again.output) and "scored 0 (4 reused)" in _text(again.output)
    assert _results(Path("runs/first")) == before
    assert read_toml(written) == options  # the rerun wrote the same options
    elsewhere = CliRunner().invoke(app, ["run", "--config", str(written), "--out", "runs/second"])  # the command line wins
    assert elsewhere.exit_code == 0 and "generated 4 (0 reused)" in _text(elsewhere.output), elsewhere.output
    assert _results(Path("runs/second"))["metrics"] == _results(Path("runs/first"))["metrics"]
    assert read_toml(Path("runs/second") / RUN_FILE) == {**options, "out": "runs/second"}


def test_the_run_file_reads_back_what_a_run_config_writes(tmp_path: Path) -> None:
    """Every recorded option, and `--param` values the CLI would parse as JSON, round-trip as the CLI reads them."""
    config = _everything_set(tmp_path / "run")
    params = {"fit": "contain", "digits": "123", "nothing": None, "pair": [1, 2.5], "nested": {"a": True}, "flag": False}
    config = RunConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, "params": params, "precision": "bf16"})
    write_run_file(tmp_path, config.run_file_options())
    options = read_run_file(tmp_path / RUN_FILE)
    assert parse_assignments(options.pop("param"), "--param") == params
    assert parse_assignments(options.pop("weights"), "--weights") == {"clip": "/w/clip"}
    assert options == {
        "method": "paste",
        "bench": "dreambench-multi",
        "out": str(tmp_path / "run"),
        "seeds": "3,1",
        "limit": 7,
        "device": "cuda:1",
        "models": "tiny",
        "data_dir": "/data/root",
        "detector": "owlv2",
        "protocols": "default",
        "precision": "bf16",
        "metrics": "clip_i,iou",
        "weights_dir": "/w/methods",
        "batch_size": 2,
    }


@pytest.mark.parametrize(
    ("text", "field"),
    [("methd = 'paste'", "methd"), ("seeds = '0,1'", "seeds"), ("limit = 1.5", "limit"), ("[param]\nfit = nan", None)],
)
def test_a_bad_run_file_is_refused_naming_the_file_and_key(tmp_path: Path, text: str, field: str | None) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    message = _text(result.output)
    assert str(path) in message or "--method is required" in message, message
    if field is not None:
        assert f"field {field!r}" in message, message
