"""Output for machines and logs: ``--json`` on run, compare, regress, validate and ls (one JSON
document on stdout, the human output on stderr; a closed pipe is no traceback); outside a terminal
no table cell is wrapped; GitHub's job summary; ``--version``; third-party chatter only with ``-v``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from run_bench_helpers import write_tiny_bench
from typer.testing import CliRunner

import picbench
from picbench.benches.jsonl import write_bench_jsonl
from picbench.cli import app
from picbench.cli.quiet import QUIET_ENVIRONMENT
from picbench.records import Bench, Sample, Subject

runner = CliRunner()
NARROW = {"COLUMNS": "60"}  # what a CI log or a pipe may claim; outside a terminal it must not wrap a cell
LONG = "a-method-name-long-enough-that-an-eighty-column-table-would-have-to-wrap-it"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("output")
    bench = write_tiny_bench(root, data_dir, n=2)
    common = ["--bench", str(bench), "--data-dir", str(data_dir), "--models", "tiny", "--detector", "none"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        for name, fit in (("a", "stretch"), ("b", "contain")):
            result = runner.invoke(app, ["run", "--method", "paste", "--param", f"fit={fit}", *common, "--out", str(root / name)])
            assert result.exit_code == 0, result.output
    return root / "a", root / "b"


def assert_no_wrapped_cell(output: str) -> None:
    """Every body row of every rich table starts with a filled first cell: a wrapped cell would
    continue on a row whose first cell is blank."""
    rows = [line for line in output.splitlines() if line.startswith("│")]
    assert rows, output
    assert all(line[1:].split("│", 1)[0].strip() for line in rows), output


def test_run_json_is_the_results_and_the_table_goes_to_stderr(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    args = ["run", "--method", "paste", "--bench", str(bench), "--data-dir", str(data_dir), "--models", "tiny", "--detector", "none"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run"), "--json"], env=NARROW)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == json.loads((tmp_path / "run" / "results.json").read_text())
    assert document["coverage"]["scored"] == 2 and "scored 2 of 2" in result.stderr and "SMOKE RUN" in result.stderr
    assert_no_wrapped_cell(result.stderr)


def test_compare_and_regress_json_parse_and_no_cell_wraps(two_runs: tuple[Path, Path]) -> None:
    a, b = (str(p) for p in two_runs)
    compared = runner.invoke(app, ["compare", a, b, "--json"], env=NARROW)
    assert compared.exit_code == 0, compared.output
    document = json.loads(compared.stdout)
    assert document["verdict"] == "compared" and {d["metric"] for d in document["differences"]} >= {"clip_i", "dino"}
    assert document["a"]["coverage"]["expected"] == 2 and "paired bootstrap" in compared.stderr
    regressed = runner.invoke(app, ["regress", a, "--baseline", b, "--tolerance", "1", "--json"], env=NARROW)
    assert regressed.exit_code == 0, regressed.output
    verdict = json.loads(regressed.stdout)
    assert verdict["passed"] is True and verdict["verdict"] == "pass" and verdict["checks"] and "fell" in verdict["checks"][0]
    strict = runner.invoke(app, ["regress", a, "--baseline", b, "--tolerance", "0", "--json"])
    assert strict.exit_code == 1 and json.loads(strict.stdout)["passed"] is False, "the verdict and exit code hold with --json"
    for args in (["compare", a, b], ["regress", a, "--baseline", b, "--tolerance", "0", "--show-all"]):
        assert_no_wrapped_cell(runner.invoke(app, args, env=NARROW).output)


def test_validate_and_ls_json_parse_and_no_cell_wraps(tmp_path: Path, data_dir: Path) -> None:
    bench = Bench(
        LONG,
        "1",
        (Sample("s0", "a dog", 64, 64, "single", (Subject("dog", "dog", ("dreambench/dataset/dog/99.jpg",), box=(0.1, 0.1, 0.5, 0.5)),)),),
        data_dir,
    )
    path = write_bench_jsonl(bench, tmp_path / "bad.jsonl")
    validated = runner.invoke(app, ["validate", str(path), "--data-dir", str(data_dir), "--json"], env=NARROW)
    assert validated.exit_code == 1 and json.loads(validated.stdout)["errors"] >= 1
    table = runner.invoke(app, ["validate", str(path), "--data-dir", str(data_dir)], env=NARROW).output
    assert_no_wrapped_cell(table)
    assert any("dreambench/dataset/dog/99.jpg" in line and line.startswith("│") for line in table.splitlines())
    listed = runner.invoke(app, ["ls", "--json"], env=NARROW)
    assert listed.exit_code == 0
    listing = json.loads(listed.stdout)
    assert set(listing) == {"benches", "methods", "metrics", "detectors", "protocols"}
    assert "paste" in {m["name"] for m in listing["methods"]} and all("keys" in m for m in listing["metrics"])
    shown = runner.invoke(app, ["ls"], env=NARROW).output
    assert_no_wrapped_cell(shown)
    assert any("RECONSTRUCTION of PositionIC-Bench from DreamBench: 252 single + 296 multi" in line for line in shown.splitlines())


def test_a_closed_pipe_is_no_traceback() -> None:
    """`picbench ls --json | head -c 0`: the reader is gone before picbench writes."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from picbench.cli import main; main()", "ls", "methods", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_a_piped_run_of_ls_lays_out_full_width() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "from picbench.cli import main; main()", "ls", "benches"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
        check=True,
    ).stdout
    assert_no_wrapped_cell(shown)
    assert max(len(line) for line in shown.splitlines()) > 80


def test_step_summary_gets_a_markdown_table_and_an_unwritable_one_is_a_warning(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = (str(p) for p in two_runs)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    regressed = runner.invoke(app, ["regress", a, "--baseline", b, "--tolerance", "1"], env={"GITHUB_STEP_SUMMARY": str(summary)})
    compared = runner.invoke(app, ["compare", a, b], env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert regressed.exit_code == compared.exit_code == 0
    text = summary.read_text()
    assert (
        text.startswith("earlier step\n")
        and "### picbench regress: pass" in text
        and "### picbench compare: paste (A) vs paste (B)" in text
    )
    assert "| method | bench | metric | better | baseline | run | change | tol | status |" in text and "| clip_i |" in text
    unwritable = {"GITHUB_STEP_SUMMARY": str(tmp_path)}  # a folder: cannot be appended to
    for args, code in ((["regress", a, "--baseline", b, "--tolerance", "1"], 0), (["regress", a, "--baseline", b, "--tolerance", "0"], 1)):
        result = runner.invoke(app, args, env=unwritable)
        assert result.exit_code == code and "warning: GITHUB_STEP_SUMMARY" in " ".join(result.output.split()), result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"picbench {picbench.__version__}"


def test_third_party_warnings_and_bars_only_with_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    def warned(*options: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert runner.invoke(app, [*options, "ls", "methods"]).exit_code == 0
            warnings.warn_explicit("theirs", UserWarning, "modeling.py", 1, module="transformers.modeling_utils")
            warnings.warn_explicit("ours", UserWarning, "engine.py", 1, module="picbench.metrics.engine")
        return [str(w.message) for w in caught]

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in QUIET_ENVIRONMENT})
    assert warned("-v") == ["theirs", "ours"] and "TQDM_DISABLE" not in os.environ
    assert warned() == ["ours"]
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "1"
