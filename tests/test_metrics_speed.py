"""What the speed work guarantees: a fresh generation is scored from memory (its PNG is not decoded
again), a rerun with nothing left to score builds no model, and `picbench --help` imports neither
pandas, matplotlib nor torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from run_bench_helpers import write_tiny_bench

import picbench.metrics.decoding as decoding_module
import picbench.metrics.models as models_module
from picbench.runner import RunConfig, run


def _config(bench: Path, data_dir: Path, out: Path) -> RunConfig:
    return RunConfig(method="paste", bench=str(bench), out=out, data_dir=data_dir, models="tiny", detector=None, metrics=("clip_i", "dino"))


def test_fresh_generations_are_scored_from_memory_and_a_finished_rerun_builds_no_model(tmp_path, data_dir, monkeypatch):
    bench = write_tiny_bench(tmp_path, data_dir, n=3)
    out = tmp_path / "run"

    def no_decoding(path):
        raise AssertionError(f"{path} was decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(decoding_module, "decode_generated", no_decoding)
        first = run(_config(bench, data_dir, out))
    assert first.scored == 3 and first.result.counts["n_failures"] == 0
    results = json.loads((out / "results.json").read_text())

    def no_models(*args, **kwargs):
        raise AssertionError("a model was built for a run with nothing left to score")

    monkeypatch.setattr(models_module, "load_clip", no_models)
    monkeypatch.setattr(models_module, "load_dino", no_models)
    again = run(_config(bench, data_dir, out))
    assert (again.generated, again.scored, again.score_reused) == (0, 0, 3)
    rerun = json.loads((out / "results.json").read_text())
    for volatile in ("created", "git"):
        results["provenance"].pop(volatile), rerun["provenance"].pop(volatile)
    assert rerun == results  # the engine's provenance is read back, not rebuilt


def test_cli_help_imports_no_heavy_library():
    code = "import sys, picbench.cli; print(sorted(m for m in ('pandas', 'matplotlib', 'torch', 'transformers') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
