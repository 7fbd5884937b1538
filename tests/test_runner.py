"""The runner end to end on real DreamBench photos with the tiny (random-weight, smoke) metric
engine: results, resume after SIGKILL, per-sample failures, refusals, shards and ranks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from holding import cli_holding_after, wait_until_held
from PIL import Image
from run_bench_helpers import tiny_samples, write_tiny_bench
from slow_methods_plugin import install_plugin

from picbench.errors import UnknownNameError
from picbench.methods import METHODS
from picbench.records import Sample, Subject
from picbench.results import iter_sample_scores, load_result
from picbench.runner import BenchRefusedError, RunConfig, Shard, merge, run
from picbench.selection import select_samples
from picbench.store import STORE_FILE
from picbench.store.sqlite import SMOKE_PNG_KEY

CLI = [sys.executable, "-c", "from picbench.cli import main; main()"]


def _config(bench: Path, data_dir: Path, out: Path, **kw) -> RunConfig:
    defaults = dict(method="paste", bench=str(bench), out=out, seeds=(0, 1), models="tiny", data_dir=data_dir, batch_size=2)
    return RunConfig(**{**defaults, **kw})


def stable_results(out: Path) -> tuple[dict, str]:
    """results.json without what legitimately differs between invocations (time, checkout state),
    and samples.jsonl verbatim."""
    d = json.loads((out / "results.json").read_text())
    d["provenance"].pop("created")
    d["provenance"].pop("git")
    return d, (out / "samples.jsonl").read_text()


def _rows(out: Path, table: str = "generations") -> dict[str, tuple]:
    path = out / STORE_FILE
    if not path.exists():
        return {}
    key = "key" if table == "generations" else "generation_key"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return {r[0]: r[1:] for r in db.execute(f"SELECT {key}, created, writes FROM {table}")}
    except sqlite3.OperationalError:  # the tables are not created yet
        return {}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """(bench file, run folder) of one uninterrupted single-process paste run, to compare with."""
    folder = tmp_path_factory.mktemp("reference")
    bench = write_tiny_bench(folder, data_dir, n=4)
    with pytest.MonkeyPatch.context() as mp:  # the same isolated home as the function-scoped fixture gives
        mp.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
        run(_config(bench, data_dir, folder / "run", detector=None))
    return bench, folder / "run"


def test_run_writes_a_run_folder_and_a_rerun_recomputes_nothing(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=4)
    out = tmp_path / "run"
    first = run(_config(bench, data_dir, out, limit=2))  # with the default detector: box metrics too
    assert (first.generated, first.scored, first.generation_failures) == (4, 4, 0)
    result = load_result(out)
    assert result.smoke and result.method == "paste" and result.bench == "tiny-run-bench" and result.seeds == (0, 1)
    assert result.counts["items"] == 4 and result.counts["samples"] == 2 and result.counts["n_items"] == 4
    assert {"clip_i", "clip_t", "dino", "iou"} <= set(result.metrics)
    assert result.metrics["iou.single"] is not None and result.metrics["iou.multi"] is not None
    prov = result.provenance
    assert prov["picbench_version"] and prov["bench"]["limit"] == 2 and prov["seeds"] == [0, 1] and prov["smoke"] is True
    assert prov["method"]["params"]["models"] == "tiny" and prov["libraries"]["torch"] and prov["device"] == "cpu"
    assert prov["metric_engine"], "the metric engine's provenance (model ids, weight hashes) is recorded"
    rows = list(iter_sample_scores(out))
    chosen = [s.id for s in select_samples(tiny_samples(4), bench="b", limit=2)]
    assert sorted(sid[0] for sid in chosen) == ["m", "s"], "--limit 2 takes one single- and one multi-subject sample"
    assert [(s.sample_id, s.seed) for s, _ in rows] == [(sid, seed) for sid in chosen for seed in (0, 1)]
    assert all(s.smoke and (out / image).is_file() for s, image in rows)
    with Image.open(out / rows[0][1]) as image:
        assert image.size == (64, 64) and "random-weight" in image.text[SMOKE_PNG_KEY]
    before = stable_results(out)
    again = run(_config(bench, data_dir, out, limit=2))
    assert (again.generated, again.scored, again.generation_reused, again.score_reused) == (0, 0, 4, 4)
    assert stable_results(out) == before
    assert all(writes == 1 for _, writes in _rows(out).values())


def test_an_edited_sample_is_generated_again(tmp_path: Path, data_dir: Path) -> None:
    """The cache key covers the sample's record: moving a box under the same id is not served the old image."""
    samples = tiny_samples(2)
    bench = write_tiny_bench(tmp_path, data_dir, samples=samples)
    run(_config(bench, data_dir, tmp_path / "run", seeds=(0,), detector=None))
    dog = samples[0].subjects[0]
    moved = Sample(
        samples[0].id,
        samples[0].prompt,
        64,
        64,
        "single",
        (Subject(dog.name, dog.class_word, dog.references, box=(0.0, 0.0, 0.5, 0.5), depth=0),),
    )
    write_tiny_bench(tmp_path, data_dir, samples=[moved, samples[1]])
    again = run(_config(bench, data_dir, tmp_path / "run", seeds=(0,), detector=None))
    assert (again.generated, again.generation_reused) == (1, 1)


