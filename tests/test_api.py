"""The Python front door: `import picbench` stays light, docs/python.md's examples run and equal
`picbench run`, results come back as DataFrames, and the functional metrics give the engine's
numbers for the same image (tiny random-weight models, real DreamBench images)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from run_bench_helpers import tiny_samples, write_tiny_bench
from typer.testing import CliRunner

import picbench
from picbench.cli import app
from picbench.errors import PicbenchError
from picbench.imaging import load_rgb
from picbench.metrics.boxes import match_subjects, to_pixels
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.engine import MetricEngine
from picbench.records import Sample, Subject

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "python.md"


def _stable(out: Path) -> dict:
    d = json.loads((out / "results.json").read_text())
    d["provenance"].pop("created"), d["provenance"].pop("git")
    return d


def test_import_picbench_imports_no_torch_and_no_pandas() -> None:
    code = "import sys, picbench; print(sorted(m for m in ('torch', 'pandas', 'transformers', 'PIL') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
    assert set(picbench.__all__) == {"__version__", *picbench._LAZY}
    with pytest.raises(AttributeError, match="no attribute 'evaluat'"):
        picbench.evaluat  # noqa: B018


def test_the_python_page_runs_and_equals_the_cli(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/python.md, in order, in one namespace (as a reader would run
    them), then the CLI command the page names: the same results.json (but for time and checkout)
    and the same samples.jsonl."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PICBENCH_DATA_DIR", str(data_dir))
    namespace: dict = {}
    for k, block in enumerate(blocks):
        exec(compile(block, f"{DOCS}:block{k}", "exec"), namespace)
    run = namespace["run"]
    assert run.folder == Path("runs/paste__dreambench") and run.result.counts["items"] == 3
    command = re.search(r"```bash\n(picbench run [^\n]*)\n```", DOCS.read_text())
    assert command is not None
    args = command.group(1).split()[1:]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert _stable(tmp_path / "cli") == _stable(run.folder)
    assert (tmp_path / "cli" / "samples.jsonl").read_text() == (run.folder / "samples.jsonl").read_text()
    per_sample = namespace["per_sample"]
    for name, key in (("clip_i", "clip_i"), ("dino", "dino"), ("clip_t", "clip_t")):  # the page's functional calls
        image, refs, sample = namespace["image"], namespace["references"], namespace["sample"]
        value = getattr(picbench, name)(image, sample.prompt if name == "clip_t" else refs, models="tiny")
        assert value == per_sample[key][0], name


def test_evaluate_returns_what_results_json_holds_with_frames(tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=4)
    run = picbench.evaluate(
        "paste", bench, out=tmp_path / "run", data_dir=data_dir, models="tiny", detector=None, metrics=["clip_i", "dino"], seeds=(0, 1)
    )
    assert run.result.to_dict() == json.loads((tmp_path / "run" / "results.json").read_text())
    assert picbench.load_results(tmp_path / "run" / "results.json") == run
    table = run.results_frame()
    assert list(table.columns) == ["value", "ci_low", "ci_high", "higher_is_better"]
    assert table.loc["clip_i", "value"] == run.result.metrics["clip_i"]
    assert (table.loc["clip_i", "ci_low"], table.loc["clip_i", "ci_high"]) == run.result.intervals["clip_i"]
    assert set(table.index) == set(run.result.metrics)
    frame = run.samples_frame()
    assert len(frame) == 8 and sorted(set(frame.seed)) == [0, 1]
    lines = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert list(frame.clip_i) == [line["metrics"]["clip_i"] for line in lines]
    assert list(frame.image) == [line["image"] for line in lines]
    first = _stable(run.folder)
    again = picbench.evaluate(
        "paste", bench, out=tmp_path / "run", data_dir=data_dir, models="tiny", detector=None, metrics=["clip_i", "dino"], seeds=(0, 1)
    )
    assert _stable(again.folder) == first and again.result.metrics == run.result.metrics  # resumed: the same result
    with pytest.raises(PicbenchError, match=r"unknown option\(s\) \['seed'\]"):
        picbench.evaluate("paste", bench, out=tmp_path / "bad", seed=3)
    with pytest.raises(PicbenchError, match="unknown method"):
        picbench.evaluate("nope", bench, out=tmp_path / "bad", data_dir=data_dir, models="tiny")


def test_functional_metrics_equal_the_engine(data_dir: Path) -> None:
    """One multi-reference subject scored by the engine (as a run scores it, the image given in
    memory) and by the functional twins: the same numbers, to the last bit."""
    dog = "dreambench/dataset/dog"
    subject = Subject("dog", "dog", (f"{dog}/01.jpg",), eval_images=(f"{dog}/01.jpg", f"{dog}/02.jpg", f"{dog}/03.jpg"))
    sample = Sample("one", "a dog on a beach", 96, 96, "single", (subject,))
    image = load_rgb(data_dir / f"{dog}/00.jpg").resize((96, 96), Image.Resampling.BICUBIC)
    engine = MetricEngine(models="tiny", metrics=["clip_i", "dino", "clip_t"], detector=None, batch_size=4)
    [score] = engine.score([ScoreItem(sample, 0, None, image=image)], data_dir)
    references = [data_dir / p for p in subject.eval_images]
    assert picbench.clip_i(image, references, models="tiny") == score.metrics["clip_i"]
    assert picbench.dino(image, [Image.open(p) for p in references], models="tiny") == score.metrics["dino"]  # PIL references too
    assert picbench.clip_t(image, sample.prompt, models="tiny") == score.metrics["clip_t"]
    with pytest.raises(PicbenchError, match="non-empty list"):
        picbench.clip_i(image, [], models="tiny")
    with pytest.raises(Exception, match="blank"):
        picbench.clip_i(Image.new("RGB", (32, 32)), references, models="tiny")


def test_functional_iou_is_the_engines_matched_iou(data_dir: Path) -> None:
    """The engine's IoU of a subject is match_subjects' IoU with its matched detection; `iou`
    of the same pixel boxes gives it; bad boxes are refused by name."""
    sample = tiny_samples(2)[1]
    w, h = sample.width, sample.height
    targets = [to_pixels(s.box, w, h) for s in sample.subjects]
    detections = [(3.0, 5.0, 40.0, 47.0), (30.0, 16.0, 60.0, 62.0)]
    matches = match_subjects(targets, [s.class_word for s in sample.subjects], detections, [s.class_word for s in sample.subjects])
    assert picbench.iou(targets, detections) == [m[1] for m in matches]
    assert picbench.iou(targets[0], detections[0]) == matches[0][1]
    assert picbench.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    with pytest.raises(PicbenchError, match=r"boxes_b\[0\]: box \[5, 5, 1, 1\] is inverted"):
        picbench.iou([[0, 0, 10, 10]], [[5, 5, 1, 1]])
    with pytest.raises(PicbenchError, match="1 boxes against 2"):
        picbench.iou([[0, 0, 10, 10]], detections)
