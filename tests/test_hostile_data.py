"""Pair sets, BMPDS configs, ``compare``, ``report`` on training folders, metric models and
``$PICBENCH_HOME`` under careless and hostile input (issue 23, classes 9, 10, 12, 13 and 14): each
test asserts the message, the exit code, and that nothing finished was lost or overwritten.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_bench_helpers import write_tiny_bench
from typer.testing import CliRunner

from picbench.cli import app
from picbench.coverage import Coverage
from picbench.records import Score
from picbench.results import RunResult, save_result

runner = CliRunner()


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [*args], env={"COLUMNS": "300", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    from picbench.pairs.paste import build_paste_pairs

    out = tmp_path_factory.mktemp("pairs") / "paste-pairs"
    build_paste_pairs(data_dir, out, seed=0, n_multi=2, n_single=1)
    return out


def _edited_pairs(tmp_path: Path, pairs: Path, edit) -> Path:  # noqa: ANN001
    """A copy of the pair set whose records (not the header) went through `edit(index, record)`."""
    import shutil

    mine = tmp_path / "pairs"
    shutil.copytree(pairs, mine)
    lines = (mine / "pairs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    for i, record in enumerate(records):
        edit(i, record)
    (mine / "pairs.jsonl").write_text("\n".join([lines[0], *(json.dumps(r) for r in records)]) + "\n")
    return mine


# -- 9. compare refuses what cannot be paired ----------------------------------------------------


def _run(folder: Path, bench: str, bench_hash: str, directions: dict[str, bool], shift: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    scores = [Score(sample_id=f"s{i:02d}", seed=0, metrics={"clip_i": 0.5 + 0.01 * i + shift}, subjects=()) for i in range(12)]
    (folder / "samples.jsonl").write_text("".join(json.dumps({**s.to_dict(), "image": None}) + "\n" for s in scores))
    protocol = {"name": "default", "hash": "p" * 12, "fields": {"precision": "fp32"}}
    result = RunResult(
        "m",
        "1",
        {},
        bench,
        "1",
        bench_hash,
        (0,),
        {"clip_i": 0.5 + shift},
        {"n_items": 12},
        False,
        higher_is_better=directions,
        protocol=protocol,
        coverage=Coverage(12, 12, 0),
    )
    save_result(result, folder)
    return folder


@pytest.mark.parametrize(
    ("bench_b", "hash_b", "direction_b", "message"),
    [
        ("dreambench", "aaaa", True, "A on msbench (hash aaaa), B on dreambench (hash aaaa)"),
        ("msbench", "bbbb", True, "A on msbench (hash aaaa), B on msbench (hash bbbb)"),
        ("msbench", "aaaa", False, "metric clip_i: A says higher is better, B says lower is better"),
    ],
    ids=["other-bench", "other-hash", "other-direction"],
)
def test_compare_refuses_runs_of_different_benches_or_directions(
    tmp_path: Path, bench_b: str, hash_b: str, direction_b: bool, message: str
) -> None:
    a = _run(tmp_path / "a", "msbench", "aaaa", {"clip_i": True})
    b = _run(tmp_path / "b", bench_b, hash_b, {"clip_i": direction_b}, shift=0.1)
    code, output = _cli("compare", str(a), str(b))
    assert code == 2 and "cannot be compared item by item" in output and message in output, output
    assert json.loads((a / "results.json").read_text())["bench"] == "msbench"  # nothing was rewritten
    same, output = _cli("compare", str(a), str(_run(tmp_path / "c", "msbench", "aaaa", {"clip_i": True}, shift=0.1)), "--allow-partial")
    assert same == 0, output


# -- 10. validate applies the trainer's rules to a pair set ---------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda i, r: i == 0 and r["subjects"][0].pop("depth"), "depth rank"),
        (lambda i, r: i == 1 and r.pop("target"), "no target image"),
    ],
    ids=["missing-depth", "missing-target"],
)
def test_validate_refuses_what_train_refuses(tmp_path: Path, pairs: Path, edit, message: str) -> None:  # noqa: ANN001
    from picbench.pairs import read_pairs

    mine = _edited_pairs(tmp_path, pairs, edit)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - the trainer's reader, whatever its type
        read_pairs(mine)
    assert message in str(refused.value)
    for target in (mine, mine / "pairs.jsonl"):
        code, output = _cli("validate", str(target), "--no-images")
        assert code == 1 and "FAILED" in output and message in output, output
    assert _cli("validate", str(pairs), "--no-images")[0] == 0


# -- 12. damaged pair-set metadata and training folders -------------------------------------------


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"bmpds": [1, 2]}, "meta.bmpds"),
        ({"bmpds": {"scores": "high"}}, "meta.bmpds.scores"),
        ({"bmpds": {"stage": 3}}, "meta.bmpds.stage"),
    ],
    ids=["bmpds-list", "scores-string", "stage-number"],
)
def test_data_stats_and_report_name_damaged_metadata(tmp_path: Path, pairs: Path, meta: dict, field: str) -> None:
    mine = _edited_pairs(tmp_path, pairs, lambda i, r: i == 0 and r["meta"].update(meta))
    first = json.loads((mine / "pairs.jsonl").read_text().splitlines()[1])["id"]
    for args in (["data", "stats", str(mine)], ["data", "report", str(mine), "--out", str(tmp_path / "pairs.html")]):
        code, output = _cli(*args)
        assert code == 2 and f"sample {first!r}, field {field!r}" in output, output
    assert not (tmp_path / "pairs.html").exists()


def test_data_stats_names_unbinnable_scores(tmp_path: Path, pairs: Path) -> None:
    mine = _edited_pairs(tmp_path, pairs, lambda i, r: r["meta"].update({"bmpds": {"scores": {"clip_i": [1e308 * (-1) ** i]}}}))
    code, output = _cli("data", "stats", str(mine))
    assert code == 2 and "clip_i score of" in output and "lies outside" in output, output


@pytest.mark.parametrize(
    ("log", "message"),
    [
        ('{"step": 1, "loss": 0.5, "eval": [1, 2]}\n', "train_log.jsonl:1: field 'eval' must be a table"),
        ('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n{"step": 3}\n', "train_log.jsonl:2: not a JSON record"),
        (b'{"step": 1, "loss": 0.5}\n{"step": \xff\xfe}\n{"step": 3}\n', "train_log.jsonl:2: not a JSON record"),
        ('{"step": 1e400}\n{"step": 2}\n', "train_log.jsonl:1: field 'step' is missing or not an integer"),
        ('{"step": 99999999999999999999999}\n', "train_log.jsonl:1: field 'step' is missing or not an integer"),
    ],
    ids=["eval-list", "torn-middle", "bad-utf8", "float-step", "huge-step"],
)
def test_report_on_a_damaged_training_folder_names_file_and_line(tmp_path: Path, log: str | bytes, message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_bytes(log if isinstance(log, bytes) else log.encode())
    code, output = _cli("report", str(run), "--out", str(tmp_path / "page.html"))
    assert code == 2 and message in output, output
    assert not (tmp_path / "page.html").exists()


def test_report_on_a_training_folder_skips_a_torn_last_line_and_huge_numbers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": 10**400 if s == 2 else 1.0}) for s in (1, 2, 3)]
    (run / "train_log.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    code, output = _cli("report", str(run), "--out", str(tmp_path / "page.html"))
    assert code == 0, output
    assert "<th>last step</th><td>3</td>" in (tmp_path / "page.html").read_text()


# -- 13. BMPDS configs and $PICBENCH_HOME ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ('device = "gpu7"', "device", "is not a device picbench runs on"),
        ("[roles]\nrender_guidance = nan", "roles.render_guidance", "must be a finite number"),
        ("[filter]\nclip_i = inf", "filter.clip_i", "must be a finite number"),
        ("[stages]\nsingle = 1000000000", "stages.single", "must be in [0, 1000000]"),
        ("[roles]\nsteps = 100000", "roles.steps", "must be in [1, 1000]"),
    ],
    ids=["device", "guidance-nan", "threshold-inf", "stage-1e9", "steps"],
)
def test_bmpds_config_numbers_and_device_are_refused_before_work(
    tmp_path: Path, data_dir: Path, text: str, field: str, message: str
) -> None:
    config = tmp_path / "bmpds.toml"
    config.write_text('models = "tiny"\nsize = 64\n' + text + "\n")
    code, output = _cli("data", "build", "bmpds", str(config), "--out", str(tmp_path / "build"), "--data-dir", str(data_dir))
    assert code == 2 and f"{config}, field {field!r}" in output and message in output, output
    assert not (tmp_path / "build").exists()


def test_picbench_home_naming_a_file_is_refused_without_a_traceback(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-c", "from picbench.cli import main; main()", "bench", "build", "positionic-open", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PICBENCH_HOME": str(home), "COLUMNS": "300"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"picbench's home {home} ($PICBENCH_HOME or ~/.cache/picbench) is a file, not a folder" in " ".join(proc.stderr.split())
    assert home.read_text() == "not a folder"


# -- 14. every requested metric model is found before any generation -------------------------------


def test_missing_vlm_judge_weights_stop_the_run_before_generating(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)
    out = tmp_path / "out"
    code, output = _cli(
        "run", "--method", "paste", "--bench", str(bench), "--data-dir", str(data_dir), "--metrics", "vlm_judge", "--out", str(out)
    )
    assert code == 2 and "vlm_judge" in output and "Qwen/Qwen2.5-VL-7B-Instruct" in output, output
    assert not list(out.rglob("*.png"))
