"""Leaderboards: results merged into a CSV, and the paper's reported rows checked against DESIGN.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from run_bench_helpers import PROTOCOL
from typer.testing import CliRunner

from picbench.cli import app
from picbench.coverage import Counts, Coverage
from picbench.errors import PicbenchError
from picbench.leaderboard import build_leaderboard, export_leaderboard, read_leaderboard, result_row
from picbench.results import RunResult, save_result

REPO = Path(__file__).resolve().parents[1]
REPORTED_CSV = REPO / "leaderboards" / "paper_reported.csv"
DESIGN = REPO.parent / "shared" / "DESIGN.md"
runner = CliRunner()


def make_result(method: str, bench: str, metrics: dict, *, smoke: bool = False, seeds: tuple[int, ...] = (0, 1)) -> RunResult:
    return RunResult(
        method=method,
        method_version="1.2",
        method_params={"steps": 4},
        bench=bench,
        bench_version="1",
        bench_hash=f"hash-of-{bench}",
        seeds=seeds,
        metrics=metrics,
        counts={"n_items": 8, "n_failures": 1},
        smoke=smoke,
        provenance={"picbench_version": "0.1.0", "git_hash": "abc1234", "date": "2026-11-26T12:00:00Z"},
        coverage=Coverage(8, 7, 1, {"single": Counts(8, 7, 1)}),
        protocol=PROTOCOL,
    )


def design_reported_numbers(text: str) -> dict[tuple[str, str], dict[str, float]]:
    """Parse DESIGN.md's "Numbers the paper reports" independently of the CSV."""
    section = text.split("## Numbers the paper reports", 1)[1].split("\n## ", 1)[0]
    single, rest = section.split("Multi-subject:", 1)
    multi, positionic = rest.split("PositionIC-Bench (", 1)
    names = {
        "UNO": "uno",
        "DreamO": "dreamo",
        "PositionIC": "positionic",
        "MS-Diffusion": "msdiffusion",
        "InstanceDiffusion": "instancediffusion",
        "GLIGEN": "gligen",
    }
    number = r"(\d\.\d+)"
    found: dict[tuple[str, str], dict[str, float]] = {}
    for part, bench, keys in (
        (single, "dreambench", ["clip_i", "clip_t", "dino"]),
        (multi, "dreambench-multi", ["clip_i", "clip_t", "dino"]),
        (positionic.split("):", 1)[1], "positionic", ["iou.single", "ap.single", "iou.multi", "ap.multi"]),
    ):
        pattern = r"([A-Za-z][\w-]*)\s+" + r"\s*/\s*".join([number] * len(keys))
        for match in re.finditer(pattern, part.replace("\n", " ")):
            found[(names[match.group(1)], bench)] = dict(zip(keys, map(float, match.groups()[1:])))
    return found


def test_reported_rows_equal_design_md() -> None:
    if not DESIGN.is_file():
        pytest.skip(f"DESIGN.md not found at {DESIGN}")
    expected = design_reported_numbers(DESIGN.read_text(encoding="utf-8"))
    assert len(expected) == 10
    table = read_leaderboard(REPORTED_CSV)
    assert len(table) == len(expected)
    for _, row in table.iterrows():
        numbers = expected[(row["method"], row["bench"])]
        for key, value in numbers.items():
            assert row[key] == pytest.approx(value, abs=1e-9), (row["method"], row["bench"], key)
        held = {
            c
            for c in table.columns
            if c in ("clip_i", "clip_t", "dino", "iou.single", "ap.single", "iou.multi", "ap.multi") and pd.notna(row[c])
        }
        assert held == set(numbers)
        assert row["source"] == "reported" and not row["smoke"]
        assert "PositionIC" in row["citation"] and "CVPR 2026" in row["citation"]


