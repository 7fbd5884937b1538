"""Attention backends and buildable benches are plug-ins like methods: a separately installed
distribution (a dist-info folder on the path) declares them in an entry-point group, and picbench
uses them by name with no edit; an entry of the wrong type is refused naming its target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from run_bench_helpers import write_tiny_bench

from picbench.reference_impl.attention import ATTENTION_BACKENDS, FlexAttention, LowRankSdpaAttention, SdpaAttention

PLUGIN = '''
import os

from picbench.benches.jsonl import write_bench_jsonl
from picbench.records import Bench, Sample, Subject
from picbench.reference_impl.attention import SdpaAttention


class CountingAttention(SdpaAttention):
    """Dense SDPA that notes every call in $COUNTING_ATTENTION_LOG."""

    name = "counting"

    def __call__(self, q, k, v, prepared):
        with open(os.environ["COUNTING_ATTENTION_LOG"], "a") as log:
            log.write(f"{tuple(q.shape)} {prepared is not None}\\n")
        return super().__call__(q, k, v, prepared)


class NotABackend:
    pass


def build_one_dog(data_root, out, seed):
    dog = Subject("dog", "dog", ("dreambench/dataset/dog/00.jpg",), box=(0.1, 0.1, 0.1 + 0.1 * (seed + 1), 0.9), depth=0)
    bench = Bench("one-dog", "1", (Sample("dog-0", "a dog", 64, 64, "single", (dog,)),), data_root, description="plug-in", reconstruction=True)
    write_bench_jsonl(bench, out)
    return bench


NOT_A_BUILDER = 42
'''
ENTRY_POINTS = """[picbench.attention_backends]
counting = seam_plugin:CountingAttention
notabackend = seam_plugin:NotABackend

[picbench.buildable_benches]
one-dog = seam_plugin:build_one_dog
broken = seam_plugin:NOT_A_BUILDER
"""


@pytest.fixture()
def plugin_env(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "plugin"
    dist = folder / "seam_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (folder / "seam_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: seam-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
        "PICBENCH_HOME": str(tmp_path / "home"),
        "COUNTING_ATTENTION_LOG": str(tmp_path / "attention.log"),
        "COLUMNS": "200",
    }


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _picbench(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return _python(f"import sys; sys.argv = ['picbench', *{args!r}]; from picbench.cli import main; main()", env)


def test_built_in_backends_are_registered_by_name() -> None:
    assert {name: ATTENTION_BACKENDS.get(name) for name in ("sdpa", "sdpa_lowrank", "flex")} == {
        "sdpa": SdpaAttention,
        "sdpa_lowrank": LowRankSdpaAttention,
        "flex": FlexAttention,
    }


def test_plugin_backends_resolve_and_a_wrong_type_is_refused(plugin_env: dict[str, str]) -> None:
    code = textwrap.dedent("""
        from picbench.errors import PicbenchError
        from picbench.reference_impl.attention import ATTENTION_BACKENDS, get_backend
        backend = get_backend("counting", "cpu")
        print(type(backend).__name__, ATTENTION_BACKENDS.summary("counting"))
        try:
            get_backend("notabackend", "cpu")
        except PicbenchError as exc:
            print(exc)
    """)
    done = _python(code, plugin_env)
    assert done.returncode == 0, done.stderr
    first, refused = done.stdout.strip().splitlines()
    assert first == "CountingAttention plugin from seam-plugin"
    assert refused == "attention backend 'notabackend' (seam_plugin:NotABackend) is not a MaskedAttention subclass"


def test_an_unknown_backend_is_refused_when_the_method_is_built() -> None:
    from picbench.adapters.positionic import PositionICMethod

    with pytest.raises(ValueError, match=r"parameter 'attention_backend': unknown attention backend 'flexx'; did you mean 'flex'\?"):
        PositionICMethod(models="tiny", params={"attention_backend": "flexx"})
    assert PositionICMethod(models="tiny", params={"attention_backend": "sdpa"}).params["attention_backend"] == "sdpa"


@pytest.mark.slow
def test_run_uses_a_plugin_attention_backend(plugin_env: dict[str, str], tmp_path: Path, data_dir: Path) -> None:
    bench = write_tiny_bench(tmp_path, data_dir, n=1)
    out = tmp_path / "run"
    done = _picbench(
        [
            "run",
            "--method",
            "positionic",
            "--bench",
            str(bench),
            "--data-dir",
            str(data_dir),
            "--models",
            "tiny",
            "--detector",
            "none",
            "--out",
            str(out),
            "--param",
            "attention_backend=counting",
            "--param",
            "steps=1",
            "--param",
            "ref_long_side=32",
        ],
        plugin_env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    calls = (tmp_path / "attention.log").read_text().splitlines()
    assert calls and all(line.endswith("True") for line in calls)  # every joint attention went through it, with the VAA plan
    assert json.loads((out / "results.json").read_text())["method_params"]["attention_backend"] == "counting"


@pytest.mark.slow
def test_bench_build_uses_a_plugin_builder(plugin_env: dict[str, str], tmp_path: Path, data_dir: Path) -> None:
    listed = _picbench(["ls", "benches"], plugin_env)
    assert listed.returncode == 0 and "one-dog" in listed.stdout and "not built: picbench bench build one-dog" in listed.stdout
    built = _picbench(["bench", "build", "one-dog", "--seed", "2", "--data-dir", str(data_dir)], plugin_env)
    assert built.returncode == 0, built.stderr
    assert "built one-dog v1 (seed 2): 1 single + 0 multi samples" in " ".join(built.stdout.split())
    checked = _picbench(["validate", "one-dog", "--data-dir", str(data_dir)], plugin_env)
    assert checked.returncode == 0 and "OK one-dog: 1 samples" in checked.stdout, checked.stdout + checked.stderr
    broken = _picbench(["bench", "build", "broken", "--data-dir", str(data_dir)], plugin_env)
    assert broken.returncode == 2 and "buildable bench 'broken' (seam_plugin:NOT_A_BUILDER) is not a BenchBuilder" in " ".join(
        broken.stderr.split()
    )
