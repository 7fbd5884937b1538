"""``picbench regress``: exit 0 on a pass, 1 with a table on a regression, 2 on unusable input;
and the shipped CI example calls only options that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml
from run_bench_helpers import PROTOCOL
from typer.testing import CliRunner

from picbench.cli import app
from picbench.coverage import Counts, Coverage
from picbench.errors import PicbenchError
from picbench.leaderboard import read_leaderboard
from picbench.regress import compare, load_table, parse_tolerances, tolerance_for
from picbench.results import RunResult, save_result

REPO = Path(__file__).resolve().parents[1]
REPORTED_CSV = REPO / "leaderboards" / "paper_reported.csv"
CI_EXAMPLE = REPO / "examples" / "ci" / "regress.yml"
WIDE = {"COLUMNS": "200"}
FULL = Coverage(4, 4, 0, {"single": Counts(4, 4, 0)})
runner = CliRunner()


PAPER = "--allow-protocol-mismatch"  # a paper's reported rows carry no protocol


def save_run(
    folder: Path,
    method: str,
    bench: str,
    metrics: dict,
    *,
    smoke: bool = False,
    protocol: dict | None = PROTOCOL,
    coverage: Coverage | None = FULL,
) -> Path:
    result = RunResult(
        method=method,
        method_version="1",
        method_params={},
        bench=bench,
        bench_version="1",
        bench_hash="h",
        seeds=(0,),
        metrics=metrics,
        counts={"n_items": 4, "n_failures": 0},
        smoke=smoke,
        provenance={"picbench_version": "0.1.0"},
        coverage=coverage,
        protocol=protocol,
    )
    save_result(result, folder)
    return folder


def reported(method: str, bench: str) -> dict[str, float]:
    """The paper's row for (method, bench), read from the shipped leaderboard."""
    table = read_leaderboard(REPORTED_CSV)
    row = table[(table["method"] == method) & (table["bench"] == bench)].iloc[0]
    return {k: float(row[k]) for k in ("clip_i", "clip_t", "dino", "iou.single", "ap.single", "iou.multi", "ap.multi") if row[k] == row[k]}


def test_equal_to_the_paper_passes(tmp_path: Path) -> None:
    run = save_run(tmp_path / "run", "positionic", "dreambench", reported("positionic", "dreambench"))
    result = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "pass" in result.output and "3 metric(s)" in result.output and "dino" not in result.output
    listed = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER, "--show-all"], env=WIDE)
    assert listed.exit_code == 0 and all(m in listed.output for m in ("clip_i", "clip_t", "dino"))


def test_a_drop_beyond_tolerance_fails_with_a_table(tmp_path: Path) -> None:
    paper = reported("gligen", "positionic")
    worse = {**paper, "iou.multi": paper["iou.multi"] - 0.05, "ap.single": paper["ap.single"] - 0.005}
    run = save_run(tmp_path / "run", "gligen", "positionic", worse)
    result = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER], env=WIDE)
    assert result.exit_code == 1, result.output
    assert "iou.multi" in result.output and "-0.0500" in result.output
    assert "ap.single" not in result.output  # within the default tolerance of 0.01
    assert "1 of 4 metric(s)" in result.output
    tight = runner.invoke(
        app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER, "--tolerance", "0.1", "--tolerance-for", "ap=0.001"], env=WIDE
    )
    assert tight.exit_code == 1 and "ap.single" in tight.output and "iou.multi" not in tight.output
    loose = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER, "--tolerance", "0.06"], env=WIDE)
    assert loose.exit_code == 0, loose.output


def test_drop_of_exactly_the_tolerance_passes_and_gains_never_fail(tmp_path: Path) -> None:
    base = save_run(tmp_path / "base", "paste", "positionic-open", {"iou": 0.84, "clip_i": 0.5})
    run = save_run(tmp_path / "run", "paste", "positionic-open", {"iou": 0.83, "clip_i": 0.9})
    report = compare(load_table([run]), load_table([base]), tolerance=0.01)
    assert report.passed and {c.metric for c in report.checks} == {"iou", "clip_i"}
    assert next(c for c in report.checks if c.metric == "iou").drop == pytest.approx(0.01)
    assert not compare(load_table([run]), load_table([base]), tolerance=0.0099).passed


def test_results_against_results_and_several_rows(tmp_path: Path) -> None:
    base_a = save_run(tmp_path / "base-a", "paste", "dreambench", {"clip_i": 0.7})
    base_b = save_run(tmp_path / "base-b", "paste", "positionic-open", {"iou": 0.9, "ap": 0.6})
    run_a = save_run(tmp_path / "run-a", "paste", "dreambench", {"clip_i": 0.71})
    run_b = save_run(tmp_path / "run-b", "paste", "positionic-open", {"iou": 0.7, "ap": 0.6})
    result = runner.invoke(app, ["regress", str(run_a), str(run_b), "-b", str(base_a), "-b", str(base_b)], env=WIDE)
    assert result.exit_code == 1, result.output
    assert "iou" in result.output and "positionic-open" in result.output and "1 of 3 metric(s)" in result.output


