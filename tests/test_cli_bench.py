"""The bench verbs through typer's CliRunner: ls, validate, bench build, bench export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from picbench.benches import built_bench_dir
from picbench.benches.hf import load_bench_hf
from picbench.benches.jsonl import read_bench_jsonl, write_bench_jsonl
from picbench.cli import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture()
def built(data_dir: Path):
    result = _invoke("bench", "build", "positionic-open", "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    path = built_bench_dir() / "positionic-open.jsonl"
    yield path
    path.unlink(missing_ok=True)


def test_ls_lists_every_kind(built: Path) -> None:
    result = _invoke("ls", "benches")
    assert result.exit_code == 0, result.output
    for name in ("dreambench", "dreambench-multi", "msbench", "positionic", "positionic-open"):
        assert f" {name} " in result.output
    assert "built" in result.output
    methods = _invoke("ls", "methods")
    assert methods.exit_code == 0 and " uno " in methods.output and " positionic " in methods.output
    assert _invoke("ls", "metrics").exit_code == 0
    assert _invoke("ls", "nonsense").exit_code != 0


def test_build_is_byte_identical_and_validates(built: Path, tmp_path: Path, data_dir: Path) -> None:
    first = built.read_bytes()
    again = _invoke("bench", "build", "positionic-open", "--seed", "0", "--out", str(tmp_path / "again.jsonl"), "--data-dir", str(data_dir))
    assert again.exit_code == 0 and "252 single + 296 multi" in again.output
    assert (tmp_path / "again.jsonl").read_bytes() == first
    other = _invoke("bench", "build", "positionic-open", "--seed", "1", "--out", str(tmp_path / "seed1.jsonl"), "--data-dir", str(data_dir))
    assert other.exit_code == 0 and (tmp_path / "seed1.jsonl").read_bytes() != first
    result = _invoke("validate", "positionic-open", "--data-dir", str(data_dir), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["bench"], report["samples"], report["errors"]) == ("positionic-open", 548, 0)


def test_build_unknown_name_fails(data_dir: Path) -> None:
    result = _invoke("bench", "build", "nope", "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "positionic-open" in result.output


@pytest.mark.parametrize("name", ["dreambench", "dreambench-multi"])
def test_validate_real_dreambench(name: str, data_dir: Path) -> None:
    result = _invoke("validate", name, "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert f"OK {name}: 750 samples, 158 images, 0 errors, 0 warnings" in result.output


def test_validate_msbench_reports_count_and_missing_image(data_dir: Path) -> None:
    result = _invoke("validate", "msbench", "--data-dir", str(data_dir))
    assert result.exit_code == 1
    assert "4488 samples" in result.output and "cat1.jpg" in result.output and "missing-image" in result.output


def test_validate_unknown_bench_suggests(data_dir: Path) -> None:
    result = _invoke("validate", "dreambnch", "--data-dir", str(data_dir), "--json")
    assert result.exit_code == 1
    assert "did you mean 'dreambench'" in json.loads(result.output)["problems"][0]["message"]


def test_data_dir_from_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICBENCH_DATA_DIR", str(data_dir))
    result = _invoke("validate", "dreambench-multi", "--no-images")
    assert result.exit_code == 0 and "750 samples" in result.output
    monkeypatch.setenv("PICBENCH_DATA_DIR", str(data_dir / "nowhere"))
    result = _invoke("validate", "dreambench-multi")
    assert result.exit_code == 2 and "PICBENCH_DATA_DIR" in result.output


def test_export_jsonl_and_hf(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "dreambench.jsonl"
    result = _invoke("bench", "export", "dreambench", "--format", "jsonl", "--out", str(out), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    bench = read_bench_jsonl(out, data_dir)
    assert bench.name == "dreambench" and len(bench) == 750
    small = tmp_path / "small.jsonl"
    write_bench_jsonl(bench.with_samples(bench.samples[:3]), small)
    checked = _invoke("validate", str(small), "--data-dir", str(data_dir), "--no-images")
    assert checked.exit_code == 0 and "3 samples" in checked.output
    result = _invoke("bench", "export", str(small), "--format", "hf", "--out", str(tmp_path / "hf"), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    back = load_bench_hf(tmp_path / "hf", tmp_path / "root")
    assert back.samples == bench.samples[:3] and back.content_hash() == read_bench_jsonl(small, data_dir).content_hash()
