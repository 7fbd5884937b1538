"""What the eval-only install (`pip install -e .`) holds: every figure's dependency is core, and a
feature of an extra fails, when its package is missing, with a message naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from picbench.cli import app
from picbench.errors import MissingExtraError

REPO = Path(__file__).resolve().parents[1]


def _requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("=")[0].split("[")[0].strip().lower().replace("_", "-") for r in requirements}


def test_the_eval_only_install_has_both_coco_evaluators_and_datasets_is_an_extra() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = _requirement_names(project["dependencies"])
    assert {"pycocotools", "faster-coco-eval"} <= core  # AP and its bootstrap interval on the eval-only install
    assert "datasets" not in core and _requirement_names(project["optional-dependencies"]["hf"]) == {"datasets"}
    assert "hf" in project["optional-dependencies"]["all"][0]


def test_hf_export_without_datasets_names_the_extra(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on an install without the `hf` extra
    monkeypatch.delitem(sys.modules, "picbench.benches.hf", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'picbench\[hf\]'"):
        import picbench.benches.hf  # noqa: F401
    monkeypatch.delitem(sys.modules, "picbench.benches.hf", raising=False)
    result = CliRunner().invoke(
        app, ["bench", "export", "dreambench", "--format", "hf", "--out", str(tmp_path / "hf"), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 2 and "picbench[hf]" in result.output and "datasets" in result.output, result.output
    assert not (tmp_path / "hf").exists()
