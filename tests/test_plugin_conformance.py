"""The conformance suites run on a plug-in from a separately installed distribution, the way its
author would run them: a distribution (a package and its ``*.dist-info`` with ``entry_points.txt``)
on the path of a fresh Python, and a test file of the author's that parametrizes the suites over
the distribution's own entry points with ``picbench.testing.parametrize``. A well-formed plug-in
(a metric, a method, a detector, an attention backend, a bench loader and a bench builder) passes; a broken one
fails, each failure naming the plug-in's entry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD = '''
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from picbench.benches.jsonl import write_bench_jsonl
from picbench.methods.paste import PasteMethod
from picbench.metrics.base import Metric
from picbench.metrics.detectors.base import Detection, Detector, DetectorOutput
from picbench.records import Bench, Sample, Subject
from picbench.reference_impl.attention import SdpaAttention


class GrayShare(Metric):
    """Share of the paste method's gray background: lower is better."""

    name = "gray_share"
    summary = "share of background-gray pixels"
    needs = frozenset({"image"})
    higher_is_better = False

    def item(self, features, subjects):
        return {self.name: float(np.all(np.asarray(features.image) == 127, axis=-1).mean())}


class MirrorPaste(PasteMethod):
    """The paste method, mirrored left to right."""

    name = "mirror_paste"

    def generate(self, samples, seed, data_root):
        return [ImageOps.mirror(image) for image in super().generate(samples, seed, data_root)]


class WholeImage(Detector):
    """Finds every asked class across the whole image."""

    name = "whole_image"
    hub_id = None

    def __init__(self, folder, device="cpu"):
        self.model_id = "whole_image@1"

    def detect(self, image, classes):
        box = (0.0, 0.0, float(image.width), float(image.height))
        return DetectorOutput(tuple(Detection(box, c, 0.5) for c in dict.fromkeys(classes)))

    def provenance(self):
        return {"detector": self.name, "model_id": self.model_id}


class PlainSdpa(SdpaAttention):
    name = "plain_sdpa"


def load_one_dog(data_root, seed=0):
    dog = Subject("dog", "dog", ("dreambench/dataset/dog/00.jpg",), box=(0.1, 0.1, 0.5 + 0.1 * seed, 0.9), depth=0)
    return Bench("one-dog", "1", (Sample("dog-0", "a dog", 64, 64, "single", (dog,)),), data_root, reconstruction=True)


def build_one_dog(data_root, out, seed):
    bench = load_one_dog(data_root, seed)
    write_bench_jsonl(bench, out)
    return bench
'''
GOOD_ENTRY_POINTS = """[picbench.metrics]
gray_share = conformance_good:GrayShare
[picbench.methods]
mirror_paste = conformance_good:MirrorPaste
[picbench.detectors]
whole_image = conformance_good:WholeImage
[picbench.attention_backends]
plain_sdpa = conformance_good:PlainSdpa
[picbench.benches]
one-dog-loader = conformance_good:load_one_dog
[picbench.buildable_benches]
one-dog = conformance_good:build_one_dog
"""
BROKEN = '''
from picbench.methods.paste import PasteMethod
from picbench.metrics.base import Metric


class Wobbly(Metric):
    """Raises on two-subject samples."""

    name = "wobbly"
    summary = "breaks on purpose"
    needs = frozenset({"image"})
    default = False

    def item(self, features, subjects):
        if len(features.sample.subjects) > 1:
            raise RuntimeError("two subjects are one too many")
        return {self.name: 1.0}


class ClaimsSeeds(PasteMethod):
    """Says it is seeded, but ignores the seed as paste does."""

    name = "claims_seeds"
    seeded = True
