"""`picbench run` and `picbench merge` from the command line: smoke labelling, summary, bad input,
Ctrl-C, the `images` method scoring a folder."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from holding import cli_holding_after, wait_until_held
from run_bench_helpers import write_tiny_bench
from slow_methods_plugin import install_plugin
from typer.testing import CliRunner

from picbench.cli import app
from picbench.methods import METHODS
from picbench.results import iter_sample_scores, load_result
from picbench.store import STORE_FILE

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["run", *args])


def _text(output: str) -> str:
    """Rich wraps lines at the terminal width: compare with whitespace collapsed."""
    return " ".join(output.split())


def _base(bench: Path, data_dir: Path, out: Path) -> list[str]:
    return ["--bench", str(bench), "--data-dir", str(data_dir), "--models", "tiny", "--detector", "none", "--out", str(out)]


def test_smoke_run_is_labelled_and_summarised_and_resumes(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=3)
    out = tmp_path / "run"
    first = _run("--method", "paste", "--limit", "2", "--seeds", "0,1", *_base(bench, data_dir, out))
    assert first.exit_code == 0, first.output
    text = _text(first.output)
    assert text.count("SMOKE RUN") == 2, "smoke banner at the start and the end"
    assert "paste on tiny-run-bench [SMOKE]" in text and "clip_i" in text
    assert "generated 4 (0 reused)" in text and "scored 4 (0 reused)" in text
    assert load_result(out).smoke
    second = _run("--method", "paste", "--limit", "2", "--seeds", "0,1", *_base(bench, data_dir, out))
    assert second.exit_code == 0 and "generated 0 (4 reused)" in _text(second.output) and "scored 0 (4 reused)" in _text(second.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "pastee"], "did you mean 'paste'"),
        (["--method", "paste", "--seeds", "0,x"], "--seeds must be comma-separated integers"),
        (["--method", "paste", "--param", "fit"], "--param expects KEY=VALUE"),
        (["--method", "paste", "--param", "fit=crop"], "fit must be one of"),
        (["--method", "paste", "--shard", "2/2"], "need 0 <= i < n"),
        (["--method", "images"], "needs --param dir=FOLDER"),
        (["--method", "paste", "--models", "huge"], "--models must be"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(tmp_path: Path, data_dir: Path, args: list[str], message: str) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    result = _run(*_base(bench, data_dir, tmp_path / "run"), *args)
    assert result.exit_code == 2 and message in _text(result.output), result.output


def test_unknown_bench_unwritable_out_and_incompatible_store(tmp_path: Path, data_dir: Path) -> None:
    unknown = _run("--method", "paste", "--bench", "dreambench-mullti", "--data-dir", str(data_dir), "--out", str(tmp_path / "r"))
    assert unknown.exit_code == 2 and "did you mean" in unknown.output
    bench = write_tiny_bench(tmp_path, data_dir, n=2)
    (tmp_path / "file").write_text("x")
    unwritable = _run("--method", "paste", *_base(bench, data_dir, tmp_path / "file" / "run"))
    assert (
        unwritable.exit_code == 2
        and "cannot create the lock file" in _text(unwritable.output)
        and "Not a directory" in _text(unwritable.output)
    )
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / STORE_FILE) as db:
        db.execute("CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany("INSERT INTO store_meta VALUES (?, ?)", [("schema_version", "0"), ("picbench_version", "0.0.1")])
    refused = _run("--method", "paste", *_base(bench, data_dir, old))
    assert refused.exit_code == 2 and "store schema 0" in _text(refused.output)
    assert not (old / "images").exists() or not any((old / "images").iterdir())


def test_shards_then_merge(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=3)
    out = tmp_path / "run"
    for part in ("0/2", "1/2"):
        result = _run("--method", "paste", "--shard", part, *_base(bench, data_dir, out))
        assert result.exit_code == 0 and f"picbench merge {out}" in _text(result.output), result.output
    assert not (out / "results.json").exists()
    merged = runner.invoke(app, ["merge", str(out)])
    assert merged.exit_code == 0, merged.output
    assert load_result(out).counts["items"] == 3 and "[SMOKE]" in merged.output


def test_images_method_scores_a_folder_like_the_method_that_made_it(tmp_path: Path, data_dir: Path) -> None:
    """Paste's images, laid out as `FOLDER/seed<S>/<sample>.png`, score exactly as paste did."""
    bench = write_tiny_bench(tmp_path, data_dir, n=3)
    assert _run("--method", "paste", "--seeds", "3", *_base(bench, data_dir, tmp_path / "paste")).exit_code == 0
    folder = tmp_path / "gens" / "seed3"
    folder.mkdir(parents=True)
    for score, image in iter_sample_scores(tmp_path / "paste"):
        shutil.copy(tmp_path / "paste" / image, folder / f"{score.sample_id}.png")
    result = _run("--method", "images", "--seeds", "3", "--param", f"dir={tmp_path / 'gens'}", *_base(bench, data_dir, tmp_path / "images"))
    assert result.exit_code == 0, result.output
    pasted, scored = load_result(tmp_path / "paste"), load_result(tmp_path / "images")
    assert scored.method == "images" and scored.counts["generation_failures"] == 0
    assert scored.metrics == pasted.metrics


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_finished_work(tmp_path: Path, data_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(install_plugin(tmp_path / "plugin"))}
    bench = write_tiny_bench(tmp_path, data_dir, n=4)
    out = tmp_path / "run"
    cmd = [
        *cli_holding_after("slow_methods_plugin:SlowPasteMethod.generate", 2, tmp_path / "held"),  # holds after two generations
        "run",
        "--method",
        "slowpaste",
        "--batch-size",
        "1",
        *_base(bench, data_dir, out),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_held(proc, tmp_path / "held")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "run the same command again to resume" in _text(stderr)
    with sqlite3.connect(out / STORE_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        saved = db.execute("SELECT count(*) FROM generations").fetchone()[0]
    assert saved == 2  # held after two generations
    METHODS.register("slowpaste", "slow_methods_plugin:SlowPasteMethod")
    resumed = _run("--method", "slowpaste", "--batch-size", "1", *_base(bench, data_dir, out))
    assert resumed.exit_code == 0 and f"({saved} reused)" in _text(resumed.output), resumed.output