def test_export_merges_run_folders_and_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-a"
    save_result(make_result("paste", "positionic-open", {"iou": 0.91, "iou.single": 0.93, "ap.multi": 0.44}), run_dir)
    smoke_file = save_result(
        make_result("positionic", "positionic-open", {"iou": 0.12, "clip_i": 0.5}, smoke=True, seeds=(3,)), tmp_path / "run-b"
    )
    out = tmp_path / "boards" / "mine.csv"
    result = runner.invoke(app, ["leaderboard", "export", str(run_dir), str(smoke_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "smoke row" in result.output
    table = pd.read_csv(out)
    assert len(table) == 2
    paste = table[table["method"] == "paste"].iloc[0]
    assert (paste["iou"], paste["iou.single"], paste["ap.multi"]) == (0.91, 0.93, 0.44)
    assert pd.isna(paste["clip_i"]) and not paste["smoke"]
    assert (paste["bench_hash"], paste["seeds"], paste["git_hash"], paste["picbench_version"]) == (
        "hash-of-positionic-open",
        "0 1",
        "abc1234",
        "0.1.0",
    )
    assert paste["source"] == "measured" and paste["n_items"] == 8 and paste["origin"].endswith("results.json")
    smoke = table[table["method"] == "positionic"].iloc[0]
    assert bool(smoke["smoke"]) and "SMOKE" in smoke["note"] and str(smoke["seeds"]) == "3"
    assert list(table.columns[:4]) == ["method", "bench", "source", "smoke"]


def test_export_extends_an_existing_leaderboard(tmp_path: Path) -> None:
    save_result(make_result("positionic", "dreambench", {"clip_i": 0.8, "dino": 0.7}), tmp_path / "run")
    table = export_leaderboard([REPORTED_CSV, tmp_path / "run"], tmp_path / "all.csv")
    reported = read_leaderboard(REPORTED_CSV)
    assert len(table) == len(reported) + 1
    again = read_leaderboard(tmp_path / "all.csv")
    rows = again[(again["method"] == "positionic") & (again["bench"] == "dreambench")]
    assert sorted(rows["source"]) == ["measured", "reported"]
    merged_reported = again[again["source"] == "reported"].set_index(["method", "bench"]).sort_index()
    original = reported.set_index(["method", "bench"]).sort_index()
    for column in ("clip_i", "clip_t", "dino", "iou.single", "ap.single", "iou.multi", "ap.multi"):
        pd.testing.assert_series_equal(merged_reported[column], original[column])


def test_duplicate_rows_are_refused_naming_both_files(tmp_path: Path) -> None:
    first = save_result(make_result("paste", "dreambench", {"clip_i": 0.5}), tmp_path / "a")
    second = save_result(make_result("paste", "dreambench", {"clip_i": 0.6}), tmp_path / "b")
    with pytest.raises(PicbenchError, match="one row per method and bench") as info:
        export_leaderboard([first, second], tmp_path / "x.csv")
    assert str(first) in str(info.value) and str(second) in str(info.value)
    assert not (tmp_path / "x.csv").exists()


def test_bad_results_give_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "results.json"
    broken.parent.mkdir()
    broken.write_text("{not json", encoding="utf-8")
    result = runner.invoke(app, ["leaderboard", "export", str(broken.parent), "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "malformed JSON" in result.output and "broken" in result.output
    data = make_result("paste", "dreambench", {"clip_i": 0.5}).to_dict()
    data["metrics"]["dino"] = "high"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(PicbenchError, match=r"bad\.json.*'paste'.*'dino'"):
        export_leaderboard([bad], tmp_path / "y.csv")


def test_read_leaderboard_names_line_and_field(tmp_path: Path) -> None:
    table = build_leaderboard([result_row(make_result("paste", "dreambench", {"clip_i": 0.5, "dino": 0.4}))])
    csv = tmp_path / "board.csv"
    table.assign(dino=["high"]).to_csv(csv, index=False)
    with pytest.raises(PicbenchError, match=r"board\.csv:2: field 'dino' is 'high'"):
        read_leaderboard(csv)
    table.drop(columns=["bench"]).to_csv(csv, index=False)
    with pytest.raises(PicbenchError, match="lacks column"):
        read_leaderboard(csv)


def test_show_prints_the_rows() -> None:
    result = runner.invoke(app, ["leaderboard", "show", str(REPORTED_CSV)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for method in ("uno", "dreamo", "gligen", "instancediffusion", "msdiffusion"):
        assert method in result.output


def test_runner_provenance_fills_the_columns(tmp_path: Path) -> None:
    """The runner records git as {commit, dirty}, the date as "created" and --limit under "bench"."""
    base = make_result("paste", "positionic-open", {"iou": 0.5})
    result = RunResult(
        **{
            **base.__dict__,
            "provenance": {
                "picbench_version": "9.9",
                "git": {"commit": "f00d", "dirty": True},
                "created": "2026-11-26T13:00:00+00:00",
                "bench": {"name": "positionic-open", "limit": 4},
            },
        }
    )
    row = result_row(result, tmp_path / "results.json")
    assert (row["git_hash"], row["date"], row["limit"], row["picbench_version"]) == ("f00d-dirty", "2026-11-26T13:00:00+00:00", "4", "9.9")
    clean = RunResult(**{**base.__dict__, "provenance": {"git": {"commit": "f00d", "dirty": False}, "bench": {"limit": None}}})
    assert (result_row(clean)["git_hash"], result_row(clean)["limit"]) == ("f00d", "")


def test_intervals_and_directions_travel_through_the_csv(tmp_path: Path) -> None:
    result = RunResult(
        method="m",
        method_version="1",
        method_params={},
        bench="b",
        bench_version="1",
        bench_hash="h",
        seeds=(0,),
        metrics={"clip_i": 0.8, "missing": 0.2, "missing.multi": 0.3},
        counts={"n_items": 4},
        smoke=False,
        higher_is_better={"clip_i": True, "missing": False},
        intervals={"clip_i": (0.75, 0.85), "missing": (0.1, 0.3)},
        coverage=Coverage(4, 4, 0, {"multi": Counts(4, 4, 0)}),
        protocol=PROTOCOL,
    )
    save_result(result, tmp_path / "run")
    out = tmp_path / "board.csv"
    table = export_leaderboard([tmp_path / "run"], out)
    columns = list(pd.read_csv(out).columns)
    assert columns[columns.index("clip_i") + 1 : columns.index("clip_i") + 3] == ["clip_i_ci_low", "clip_i_ci_high"]
    back = read_leaderboard(out)
    assert back.loc[0, "clip_i_ci_low"] == 0.75 and back.loc[0, "lower_is_better"] == "missing"
    from picbench.leaderboard import higher_is_better, metric_columns

    assert "clip_i_ci_low" not in metric_columns(back) and "missing.multi" in metric_columns(table)
    row = back.to_dict("records")[0]
    assert higher_is_better("clip_i", row) and not higher_is_better("missing.multi", row)
    worse = tmp_path / "worse"
    save_result(RunResult(**{**result.__dict__, "metrics": {"clip_i": 0.8, "missing": 0.4, "missing.multi": 0.3}}), worse)
    checked = runner.invoke(app, ["regress", str(worse), "--baseline", str(out)])
    assert checked.exit_code == 1 and "regression: 1 of 3" in checked.output  # a rise of a lower-is-better rate is a regression
    from picbench.regress import compare, load_table

    assert [(c.metric, c.higher_is_better) for c in compare(load_table([worse]), load_table([out])).regressions] == [("missing", False)]
    better = tmp_path / "better"
    save_result(RunResult(**{**result.__dict__, "metrics": {"clip_i": 0.8, "missing": 0.0, "missing.multi": 0.3}}), better)
    assert runner.invoke(app, ["regress", str(better), "--baseline", str(out)]).exit_code == 0