def test_methods_outputs_are_checked_per_sample(tmp_path: Path, data_dir: Path) -> None:
    METHODS.register("faulty", "slow_methods_plugin:FaultyMethod")
    broken = tmp_path / "broken.png"
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    broken.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    bench = write_tiny_bench(tmp_path, data_dir, n=6)
    out = tmp_path / "run"
    outcome = run(
        _config(bench, data_dir, out, method="faulty", seeds=(0,), batch_size=3, params={"broken_png": str(broken)}, detector=None)
    )
    assert outcome.generation_failures == 4
    by_sample = {
        s.sample_id: (s, json.loads(line))
        for (s, _), line in zip(iter_sample_scores(out), (out / "samples.jsonl").read_text().splitlines())
    }
    failures = {sid: line["generation_failure"] for sid, (_, line) in by_sample.items()}
    assert failures["s00"] is None and failures["m05"] is None
    assert "wrong size 72x64, expected 64x64" in failures["m01"]
    assert "broken image" in failures["s02"]
    assert "NaN" in failures["m03"]
    assert "RuntimeError: the sampler diverged" in failures["s04"]
    assert by_sample["m05"][1]["image"] is not None and by_sample["m01"][1]["image"] is None
    assert all(by_sample[sid][0].failures for sid in ("m01", "s02", "m03", "s04")), "failures reach the Score records"
    result = load_result(out)
    assert result.counts["generation_failures"] == 4 and result.counts["items"] == 6


