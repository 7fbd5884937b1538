"""Hostile and careless result files (issue classes 5, 6, 8 and 9): results, samples lines and
leaderboard CSVs are input too, so every verb that reads them names the file, line and field;
the CI gate fails closed; report labels are text; CSV cells are not formulas; no read leaves a
run folder through a symlink or a name in a results file."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from run_bench_helpers import PROTOCOL
from typer.testing import CliRunner

from picbench.benches.jsonl import write_bench_jsonl
from picbench.cli import app
from picbench.coverage import Counts, Coverage
from picbench.leaderboard import export_leaderboard, read_leaderboard
from picbench.methods.images import ImagesMethod
from picbench.records import Bench, Sample, Score, Subject, SubjectScore
from picbench.report import build_report
from picbench.results import RunResult, save_result

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


def _text(output: str) -> str:
    return " ".join(output.split())


def _result(method: str = "paste", *, smoke: bool = False, metrics: dict | None = None, bench: str = "dreambench") -> RunResult:
    metrics = metrics or {"clip_i": 0.8, "dino": 0.7}
    full = Coverage(2, 2, 0, {"single": Counts(2, 2, 0)})
    return RunResult(method, "1", {}, bench, "1", "0" * 64, (0,), metrics, {"items": 2}, smoke, protocol=PROTOCOL, coverage=full)


def _run_folder(folder: Path, names: tuple[str, ...] = ("dog", "cat"), **result: object) -> Path:
    """A run folder as `picbench run` writes it: results.json, samples.jsonl, images/."""
    (folder / "images").mkdir(parents=True)
    lines = []
    for i, name in enumerate(names):
        Image.new("RGB", (32, 32), (40 * i, 90, 160)).save(folder / "images" / f"s{i}.png")
        score = Score(f"s{i}", 0, {"clip_i": 0.5}, (SubjectScore(name, {"clip_i": 0.4 + 0.1 * i, "dino": 0.3}),), smoke=True)
        lines.append(json.dumps({**score.to_dict(), "image": f"images/s{i}.png"}))
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    save_result(_result(smoke=True, **result), folder)
    return folder


# -- class 5: result files in, not only out ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: [d], None),
        (lambda d: d | {"metrics": [0.8]}, "metrics"),
        (lambda d: d | {"seeds": 3}, "seeds"),
        (lambda d: d | {"provenance": "from a paper"}, "provenance"),
        (lambda d: d | {"counts": {"items": None}}, "counts.items"),
        (lambda d: d | {"smoke": "no"}, "smoke"),
    ],
)
def test_malformed_results_name_file_and_field_in_every_verb(tmp_path: Path, change, field: str | None) -> None:
    folder = _run_folder(tmp_path / "run")
    broken = change(_result().to_dict())
    (folder / "results.json").write_text(json.dumps(broken), encoding="utf-8")
    good = save_result(_result(), tmp_path / "good")
    for args in (
        ["leaderboard", "export", str(folder), "--out", str(tmp_path / "x.csv")],
        ["report", str(folder), "--out", str(tmp_path / "x.html")],
        ["regress", str(folder), "--baseline", str(good)],
        ["regress", str(good), "--baseline", str(folder)],
    ):
        result = runner.invoke(app, args, env=WIDE)
        assert result.exit_code == 2, (args, result.output)
        assert str(folder / "results.json") in _text(result.output) and "Traceback" not in result.output
        assert field is None or f"field '{field}'" in _text(result.output), result.output
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.html").exists()


def test_invalid_utf8_results_and_samples_lines_name_file_and_line(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path / "run")
    (folder / "results.json").write_bytes(b'{"schema": "\xff"}')
    result = runner.invoke(app, ["report", str(folder), "--out", str(tmp_path / "x.html")], env=WIDE)
    assert result.exit_code == 2 and "invalid UTF-8" in result.output and "results.json" in result.output
    save_result(_result(smoke=True), folder)
    lines = (folder / "samples.jsonl").read_text().splitlines()
    no_id = {k: v for k, v in json.loads(lines[0]).items() if k != "sample_id"}
    string_box = json.loads(lines[1])
    string_box["subjects"][0]["detected_box"] = "0 0 10 10"
    for bad, line, field in ((no_id, 1, "sample_id"), (string_box, 2, "subjects[0].detected_box")):
        rows = [json.dumps(bad) if i == line - 1 else text for i, text in enumerate(lines)]
        (folder / "samples.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        result = runner.invoke(app, ["report", str(folder), "--out", str(tmp_path / "x.html")], env=WIDE)
        assert result.exit_code == 2, result.output
        assert f"samples.jsonl:{line}" in _text(result.output) and f"field '{field}'" in _text(result.output)


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999"])
def test_non_finite_csv_values_are_refused_naming_line_and_field(tmp_path: Path, value: str) -> None:
    csv = tmp_path / "board.csv"
    csv.write_text(
        "method,bench,source,smoke,clip_i,dino,n_expected,n_scored\n"
        f"paste,dreambench,measured,false,0.8,0.7,2,2\nuno,dreambench,measured,false,{value},0.7,2,2\n"
    )
    with pytest.raises(Exception, match=r"board\.csv:3, field 'clip_i': .*not a finite number"):
        read_leaderboard(csv)
    run = save_result(_result("uno"), tmp_path / "run")
    result = runner.invoke(app, ["regress", str(run), "--baseline", str(csv)], env=WIDE)
    assert result.exit_code == 2 and "board.csv:3" in _text(result.output)
    as_baseline = runner.invoke(
        app, ["regress", str(run), "--baseline", str(csv), "--allow-nonfinite", "--allow-protocol-mismatch"], env=WIDE
    )  # a hand-written CSV records no protocol
    assert as_baseline.exit_code == 0 and "1 metric(s)" in _text(as_baseline.output), "inf read as absent: only dino compared"
    as_run = runner.invoke(app, ["regress", str(csv), "--baseline", str(run), "--allow-nonfinite", "--allow-protocol-mismatch"], env=WIDE)
    assert as_run.exit_code == 1 and "no value for baseline metric(s) clip_i" in _text(as_run.output), "absent in the run: fails closed"


# -- class 6: the CI gate fails closed -----------------------------------------------------------


def test_regress_fails_closed_on_smoke_and_missing_metrics_unless_allowed(tmp_path: Path) -> None:
    baseline = save_result(_result(metrics={"clip_i": 0.8, "dino": 0.7, "iou": 0.6}), tmp_path / "base")
    smoke = save_result(_result(smoke=True, metrics={"clip_i": 0.8, "dino": 0.7, "iou": 0.6}), tmp_path / "smoke")
    lacking = save_result(_result(metrics={"clip_i": 0.8, "dino": 0.7}), tmp_path / "lacking")
    cases = [(smoke, "--allow-smoke", "smoke run"), (lacking, "--allow-missing", "no value for baseline metric(s) iou")]
    for run, option, says in cases:
        failed = runner.invoke(app, ["regress", str(run), "--baseline", str(baseline)], env=WIDE)
        assert failed.exit_code == 1 and says in _text(failed.output) and option in _text(failed.output), failed.output
        allowed = runner.invoke(app, ["regress", str(run), "--baseline", str(baseline), option], env=WIDE)
        assert allowed.exit_code == 0 and says in _text(allowed.output), allowed.output


# -- class 8: the report treats text as text -----------------------------------------------------


def test_report_labels_are_plain_and_truncated(tmp_path: Path) -> None:
    folder = _run_folder(tmp_path / "run", names=("$x^2$ and $5 $", "n" * 100_000))
    page = build_report(folder)
    plot = re.search(r'class="plot" alt="per-subject metrics" src="data:image/png;base64,([^"]+)"', page)
    assert plot is not None
    width, height = Image.open(io.BytesIO(base64.b64decode(plot.group(1)))).size
    assert width < 2000 and height < 1000, "a 100,000-character name must not widen the plot"
    assert "$x^2$ and $5 $" in page, "the name itself is kept, escaped, in the HTML"


# -- class 9: least surprise at the edges --------------------------------------------------------


def test_formula_cells_are_neutralized_and_read_back_as_written(tmp_path: Path) -> None:
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)"]
    runs = [save_result(_result(method=name), tmp_path / f"r{i}") for i, name in enumerate(hostile)]
    out = tmp_path / "board.csv"
    export_leaderboard(runs, out)
    raw_methods = [row[0] for row in csv.reader(io.StringIO(out.read_text()))][1:]
    assert all(cell.startswith("'") for cell in raw_methods), raw_methods
    assert sorted(read_leaderboard(out)["method"]) == sorted(hostile)
    assert read_leaderboard(out)["clip_i"].tolist() == [0.8] * 4, "numbers are not touched"


def test_report_follows_no_symlink_out_and_reads_no_bench_a_results_file_names(tmp_path: Path, data_dir: Path) -> None:
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(secret)
    bench_file = tmp_path / "outside" / "planted.jsonl"
    subject = Subject("dog", "dog", ("dreambench/dataset/dog/00.jpg",), box=(0.1, 0.1, 0.9, 0.9), depth=0)
    write_bench_jsonl(Bench("planted", "1", (Sample("s0", "PLANTED PROMPT", 32, 32, "single", (subject,)),), data_dir), bench_file)
    folder = _run_folder(tmp_path / "run", bench=str(bench_file))
    (folder / "images" / "s1.png").unlink()
    (folder / "images" / "s1.png").symlink_to(secret)
    page = build_report(folder, data_dir=data_dir)
    assert "leads outside" in page and "PLANTED PROMPT" not in page and "not read" in page
    assert page.count("data:image/jpeg;base64,") == 1, "only the image inside the run folder is inlined"
    assert "PLANTED PROMPT" in build_report(folder, data_dir=data_dir, bench=str(bench_file)), "an explicit --bench is read"
    (folder / "samples.jsonl").rename(tmp_path / "outside" / "samples.jsonl")
    (folder / "samples.jsonl").symlink_to(tmp_path / "outside" / "samples.jsonl")
    result = runner.invoke(app, ["report", str(folder), "--out", str(tmp_path / "x.html")], env=WIDE)
    assert result.exit_code == 2 and "leads outside" in _text(result.output)


@pytest.mark.parametrize("sample_id", [".", "..", "../seed1/s0", "a/../../seed1/s0", "/etc/passwd", "a//b", "escape"])
def test_images_method_refuses_ids_outside_seed_folder(tmp_path: Path, sample_id: str) -> None:
    gens = tmp_path / "gens"
    (gens / "seed0").mkdir(parents=True)
    (gens / "seed1").mkdir()
    Image.new("RGB", (16, 16)).save(gens / "seed1" / "s0.png")
    Image.new("RGB", (16, 16)).save(gens / "seed0.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "outside.png")
    (gens / "seed0" / "escape.png").symlink_to(tmp_path / "outside.png")
    method = ImagesMethod(params={"dir": str(gens)})
    sample = Sample(sample_id, "a dog", 16, 16, "single", (Subject("dog", "dog", ("x.png",)),))
    with pytest.raises(Exception, match=re.escape(repr(sample_id))) as info:
        method.image_path(sample, 0)
    assert "inside" in str(info.value)
