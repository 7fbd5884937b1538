"""Packaging: a regular and an editable install both import ``picbench.adapters`` and
``picbench.reference_impl``, and neither installs a top-level ``adapters`` or ``reference_impl``
(``adapters`` is a popular PyPI name). Builds run on a copy of the tree so the shared checkout's
build/ and egg-info are never touched."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, sys\n"
    "import picbench.adapters, picbench.reference_impl\n"
    "print(picbench.adapters.__path__[0]); print(picbench.reference_impl.__path__[0])\n"
    "print(importlib.util.find_spec('adapters') is None and importlib.util.find_spec('reference_impl') is None)\n"
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("install") / "src"
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ci", "tests", "benchmarks", "leaderboards"
    )
    shutil.copytree(REPO, src, ignore=ignore, symlinks=True)
    return src


def _pip(python: str, *args: str, cwd: Path) -> None:
    out = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _probe(python: str, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([python, "-c", PROBE], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_regular_install(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    _pip(sys.executable, "--target", str(target), str(source), cwd=tmp_path)
    assert (target / "picbench" / "adapters" / "__init__.py").is_file()
    assert (target / "picbench" / "reference_impl" / "__init__.py").is_file()
    assert not (target / "adapters").exists() and not (target / "reference_impl").exists()
    adapters, reference_impl, no_top_level = _probe(sys.executable, tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert Path(adapters) == target / "picbench" / "adapters"
    assert Path(reference_impl) == target / "picbench" / "reference_impl"
    assert no_top_level == "True"


def nested_venv(folder: Path) -> str:
    """A fresh venv that sees this interpreter's packages (pip, setuptools, wheel for the build).
    ``venv --system-site-packages`` would not do: run from inside a venv, it links the *base*
    interpreter's site-packages, where the build tools may be missing (``invalid command
    'bdist_wheel'``); a .pth line per site directory of this interpreter links the right ones."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = str(folder / "bin" / "python")
    nested_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(nested_site) / "_outer_site.pth").write_text("".join(f"{p}\n" for p in ours if Path(p).is_dir()))
    return python


def test_nested_venv_builds_with_this_interpreters_tools(tmp_path: Path) -> None:
    python = nested_venv(tmp_path / "venv")
    probe = "import setuptools, wheel, sys; print(setuptools.__file__); print(wheel.__file__); print(sys.prefix)"
    setuptools_file, wheel_file, prefix = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    import setuptools
    import wheel

    assert (setuptools_file, wheel_file) == (setuptools.__file__, wheel.__file__)  # the active venv's, not the base's
    assert Path(prefix) == tmp_path / "venv"


def test_editable_install(source: Path, tmp_path: Path) -> None:
    python = nested_venv(tmp_path / "venv")
    _pip(python, "-e", str(source), cwd=tmp_path)
    adapters, reference_impl, no_top_level = _probe(python, tmp_path)
    assert Path(adapters) == source / "adapters"
    assert Path(reference_impl) == source / "reference_impl"
    assert no_top_level == "True"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A subpackage missing from the explicit `packages` list would vanish from a regular install
    while still importing from a checkout."""
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder_of = {name: REPO / path for name, path in setup["package-dir"].items()}
    found = set()
    for name, folder in folder_of.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            dotted = ".".join((name, *rel.parts)) if rel.parts else name
            if not any(other != name and dotted.startswith(other) and folder_of[other] == init.parent for other in folder_of):
                found.add(dotted)
    assert found == set(setup["packages"])


def test_dependencies_have_floors_and_no_upper_caps() -> None:
    """An upper cap would make pip downgrade a user's newer torch; a floor is the oldest release
    with the APIs the code uses (pyproject states why on each line)."""
    import re

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra if not r.startswith("picbench")),
    ]
    for requirement in requirements:
        specifier, _, marker = requirement.partition(";")  # a marker says where, not which release
        assert ">=" in specifier and not re.search(r"<|==|~=", specifier), requirement
        assert marker.strip() in ("", "python_version < '3.11'"), requirement  # only the Python floor's tomli has one
    floors = {re.split(r"[>=<]", r)[0].lower(): r.split(">=")[1] for r in requirements}
    assert floors["torch"] == "2.6" and floors["diffusers"] == "0.40" and floors["transformers"] == "4.56"
