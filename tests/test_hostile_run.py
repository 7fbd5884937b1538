"""Hostile and careless runs (issue classes 1, 2 and 7): the environment is checked before work
starts and never stored as a sample's outcome; method parameters and seeds are checked before
any model loads; SIGTERM, a second run on the same folder, killed writers and the umask are
handled. Each case asserts what the message names and that finished work is kept."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from holding import cli_holding_after, wait_until_held
from PIL import Image
from run_bench_helpers import write_tiny_bench
from slow_methods_plugin import install_plugin
from typer.testing import CliRunner

from picbench.atomic import _HOST, atomic_write
from picbench.cli import app
from picbench.errors import MissingWeightsError
from picbench.methods import METHODS, Method
from picbench.methods.params import MethodParamError
from picbench.methods.paste import PasteMethod
from picbench.metrics.detectors.base import DetectorOutput
from picbench.records import Sample, Subject
from picbench.store import STORE_FILE, RunLock

runner = CliRunner()
ABSENT_CUDA = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


class DiskFullPaste(PasteMethod):
    """Paste that finds the disk full at sample m01 (after s00 is finished)."""

    name = "diskfull"

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        if any(s.id == "m01" for s in samples):
            raise OSError(errno.ENOSPC, "No space left on device", "/scratch/cache.bin")
        return super().generate(samples, seed, data_root)


class UnreleasedPaste(PasteMethod):
    """Paste with a checkpoint that is nowhere to be found (a lazily loaded network)."""

    name = "unreleased"

    def _load(self) -> None:
        raise MissingWeightsError(
            "method unreleased: checkpoint 'acme/unreleased-v2' is not available locally and the hub could not be reached"
        )


class BatchOOMPaste(PasteMethod):
    """Paste that runs out of accelerator memory on any batch of more than one sample."""

    name = "batchoom"

    def generate(self, samples: Sequence[Sample], seed: int, data_root: Path) -> list[Image.Image]:
        if len(samples) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return super().generate(samples, seed, data_root)


@pytest.fixture(scope="module", autouse=True)
def _test_methods() -> None:
    """Registered when this module's tests run, not when it is collected, so that the conformance
    suite (which enumerates the registry at collection) sees only the methods picbench ships."""
    METHODS.register("diskfull", "test_hostile_run:DiskFullPaste")
    METHODS.register("batchoom", "test_hostile_run:BatchOOMPaste")
    METHODS.register("unreleased", "test_hostile_run:UnreleasedPaste")


def _text(output: str) -> str:
    return " ".join(output.split())


def _generations(out: Path) -> dict[str, str | None]:
    """sample id -> failure of every stored generation (empty when no store exists)."""
    if not (out / STORE_FILE).exists():
        return {}
    try:
        with sqlite3.connect(f"file:{out / STORE_FILE}?mode=ro", uri=True, timeout=30) as db:
            return dict(db.execute("SELECT sample_id, failure FROM generations").fetchall())
    except sqlite3.OperationalError:  # the store is being created
        return {}


def _run(bench: Path, data_dir: Path, out: Path, *args: str, models: str = "tiny"):
    base = ["run", "--bench", str(bench), "--data-dir", str(data_dir), "--models", models, "--detector", "none", "--out", str(out)]
    return runner.invoke(app, [*base, *args])


# -- class 1: environment errors are not sample results ----------------------------------------


def test_an_absent_device_stops_before_generating_and_stores_nothing(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=3), tmp_path / "run"
    refused = _run(bench, data_dir, out, "--method", "paste", "--device", ABSENT_CUDA)
    assert refused.exit_code == 2 and f"--device {ABSENT_CUDA}" in _text(refused.output) and "--device cpu" in _text(refused.output)
    assert _generations(out) == {}, "no failure stored for the environment"
    done = _run(bench, data_dir, out, "--method", "paste", "--device", "cpu")
    assert done.exit_code == 0 and "generated 3 (0 reused), 0 generation failure(s)" in _text(done.output), done.output
    for device, says in (("tpu", "not a device picbench runs on"), ("cpu:3", "one cpu device")):
        bad = _run(bench, data_dir, tmp_path / device, "--method", "paste", "--device", device)
        assert bad.exit_code == 2 and says in _text(bad.output)


def test_merge_checks_the_device_before_scoring(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    for part in ("0/2", "1/2"):
        assert _run(bench, data_dir, out, "--method", "paste", "--shard", part).exit_code == 0
    refused = runner.invoke(app, ["merge", str(out), "--device", ABSENT_CUDA])
    assert refused.exit_code == 2 and f"--device {ABSENT_CUDA}" in _text(refused.output)
    assert not (out / "results.json").exists()
    assert runner.invoke(app, ["merge", str(out), "--device", "cpu"]).exit_code == 0


def test_missing_metric_weights_fail_before_the_first_generation(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    monkeypatch.delenv("PICBENCH_WEIGHTS_DIR", raising=False)
    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    result = _run(bench, data_dir, out, "--method", "paste", models="default")
    assert result.exit_code == 2, result.output
    assert "MissingWeights" in result.output or "weights for the clip model" in _text(result.output)
    assert "--weights clip=DIR" in _text(result.output)
    assert _generations(out) == {}, "nothing generated before the weights were found missing"
    unknown = _run(bench, data_dir, tmp_path / "r2", "--method", "paste", "--weights", f"clipp={tmp_path}")
    assert unknown.exit_code == 2 and "unknown role(s) ['clipp']" in _text(unknown.output)


def test_out_of_memory_on_a_batch_retries_its_samples_one_by_one(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=4), tmp_path / "run"
    result = _run(bench, data_dir, out, "--method", "batchoom", "--batch-size", "2")
    assert result.exit_code == 0 and "generated 4 (0 reused), 0 generation failure(s)" in _text(result.output), result.output
    assert set(_generations(out).values()) == {None}


def test_a_missing_method_checkpoint_fails_before_the_first_generation(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    result = _run(bench, data_dir, out, "--method", "unreleased")
    assert result.exit_code == 2 and "checkpoint 'acme/unreleased-v2'" in _text(result.output)
    assert _generations(out) == {}


def test_a_full_disk_stops_the_run_keeps_finished_work_and_records_no_failure(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=3), tmp_path / "run"
    stopped = _run(bench, data_dir, out, "--method", "diskfull", "--batch-size", "1")
    assert stopped.exit_code == 2, stopped.output
    assert "the disk" in _text(stopped.output) and "m01" in _text(stopped.output) and "not recorded" in _text(stopped.output)
    assert _generations(out) == {"s00": None}, "s00 kept, m01's environment error not stored"
    assert not (out / "results.json").exists()


def test_out_of_memory_while_scoring_stops_the_run_and_stores_no_score(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from picbench.metrics.engine import MetricEngine

    def oom(self: MetricEngine, items: object, data_root: Path):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        yield  # a generator, like the real one

    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    monkeypatch.setattr(MetricEngine, "score", oom)
    stopped = _run(bench, data_dir, out, "--method", "paste")
    assert stopped.exit_code == 2 and "scoring stopped by out of accelerator memory" in _text(stopped.output), stopped.output
    assert set(_generations(out)) == {"s00", "m01"}, "finished generations kept"
    with sqlite3.connect(out / STORE_FILE) as db:
        assert db.execute("SELECT count(*) FROM scores").fetchone()[0] == 0
    monkeypatch.undo()
    resumed = _run(bench, data_dir, out, "--method", "paste")
    assert resumed.exit_code == 0 and "generated 0 (2 reused)" in _text(resumed.output) and "scored 2 (0 reused)" in _text(resumed.output)


def test_a_detector_losing_the_device_is_not_an_items_failure() -> None:
    from picbench.metrics.detectors.base import Detector as DetectorBase
    from picbench.metrics.scheduling import detect_or_fail

    class Detector(DetectorBase):
        name = "flaky"

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def detect(self, image: Image.Image, classes: list[str]) -> None:
            if image.width == 8:
                raise self.exc
            return DetectorOutput((), "fine")

    bad, good = Image.new("RGB", (8, 8)), Image.new("RGB", (9, 9))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        detect_or_fail(Detector(RuntimeError("CUDA error: an illegal memory access")), [good, bad], [["dog"], ["dog"]])
    outputs = detect_or_fail(Detector(ValueError("no JSON in the answer")), [good, bad, good], [["dog"]] * 3)
    assert [o.failed for o in outputs] == [False, True, False]  # the batch failed: retried image by image
    assert "no JSON in the answer" in outputs[1].problems[0] and outputs[0].raw == outputs[2].raw == "fine"


def test_a_refused_bench_is_named_as_given(tmp_path: Path, data_dir: Path) -> None:
    missing = Sample("s0", "a dog", 64, 64, "single", (Subject("dog", "dog", ("dreambench/dataset/dog/nope.jpg",)),))
    bench, out = write_tiny_bench(tmp_path, data_dir, samples=[missing], name="refused"), tmp_path / "run"
    result = _run(bench, data_dir, out, "--method", "paste")
    assert result.exit_code == 2 and f"bench {bench} fails validation" in _text(result.output)
    assert f"picbench validate {bench}" in _text(result.output) and "nope.jpg" in _text(result.output)
    assert _generations(out) == {}


# -- class 2: method parameters and seeds, checked before any model loads ------------------------


@pytest.mark.parametrize(
    ("param", "names"),
    [
        ("steps=1e9", "parameter 'steps' must be an integer in [1, 1000], got 1000000000.0"),
        ("steps=0", "parameter 'steps' must be an integer in [1, 1000]"),
        ("guidance=NaN", "parameter 'guidance' must be a finite number, got nan"),
        ('guidance="high"', "parameter 'guidance' must be a finite number in [0, 100]"),
        ("attention_backend=3", "parameter 'attention_backend' must be a string"),
    ],
)
def test_method_parameters_are_checked_before_any_model_loads(
    tmp_path: Path, data_dir: Path, param: str, names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    loads: list[str] = []
    monkeypatch.setattr(Method, "load", lambda self: loads.append(self.name))
    result = _run(bench, data_dir, out, "--method", "positionic", "--param", param)
    assert result.exit_code == 2 and f"method positionic: {names}" in _text(result.output), result.output
    assert loads == [] and _generations(out) == {}  # refused before any network was built, nothing generated


@pytest.mark.parametrize("name", ["dreamo", "gligen", "instancediffusion", "msdiffusion", "positionic", "uno"])
def test_every_declared_parameter_refuses_a_bad_value_by_name(name: str) -> None:
    method = METHODS.get(name)
    declared = [p for p in method.param_specs if p in method.default_params]
    assert {"steps"} <= set(declared), f"{name} declares the range of its steps"
    for param in declared:
        spec = method.param_specs[param]
        for bad in (["a", "list"], float("nan") if spec.kind == "float" else True, 10**9 if spec.high is not None else None):
            if bad is None or spec.problem(bad) is None:
                continue
            with pytest.raises(MethodParamError, match=f"method {name}: parameter '{param}'"):
                method(models="tiny", params={param: bad})


@pytest.mark.parametrize("seeds", [str(2**63), "-1", "0," + "9" * 30])
def test_seeds_must_fit_in_63_bits(tmp_path: Path, data_dir: Path, seeds: str) -> None:
    result = _run(write_tiny_bench(tmp_path, data_dir, n=2), data_dir, tmp_path / "run", "--method", "paste", "--seeds", seeds)
    assert result.exit_code == 2 and "outside [0, 2**63)" in _text(result.output)


def test_the_runner_checks_seeds_for_api_callers_too(tmp_path: Path, data_dir: Path) -> None:
    from picbench.errors import PicbenchError
    from picbench.runner import RunConfig, run

    config = RunConfig(
        "paste",
        str(write_tiny_bench(tmp_path, data_dir, n=2)),
        tmp_path / "run",
        seeds=(0, 2**64),
        data_dir=data_dir,
        models="tiny",
        detector=None,
    )
    with pytest.raises(PicbenchError, match=r"seeds must be integers in \[0, 2\*\*63\)"):
        run(config)
    assert _generations(tmp_path / "run") == {}


# -- class 7: signals, locks, killed writers, permissions --------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    with RunLock(out, "0/1"):
        refused = _run(bench, data_dir, out, "--method", "paste")
        assert (
            refused.exit_code == 2
            and f"picbench run pid {os.getpid()}" in _text(refused.output)
            and "being worked on" in _text(refused.output)
        )
        assert _generations(out) == {}
        other_shard = _run(bench, data_dir, out, "--method", "paste", "--shard", "1/2")
        assert other_shard.exit_code == 0, "another part of the run is not locked out"
    assert _run(bench, data_dir, out, "--method", "paste").exit_code == 0


def test_the_lock_is_taken_before_the_bench_is_read(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run is refused before it reads or validates the bench (a big bench takes seconds)."""
    import picbench.runner

    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    read: list[str] = []
    monkeypatch.setattr(picbench.runner, "load_bench", lambda name, *args: read.append(name))
    with RunLock(out, "0/1"):
        refused = _run(bench, data_dir, out, "--method", "paste")
    assert refused.exit_code == 2 and "being worked on" in _text(refused.output) and read == []


def test_temporary_files_of_killed_writers_are_removed_on_the_next_run(tmp_path: Path, data_dir: Path) -> None:
    bench, out = write_tiny_bench(tmp_path, data_dir, n=2), tmp_path / "run"
    (out / "images").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = [
        out / "images" / f".s00.png.{_HOST}-{dead.stdout.strip()}.k2j4.tmp",
        out / f".results.json.{_HOST}-{dead.stdout.strip()}.x9.tmp",
    ]
    live = out / "images" / f".m01.png.{_HOST}-{os.getpid()}.a1.tmp"
    foreign = out / "images" / ".notes.tmp"
    for path in (*stale, live, foreign):
        path.write_bytes(b"half a file")
    assert _run(bench, data_dir, out, "--method", "paste").exit_code == 0
    assert not any(p.exists() for p in stale) and live.exists() and foreign.exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "shared.json") as fh:
            fh.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == mode


def test_published_model_folders_follow_the_umask(tmp_path: Path) -> None:
    from picbench.tiny.publish import publish_folder

    old = os.umask(0o022)
    try:
        folder = publish_folder(tmp_path / "tiny" / "clip", lambda staging: (staging / "model.bin").write_bytes(b"w"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


@pytest.mark.slow
def test_sigterm_keeps_finished_work_and_the_rerun_equals_an_uninterrupted_run(tmp_path: Path, data_dir: Path) -> None:
    from test_runner import stable_results

    env = {**os.environ, "PYTHONPATH": str(install_plugin(tmp_path / "plugin"))}
    bench = write_tiny_bench(tmp_path, data_dir, n=4)
    reference, out = tmp_path / "reference", tmp_path / "run"
    base = [
        "--method",
        "slowpaste",
        "--batch-size",
        "1",
        "--bench",
        str(bench),
        "--data-dir",
        str(data_dir),
        "--models",
        "tiny",
        "--detector",
        "none",
    ]
    cmd = [
        *cli_holding_after("slow_methods_plugin:SlowPasteMethod.generate", 2, tmp_path / "held"),
        "run",
        *base,
        "--out",
        str(out),
    ]  # waits for SIGTERM after two generations
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_held(proc, tmp_path / "held")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated (SIGTERM)" in stderr and "run the same command again to resume" in _text(stderr)
    saved = _generations(out)
    assert len(saved) == 2 and all(f is None for f in saved.values())  # generation held after two
    METHODS.register("slowpaste", "slow_methods_plugin:SlowPasteMethod")
    resumed = runner.invoke(app, ["run", *base, "--out", str(out)])
    assert resumed.exit_code == 0 and f"({len(saved)} reused)" in _text(resumed.output), resumed.output
    assert not list(out.rglob("*.tmp"))
    assert runner.invoke(app, ["run", *base, "--out", str(reference)]).exit_code == 0
    assert stable_results(out) == stable_results(reference)
