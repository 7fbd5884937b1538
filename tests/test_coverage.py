"""Coverage is part of every verdict: a run over a folder missing half its images exits 1 with a
banner (results still written, labelled partial), the report and both leaderboard formats show
it, and ``regress`` / ``compare`` fail closed on a candidate covering less than its baseline or of
unknown coverage, unless ``--allow-partial`` (then labelled)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from run_bench_helpers import write_tiny_bench
from typer.testing import CliRunner

from picbench.cli import app
from picbench.coverage import Counts, Coverage, gate, measure
from picbench.errors import ResultFormatError
from picbench.leaderboard import row_coverage
from picbench.results import iter_sample_scores, load_result

runner = CliRunner()


def _text(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """The `images` method over a complete folder and over one holding 2 of its 4 images."""
    root = tmp_path_factory.mktemp("coverage")
    bench = write_tiny_bench(root, data_dir, n=4)
    common = ["--bench", str(bench), "--data-dir", str(data_dir), "--models", "tiny", "--detector", "none"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        assert runner.invoke(app, ["run", "--method", "paste", *common, "--out", str(root / "paste")]).exit_code == 0
        for name, keep in (("full", 4), ("half", 2)):
            folder = root / name / "seed0"
            folder.mkdir(parents=True)
            for score, image in list(iter_sample_scores(root / "paste"))[:keep]:
                shutil.copy(root / "paste" / image, folder / f"{score.sample_id}.png")
        full = runner.invoke(
            app, ["run", "--method", "images", "--param", f"dir={root / 'full'}", *common, "--out", str(root / "complete")]
        )
        assert full.exit_code == 0, full.output
        half = runner.invoke(app, ["run", "--method", "images", "--param", f"dir={root / 'half'}", *common, "--out", str(root / "partial")])
    return {"complete": root / "complete", "partial": root / "partial", "root": root, "half_output": half}  # type: ignore[dict-item]


def test_a_partial_folder_exits_1_with_a_banner_and_its_results_written_labelled(runs: dict) -> None:
    half = runs["half_output"]
    assert half.exit_code == 1, half.output
    text = _text(half.output)
    assert "scored 2 of 4 (2 with failures) item(s)" in text and "PARTIAL RUN" in text and "pass --allow-partial" in text
    result = load_result(runs["partial"])
    assert result.partial and result.coverage == Coverage(4, 2, 2, {"single": Counts(2, 1, 1), "multi": Counts(2, 1, 1)})
    assert result.metrics["clip_i"] is not None, "the aggregates are still written"
    stored = json.loads((runs["partial"] / "results.json").read_text())["coverage"]
    assert stored["partial"] is True and stored["splits"]["multi"] == {"expected": 2, "scored": 1, "failed": 1}
    assert not load_result(runs["complete"]).partial


def test_allow_partial_lets_the_run_through_labelled(runs: dict, data_dir: Path) -> None:
    root = runs["root"]
    bench = root / "tiny-run-bench.jsonl"
    again = runner.invoke(
        app,
        ["run", "--method", "images", "--param", f"dir={root / 'half'}", "--bench", str(bench), "--data-dir", str(data_dir)]
        + ["--models", "tiny", "--detector", "none", "--out", str(runs["partial"]), "--allow-partial"],
    )
    assert again.exit_code == 0, again.output
    assert "PARTIAL RUN" in _text(again.output) and "allowed by --allow-partial" in _text(again.output)


def test_the_report_puts_a_banner_on_a_partial_run(runs: dict, tmp_path: Path) -> None:
    for name, banner in (("partial", True), ("complete", False)):
        out = tmp_path / f"{name}.html"
        assert runner.invoke(app, ["report", str(runs[name]), "--out", str(out)]).exit_code == 0
        page = out.read_text()
        assert ('<div class="partial" role="alert">PARTIAL RUN' in page) is banner
        assert ("scored 2 of 4 (2 with failures)" in page) is banner and ("scored 4 of 4" in page) is not banner
    side = tmp_path / "side.html"
    assert runner.invoke(app, ["report", str(runs["complete"]), str(runs["partial"]), "--out", str(side)]).exit_code == 0
    assert side.read_text().count('<div class="partial" role="alert">') == 1


def test_both_leaderboard_formats_show_coverage_and_mark_the_partial_row(runs: dict, tmp_path: Path) -> None:
    import pandas as pd

    partial, complete = runs["partial"], runs["complete"]
    shutil.copytree(complete, tmp_path / "other")
    data = json.loads((tmp_path / "other" / "results.json").read_text())
    data["method"] = "images-b"
    (tmp_path / "other" / "results.json").write_text(json.dumps(data))
    csv = tmp_path / "board.csv"
    shown = runner.invoke(app, ["leaderboard", "export", str(partial), str(tmp_path / "other"), "--out", str(csv)])
    assert shown.exit_code == 0, shown.output
    rows = {r["method"]: r for r in pd.read_csv(csv).to_dict("records")}
    assert (rows["images"]["coverage"], rows["images"]["n_expected"], rows["images"]["n_scored"]) == ("2/4 PARTIAL", 4, 2)
    assert rows["images-b"]["coverage"] == "4/4"
    assert "images SMOKE PARTIAL" in _text(shown.output) and "2/4 PARTIAL" in shown.output and "4/4" in shown.output
    page = tmp_path / "board.html"
    assert runner.invoke(app, ["leaderboard", "export", str(csv), "--out", str(page), "--format", "html"]).exit_code == 0
    html = page.read_text()
    assert '<div class="partial" role="alert">rows marked PARTIAL (images on tiny-run-bench)' in html
    assert "<th>coverage</th>" in html and ">2/4 PARTIAL</td>" in html and ">4/4</td>" in html


def test_regress_of_a_half_failed_candidate_fails_naming_the_counts_unless_allowed(runs: dict) -> None:
    partial, complete = str(runs["partial"]), str(runs["complete"])
    failed = runner.invoke(app, ["regress", partial, "--baseline", complete, "--tolerance", "1"])
    assert failed.exit_code == 1, failed.output
    text = _text(failed.output)
    assert "the candidate scored 2 of 4 (2 with failures) items, the baseline scored 4 of 4" in text and "--allow-partial" in text
    allowed = runner.invoke(app, ["regress", partial, "--baseline", complete, "--tolerance", "1", "--allow-partial"])
    assert allowed.exit_code == 0, allowed.output
    assert "scored 2 of 4 (2 with failures)" in _text(allowed.output) and "allowed by --allow-partial" in _text(allowed.output)
    assert runner.invoke(app, ["regress", complete, "--baseline", partial, "--tolerance", "1"]).exit_code == 0, "more coverage passes"


def test_compare_fails_closed_on_coverage_unless_allowed(runs: dict) -> None:
    partial, complete = str(runs["partial"]), str(runs["complete"])
    refused = runner.invoke(app, ["compare", complete, partial])
    assert refused.exit_code == 1 and "B vs A: the candidate scored 2 of 4 (2 with failures) items" in _text(refused.output)
    allowed = runner.invoke(app, ["compare", complete, partial, "--allow-partial"])
    assert allowed.exit_code == 0 and "allowed by --allow-partial" in _text(allowed.output)
    assert runner.invoke(app, ["compare", complete, complete]).exit_code == 0


def test_a_results_file_without_coverage_is_unknown_and_regress_says_so(runs: dict, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs["complete"], old)
    data = json.loads((old / "results.json").read_text())
    del data["coverage"]
    (old / "results.json").write_text(json.dumps(data))
    assert load_result(old).coverage is None and not load_result(old).partial
    refused = runner.invoke(app, ["regress", str(old), "--baseline", str(runs["complete"])])
    assert refused.exit_code == 1 and "the candidate's coverage is unknown" in _text(refused.output)
    as_baseline = runner.invoke(app, ["regress", str(runs["complete"]), "--baseline", str(old)])
    assert as_baseline.exit_code == 1 and "the baseline's coverage is unknown" in _text(as_baseline.output)
    assert runner.invoke(app, ["regress", str(old), "--baseline", str(runs["complete"]), "--allow-partial"]).exit_code == 0
    page = tmp_path / "old.html"
    assert runner.invoke(app, ["report", str(old), "--out", str(page)]).exit_code == 0
    assert "coverage unknown" in page.read_text()


def test_measure_and_gate() -> None:
    coverage = measure([("single", True, False), ("multi", False, True), ("multi", True, False)])
    assert coverage == Coverage(3, 2, 1, {"single": Counts(1, 1, 0), "multi": Counts(2, 1, 1)}) and coverage.partial
    detector_failed = measure([("single", True, True), ("single", True, False)])  # scored, yet a failure recorded on it
    assert detector_failed == Coverage(2, 2, 1, {"single": Counts(2, 2, 1)}) and not detector_failed.partial
    assert Coverage.from_dict(coverage.to_dict()) == coverage
    assert gate("x", Counts(4, 4, 0), Counts(4, 3, 1)) is None
    assert "scored 3 of 4 (1 with failures) items, the baseline scored 4 of 4" in (gate("x", Counts(4, 3, 1), Counts(4, 4, 0)) or "")
    assert "covers fewer items" in (gate("x", Counts(2, 2, 0), Counts(4, 4, 0)) or ""), "a --limit run covers fewer items"
    assert "has more failures" in (gate("x", Counts(4, 4, 2), Counts(4, 4, 1)) or ""), "as many scored, more failures"
    assert row_coverage({"n_expected": 4.0, "n_scored": 4, "n_failures": 2}) == Counts(4, 4, 2)
    assert row_coverage({"n_expected": float("nan"), "n_scored": 4}) is None
    assert gate("x", Counts(4, 4, 0), None, reported_baseline=True) is None
    assert "partial" in (gate("x", Counts(4, 3, 1), None, reported_baseline=True) or "")
    assert "unknown" in (gate("x", None, Counts(4, 4, 0)) or "") and "unknown" in (gate("x", Counts(4, 4, 0), None) or "")


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"expected": 2, "scored": 1}, "coverage.failed"),
        ({"expected": 2, "scored": 1, "failed": -1}, "coverage.failed"),
        ({"expected": 2, "scored": 0, "failed": 1}, "coverage"),
        ({"expected": 2, "scored": 3, "failed": 0}, "coverage"),
        (
            {"expected": 1, "scored": 1, "failed": 0, "splits": {"multi": {"expected": "1", "scored": 1, "failed": 0}}},
            "coverage.splits.multi.expected",
        ),
        ([1, 2], "coverage"),
    ],
)
def test_a_malformed_coverage_record_names_the_field(record: object, field: str) -> None:
    with pytest.raises(ResultFormatError, match=f"field '{field}'"):
        Coverage.from_dict(record, file="results.json")