def test_unusable_input_exits_2(tmp_path: Path) -> None:
    run = save_run(tmp_path / "run", "paste", "positionic-open", {"iou": 0.8})
    nothing = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER], env=WIDE)
    assert nothing.exit_code == 2 and "nothing to compare" in nothing.output
    missing = runner.invoke(app, ["regress", str(tmp_path / "nope"), "--baseline", str(REPORTED_CSV), PAPER], env=WIDE)
    assert missing.exit_code == 2 and "no results file" in missing.output
    bad_tolerance = runner.invoke(app, ["regress", str(run), "-b", str(run), "--tolerance-for", "iou:0.1"], env=WIDE)
    assert bad_tolerance.exit_code == 2 and "iou:0.1" in bad_tolerance.output


def test_smoke_against_real_numbers_fails_closed_unless_allowed(tmp_path: Path) -> None:
    paper = reported("uno", "dreambench-multi")
    run = save_run(tmp_path / "run", "uno", "dreambench-multi", paper, smoke=True)
    result = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER], env=WIDE)
    assert result.exit_code == 1, result.output
    assert "smoke run" in result.output and "--allow-smoke" in result.output
    allowed = runner.invoke(app, ["regress", str(run), "--baseline", str(REPORTED_CSV), PAPER, "--allow-smoke"], env=WIDE)
    assert allowed.exit_code == 0, allowed.output
    assert "smoke run" in allowed.output and "means little" in allowed.output
    # where the baseline has a smoke row too, only that row is used
    smoke_base = save_run(tmp_path / "smoke-base", "uno", "dreambench-multi", {"clip_i": paper["clip_i"] + 0.5}, smoke=True)
    report = compare(load_table([run]), load_table([REPORTED_CSV, smoke_base]), allow_protocol_mismatch=True)
    assert [c.baseline_source for c in report.checks] == ["measured"] and not report.passed and not report.warnings


def test_parse_tolerances() -> None:
    assert parse_tolerances(["clip_i=0.005", " iou.multi = 0.02"]) == {"clip_i": 0.005, "iou.multi": 0.02}
    for bad in ("clip_i", "=0.1", "clip_i=-1", "clip_i=abc", "clip_i=nan"):
        with pytest.raises(PicbenchError, match="METRIC=NUMBER"):
            parse_tolerances([bad])
    per_metric = {"iou": 0.02, "iou.multi": 0.05}
    assert tolerance_for("iou.single", 0.01, per_metric) == 0.02
    assert tolerance_for("iou.multi", 0.01, per_metric) == 0.05
    assert tolerance_for("clip_i", 0.01, per_metric) == 0.01


def _picbench_commands(workflow: dict) -> list[str]:
    scripts = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    return [line.strip() for script in scripts for line in script.splitlines() if line.strip().startswith("picbench ")]


def test_ci_example_calls_real_options() -> None:
    workflow = yaml.safe_load(CI_EXAMPLE.read_text(encoding="utf-8"))
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as a boolean
    assert "release" in triggers
    commands = _picbench_commands(workflow)
    verbs = {tuple(c.split()[1:3]) for c in commands}
    assert ("regress", "runs/dreambench") in verbs and ("report", '"runs/$bench"') in verbs and ("leaderboard", "export") in verbs
    root = typer.main.get_command(app)
    checked = 0
    for line in commands:
        words = line.split()[1:]
        command = root
        while hasattr(command, "commands") and words and words[0] in command.commands:
            command, words = command.commands[words[0]], words[1:]
        if command is root:
            assert words[0] not in ("regress", "report", "leaderboard"), line
            continue  # a verb another part of picbench adds (run, bench build)
        known = {opt for param in command.params for opt in param.opts}
        for option in re.findall(r"(?<![\w-])--[\w-]+", line):
            assert option in known, f"{option} is not an option of `{line}`"
        checked += 1
    assert checked >= 4
    assert "leaderboards/paper_reported.csv" in " ".join(commands) and REPORTED_CSV.is_file()


def test_a_partial_run_is_warned(tmp_path: Path) -> None:
    paper = reported("positionic", "dreambench")
    run = save_run(tmp_path / "run", "positionic", "dreambench", paper)
    data = run / "results.json"
    data.write_text(
        data.read_text(encoding="utf-8").replace('"provenance": {', '"provenance": {"bench": {"limit": 4}, ', 1), encoding="utf-8"
    )
    report = compare(load_table([run]), load_table([REPORTED_CSV]), allow_protocol_mismatch=True)
    assert report.passed
    assert any("--limit 4" in w and "whole bench" in w for w in report.warnings)
