"""Metrics and detectors as plug-ins: a separately installed distribution's entry points are used
by `picbench run`, land in results.json with their direction, and `regress` reads the direction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from metrics_plugin import install_plugin
from run_bench_helpers import tiny_samples, write_tiny_bench
from typer.testing import CliRunner

from picbench.cli import app
from picbench.errors import PicbenchError
from picbench.metrics import METRICS
from picbench.metrics.base import Metric
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.engine import MetricEngine
from picbench.registry import Registry
from picbench.results import iter_sample_scores, load_result

runner = CliRunner()


def test_a_metric_that_raises_or_returns_nan_or_text_fails_alone_by_name(data_dir):
    METRICS.register("flaky", "metrics_plugin:Flaky")
    engine = MetricEngine(models="tiny", metrics=["clip_i", "flaky"], detector=None)
    from picbench.methods.paste import PasteMethod

    samples = tiny_samples(4)
    images = PasteMethod(models="tiny", device="cpu").generate(samples, 0, data_dir)
    scores = {s.sample_id: s for s in engine.score([ScoreItem(s, 0, None, image=im) for s, im in zip(samples, images)], data_dir)}
    assert "metric flaky failed: RuntimeError: flaky metric exploded" in scores["s00"].failures
    assert any("metric flaky failed" in f and "not a finite number" in f for f in scores["m01"].failures)
    assert any("metric flaky failed" in f and "str" in f for f in scores["s02"].failures)
    assert scores["m03"].metrics["flaky"] == 1.0 and not scores["m03"].failures
    for sid in ("s00", "m01", "s02"):
        assert scores[sid].metrics["flaky"] is None and scores[sid].metrics["clip_i"] is not None  # the other metrics go on


def test_an_entry_that_is_not_a_metric_is_refused_naming_it():
    registry: Registry[type[Metric]] = Registry("metric", base=Metric)
    registry.register("fake", "picbench.records:Sample")
    with pytest.raises(PicbenchError, match=r"metric 'fake' \(picbench.records:Sample\) is not a Metric subclass"):
        registry.get("fake")


@pytest.mark.slow
def test_plugin_metric_and_detector_from_a_distribution_run_and_regress(tmp_path: Path, data_dir: Path):
    env = {**os.environ, "PYTHONPATH": str(install_plugin(tmp_path / "plugin"))}
    bench = write_tiny_bench(tmp_path, data_dir, n=3)
    out = tmp_path / "run"
    cli = [sys.executable, "-c", "from picbench.cli import main; main()"]
    listed = subprocess.run([*cli, "ls", "metrics"], env=env, capture_output=True, text=True, timeout=120)
    assert "gray_fraction" in listed.stdout and "metrics-plugin" in listed.stdout
    done = subprocess.run(
        [
            *cli,
            "run",
            "--method",
            "paste",
            "--bench",
            str(bench),
            "--data-dir",
            str(data_dir),
            "--models",
            "tiny",
            "--detector",
            "blobs",
            "--metrics",
            "default,flaky",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = load_result(out)
    assert 0.0 < result.metrics["gray_fraction"] < 1.0 and result.higher_is_better["gray_fraction"] is False
    assert result.higher_is_better["clip_i"] is True and "gray_fraction" in result.intervals
    assert result.provenance["metric_engine"]["detector"]["detector"] == "blobs"
    scores = {s.sample_id: s for s, _ in iter_sample_scores(out)}
    assert all(s.detections for s in scores.values())  # the plug-in detector's boxes
    assert scores["s02"].metrics["iou"] > 0.9 and scores["s02"].metrics["present_once"] == 1.0  # a lone pasted dog is found exactly
    assert "metric flaky failed: RuntimeError: flaky metric exploded" in scores["s00"].failures

    # regress reads the direction: a rise of a lower-is-better metric is a regression, a fall is not
    for shift, expect in ((-0.2, 1), (+0.2, 0)):
        base = tmp_path / f"base{shift}"
        shutil.copytree(out, base, ignore=shutil.ignore_patterns("images", "store.sqlite*"))
        data = json.loads((base / "results.json").read_text())
        data["metrics"]["gray_fraction"] += shift
        (base / "results.json").write_text(json.dumps(data))
        checked = runner.invoke(app, ["regress", str(out), "--baseline", str(base), "--show-all"])
        assert checked.exit_code == expect, checked.output
        assert "lower" in checked.output


def test_hub_ids_of_the_metric_models_and_detectors_are_pinned():
    """Sources: DreamBooth's protocol (CLIP ViT-B/32 OpenAI, DINO ViT-S/16), the paper's detector (Vision-R1)."""
    from picbench.metrics.detectors import DETECTORS
    from picbench.metrics.weights import METRIC_MODELS, hub_id

    assert hub_id("clip") == "timm/vit_base_patch32_clip_224.openai"
    assert hub_id("dino") == "timm/vit_small_patch16_224.dino"
    assert hub_id("vlm_judge") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert {n: DETECTORS.get(n).hub_id for n in ("grounding-dino", "owlv2", "vision-r1")} == {
        "grounding-dino": "IDEA-Research/grounding-dino-base",
        "owlv2": "google/owlv2-base-patch16-ensemble",
        "vision-r1": "JefferyZhan/Qwen2.5-VL-7B-Instruct-Vision-R1",
    }
    assert METRIC_MODELS.group == "picbench.metric_models" and DETECTORS.group == "picbench.detectors"
    DETECTORS.register("not-a-detector", "metrics_plugin:GrayFraction")
    with pytest.raises(PicbenchError, match="is not a Detector subclass"):
        MetricEngine(models="tiny", metrics=["iou"], detector="not-a-detector")


def test_ls_metrics_shows_each_key_with_its_direction_and_survives_a_broken_plugin():
    from picbench.cli.ls import metric_keys

    assert metric_keys(METRICS, "presence") == "present_once ↑ missing ↓ duplicated ↓"
    assert metric_keys(METRICS, "ap") == "ap ↑ ap50 ↑ ap75 ↑"
    plugins: Registry[type[Metric]] = Registry("metric", base=Metric)  # not the global registry: default metrics stay as they are
    plugins.register("broken", "metrics_plugin:NoSuchMetric")
    plugins.register("gray_fraction", "metrics_plugin:GrayFraction")
    assert metric_keys(plugins, "broken").startswith("cannot load: AttributeError")
    assert metric_keys(plugins, "gray_fraction") == "gray_fraction ↓"


def test_a_broken_plugin_is_left_out_of_the_defaults_but_refused_by_name(monkeypatch, caplog):
    from picbench.metrics.selection import select_metrics

    plugins: Registry[type[Metric]] = Registry("metric", base=Metric)
    plugins.register("clip_i", "picbench.metrics.similarity:ClipI")
    plugins.register("broken", "metrics_plugin:NoSuchMetric")
    monkeypatch.setattr("picbench.metrics.selection.METRICS", plugins)
    with caplog.at_level("WARNING", logger="picbench.metrics.selection"):
        assert [m.name for m in select_metrics(None, None)] == ["clip_i"]
    assert "metric broken is left out" in caplog.text
    with pytest.raises(PicbenchError, match="metric 'broken' cannot be loaded: AttributeError"):
        select_metrics(["broken"], None)
