"""Shared fixtures: the real data root (skipped, with the reason, only where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    env = os.environ.get("PICBENCH_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand.resolve()
    return None


_FOUND = _data_dir()
if _FOUND is not None:  # picbench's own default is $PICBENCH_HOME/data, which tests isolate per session
    os.environ["PICBENCH_DATA_DIR"] = str(_FOUND)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("real data not found: set PICBENCH_DATA_DIR or place shared/data beside the repository")
    return d


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the user's ~/.cache/picbench from tests."""
    monkeypatch.setenv("PICBENCH_HOME", str(tmp_path_factory.getbasetemp() / "picbench_home"))