def test_unknown_bench_gets_a_suggestion_and_nothing_is_written(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean"):
        run(RunConfig(method="paste", bench="dreambench-mullti", out=tmp_path / "run", data_dir=data_dir, models="tiny"))
    with pytest.raises(UnknownNameError, match="did you mean 'paste'"):
        run(
            RunConfig(
                method="pastee",
                bench=str(write_tiny_bench(tmp_path, data_dir, n=2)),
                out=tmp_path / "run",
                data_dir=data_dir,
                models="tiny",
            )
        )
    assert not (tmp_path / "run").exists()


def test_a_bench_failing_validation_is_refused_before_generating(tmp_path: Path, data_dir: Path) -> None:
    samples = tiny_samples(2) + [
        Sample("gone", "a dog", 64, 64, "single", (Subject("dog", "dog", ("dreambench/dataset/dog/99.jpg",), box=(0.1, 0.1, 0.5, 0.5)),))
    ]
    bench = write_tiny_bench(tmp_path, data_dir, samples=samples, name="damaged")
    with pytest.raises(BenchRefusedError, match=r"nothing was generated(.|\n)*dog/99\.jpg"):
        run(_config(bench, data_dir, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_sharded_run_merges_to_the_single_process_results(tmp_path: Path, data_dir: Path, reference_run: tuple[Path, Path]) -> None:
    bench, reference = reference_run
    shards = tmp_path / "shards"
    part0 = run(_config(bench, data_dir, shards, shard=Shard.parse("0/2"), detector=None))
    assert part0.result is None and part0.items == 4 and not (shards / "results.json").exists()
    with pytest.raises(Exception, match=r"shard\(s\) 1/2 have not finished"):
        merge(shards)
    run(_config(bench, data_dir, shards, shard=Shard.parse("1/2"), batch_size=3, detector=None))
    merge(shards)
    assert stable_results(shards) == stable_results(reference)


def _cli_run(out: Path, bench: Path, data_dir: Path, method: str = "slowpaste") -> list[str]:
    return [
        *CLI,
        "run",
        "--method",
        method,
        "--bench",
        str(bench),
        "--data-dir",
        str(data_dir),
        "--models",
        "tiny",
        "--seeds",
        "0,1",
        "--batch-size",
        "1",
        "--out",
        str(out),
    ]


def _kill_when_held(command: list[str], env: dict[str, str], held: Path) -> None:
    """Start ``command`` (built with cli_holding_after(..., held)) and SIGKILL it where it holds."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_held(proc, held)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_identical_results(tmp_path: Path, data_dir: Path) -> None:
    """Killed while generating, then killed again while scoring, then resumed: nothing finished
    is redone (every record written once, timestamps unchanged) and the results equal an
    uninterrupted run's."""
    METHODS.register("slowpaste", "slow_methods_plugin:SlowPasteMethod")
    env = {**os.environ, "PYTHONPATH": str(install_plugin(tmp_path / "plugin"))}
    bench = write_tiny_bench(tmp_path, data_dir, n=4)
    n_items = 8
    run(_config(bench, data_dir, tmp_path / "full", method="slowpaste", batch_size=1, detector=None))
    killed = tmp_path / "killed"
    cli = [*_cli_run(killed, bench, data_dir), "--detector", "none"]
    generating = tmp_path / "held-generating"
    _kill_when_held([*cli_holding_after("slow_methods_plugin:SlowPasteMethod.generate", 2, generating), *cli[len(CLI) :]], env, generating)
    gens_before = _rows(killed)
    assert len(gens_before) == 2 and not _rows(killed, "scores")  # generation held after two
    scoring = tmp_path / "held-scoring"
    _kill_when_held([*cli_holding_after("picbench.store.sqlite:RunStore.put_score", 2, scoring), *cli[len(CLI) :]], env, scoring)
    assert len(_rows(killed)) == n_items and len(_rows(killed, "scores")) == 2  # killed while scoring
    gens_mid, scores_mid = _rows(killed), _rows(killed, "scores")
    assert all(gens_mid[k] == v for k, v in gens_before.items()), "a finished generation was recomputed"
    subprocess.run(cli, env=env, check=True, capture_output=True, timeout=300)
    gens_after, scores_after = _rows(killed), _rows(killed, "scores")
    assert len(gens_after) == len(scores_after) == n_items
    assert gens_after == gens_mid, "a finished generation was recomputed"
    assert all(scores_after[k] == v for k, v in scores_mid.items()), "a finished score was recomputed"
    assert all(writes == 1 for _, writes in [*gens_after.values(), *scores_after.values()])
    assert stable_results(killed) == stable_results(tmp_path / "full")
    for image in (tmp_path / "full" / "images").iterdir():
        assert (killed / "images" / image.name).read_bytes() == image.read_bytes()


@pytest.mark.slow
def test_two_ranks_under_torchrun_equal_one_process(tmp_path: Path, data_dir: Path, reference_run: tuple[Path, Path]) -> None:
    bench, reference = reference_run
    args = [
        "run",
        "--method",
        "paste",
        "--bench",
        str(bench),
        "--data-dir",
        str(data_dir),
        "--models",
        "tiny",
        "--seeds",
        "0,1",
        "--batch-size",
        "2",
        "--detector",
        "none",
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python", *CLI]
    done = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(tmp_path / "two" / STORE_FILE) as db:
        parts = dict(db.execute("SELECT part, status FROM run_parts"))
        pids = {r[0] for r in db.execute("SELECT DISTINCT pid FROM generations")}
    assert parts == {"0/2": "done", "1/2": "done"} and len(pids) == 2, "each rank generated its own shard"
    assert stable_results(tmp_path / "two") == stable_results(reference)


def test_a_tiny_positionic_run(tmp_path: Path, data_dir: Path) -> None:
    """The reference method through the whole runner: one two-subject sample, two denoising steps."""
    bench = write_tiny_bench(tmp_path, data_dir, samples=tiny_samples(2)[1:])
    outcome = run(_config(bench, data_dir, tmp_path / "run", method="positionic", seeds=(0,), params={"steps": 2}, detector=None))
    assert outcome.generated == 1 and outcome.generation_failures == 0
    result = load_result(tmp_path / "run")
    assert result.method == "positionic" and result.smoke and result.method_params["steps"] == 2
    assert result.metrics["clip_i.multi"] is not None
    ((score, image),) = list(iter_sample_scores(tmp_path / "run"))
    assert score.sample_id == "m01" and Image.open(tmp_path / "run" / image).size == (64, 64)