'''
BROKEN_ENTRY_POINTS = """[picbench.metrics]
wobbly = conformance_broken:Wobbly
[picbench.methods]
claims_seeds = conformance_broken:ClaimsSeeds
"""
# the plug-in author's own test file: no fixture from picbench's tests/, only picbench.testing
AUTHOR_TESTS = """
import os

from picbench.benches import BENCHES, BUILDABLE
from picbench.methods import METHODS
from picbench.metrics import METRICS
from picbench.metrics.detectors import DETECTORS
from picbench.reference_impl.attention import ATTENTION_BACKENDS
from picbench.testing import (
    check_attention_backend,
    check_bench,
    check_buildable_bench,
    check_detector,
    check_method,
    check_metric,
    parametrize,
    registered,
)

DIST = os.environ["PLUGIN_DISTRIBUTION"]
REGISTRIES = {"metric": METRICS, "method": METHODS, "detector": DETECTORS, "backend": ATTENTION_BACKENDS, "bench": BENCHES, "builder": BUILDABLE}


def test_the_registries_hold_the_plugin_beside_the_built_ins():
    for kind, registry in REGISTRIES.items():
        ours = registered(registry, DIST)
        assert set(ours) <= set(registry.names()), (kind, ours)
        print(kind, "plugin:", ",".join(ours), "registered:", ",".join(registry.names()))


@parametrize(METRICS, DIST)
def test_metric(name):
    check_metric(name)


@parametrize(METHODS, DIST)
def test_method(name):
    check_method(name)


@parametrize(DETECTORS, DIST)
def test_detector(name):
    check_detector(name)


@parametrize(ATTENTION_BACKENDS, DIST)
def test_attention_backend(name):
    check_attention_backend(name)


@parametrize(BENCHES, DIST)
def test_bench_loader(name):
    check_bench(name)


@parametrize(BUILDABLE, DIST)
def test_bench_builder(name):
    check_buildable_bench(name)
"""


def _install(folder: Path, module: str, distribution: str, source: str, entry_points: str) -> Path:
    """A distribution as pip would leave it: the module and its dist-info, in a folder of its own."""
    folder.mkdir(parents=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    dist = folder / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    return folder


def _run_author_tests(tmp_path: Path, plugin: Path, distribution: str) -> subprocess.CompletedProcess:
    author = tmp_path / "author"
    author.mkdir()
    (author / "test_my_plugin.py").write_text(textwrap.dedent(AUTHOR_TESTS))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]),
        "PLUGIN_DISTRIBUTION": distribution,
        "COLUMNS": "300",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-s", "-p", "no:cacheprovider", "--rootdir", str(author), str(author / "test_my_plugin.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=author,
        timeout=600,
    )


@pytest.mark.slow
def test_the_suites_run_on_every_entry_of_an_installed_plugin(tmp_path: Path, data_dir: Path) -> None:
    plugin = _install(tmp_path / "site", "conformance_good", "conformance-good", GOOD, GOOD_ENTRY_POINTS)
    done = _run_author_tests(tmp_path, plugin, "conformance-good")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for test in (
        "test_metric[gray_share]",
        "test_method[mirror_paste]",
        "test_detector[whole_image]",
        "test_attention_backend[plain_sdpa]",
        "test_bench_loader[one-dog-loader]",
        "test_bench_builder[one-dog]",
    ):
        assert f"{test} PASSED" in done.stdout, done.stdout[-4000:]
    listed = {kind: (plugin, names.split(",")) for kind, plugin, names in re.findall(r"(\w+) plugin: (\S*) registered: (\S+)", done.stdout)}
    built_in = {"metric": {"clip_i", "iou", "presence"}, "method": {"paste", "positionic", "uno"}}
    for kind, ours in (("metric", "gray_share"), ("method", "mirror_paste")):
        plugin, names = listed[kind]
        assert plugin == ours and built_in[kind] | {ours} <= set(names), (kind, listed[kind])


@pytest.mark.slow
def test_a_broken_plugin_fails_the_suites_naming_its_entries(tmp_path: Path, data_dir: Path) -> None:
    plugin = _install(tmp_path / "site", "conformance_broken", "conformance-broken", BROKEN, BROKEN_ENTRY_POINTS)
    done = _run_author_tests(tmp_path, plugin, "conformance-broken")
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    out = " ".join(done.stdout.split())
    assert "test_metric[wobbly] FAILED" in out and "test_method[claims_seeds] FAILED" in out
    assert (
        "AssertionError: metric 'wobbly' (conformance_broken:Wobbly): sample pair seed 0: "
        "metric wobbly failed: RuntimeError: two subjects are one too many" in out
    )
    assert (
        "AssertionError: method 'claims_seeds' (conformance_broken:ClaimsSeeds): seeds 0 and 1 give the same images, but seeded=True" in out
    )
