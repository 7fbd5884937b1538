"""The linter and formatter configured in pyproject.toml ([tool.ruff]) pass on the whole tree, so
the README's test command (and so CI) enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff")
    command = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"])
def test_ruff_passes_on_the_tree(args: tuple[str, ...]) -> None:
    result = _ruff(*args)
    assert result.returncode == 0, (
        f"ruff {' '.join(args)} found problems (run it to see or fix them):\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )
