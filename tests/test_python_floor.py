"""The Python floor is true: pyproject's `requires-python`, ruff's `target-version` and the tomli
fallback name the same release; only `picbench.toml_config` parses TOML in the package, and
reaches `tomllib` through that fallback; and where the floor's interpreter is installed, every
module byte-compiles with it and the shipped configs parse with it (tomli standing in for tomllib)."""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from picbench.toml_config import read_toml

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("picbench", "adapters", "reference_impl")
SKIPPED = ("tests/fixtures", "benchmarks/gpu_wheels")  # upstream files kept byte for byte, as ruff skips them
PROJECT = read_toml(REPO / "pyproject.toml")


def floor() -> tuple[int, int]:
    match = re.fullmatch(r">=\s*3\.(\d+)", PROJECT["project"]["requires-python"])
    assert match, PROJECT["project"]["requires-python"]
    return 3, int(match.group(1))


def floor_python() -> str | None:
    """The floor's interpreter: $PICBENCH_FLOOR_PYTHON, pythonX.Y on PATH, or a pyenv install."""
    major, minor = floor()
    found = [os.environ.get("PICBENCH_FLOOR_PYTHON"), shutil.which(f"python{major}.{minor}")]
    found += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{major}.{minor}.*/bin/python")))
    for candidate in filter(None, found):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == str((major, minor)):
            return candidate
    return None


def sources() -> list[Path]:
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"]  # tracked, and new files not yet added
    tracked = subprocess.run(listed, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / p for p in tracked if not p.startswith(SKIPPED)]


def test_requires_python_ruff_target_and_the_tomli_marker_agree() -> None:
    major, minor = floor()
    assert PROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    tomli = [r for r in PROJECT["project"]["dependencies"] if r.startswith("tomli")]
    if (major, minor) < (3, 11):  # tomllib came with 3.11: below it, tomli for exactly the releases without it
        assert len(tomli) == 1 and tomli[0].split(";")[1].strip() == "python_version < '3.11'", tomli
    else:
        assert tomli == []


def _imports(tree: ast.AST, name: str) -> list[ast.AST]:
    return [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(a.name == name for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.module == name)
    ]


def test_only_the_loader_imports_tomllib_and_it_falls_back_to_tomli() -> None:
    users = {}
    for path in sources():
        if path.relative_to(REPO).parts[0] in PACKAGE_DIRS:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if _imports(tree, "tomllib") or _imports(tree, "tomli"):
                users[str(path.relative_to(REPO))] = tree
    assert sorted(users) == ["picbench/toml_config.py"]
    guarded = [
        node
        for node in ast.walk(users["picbench/toml_config.py"])
        if isinstance(node, ast.Try)
        and _imports(ast.Module(body=node.body, type_ignores=[]), "tomllib")
        and any(
            isinstance(h.type, ast.Name)
            and h.type.id in ("ImportError", "ModuleNotFoundError")
            and any(isinstance(n, ast.Import) and n.names[0].name == "tomli" and n.names[0].asname == "tomllib" for n in h.body)
            for h in node.handlers
        )
    ]
    assert len(guarded) == 1, "import tomllib must sit in try/except ModuleNotFoundError: import tomli as tomllib"


def _floor_or_skip() -> str:
    python = floor_python()
    if python is None:
        pytest.skip(f"no Python {'.'.join(map(str, floor()))} interpreter here (set PICBENCH_FLOOR_PYTHON)")
    return python


def test_every_module_byte_compiles_with_the_floor_interpreter(tmp_path: Path) -> None:
    python = _floor_or_skip()
    files = [str(p) for p in sources()]
    assert len(files) > 100
    script = textwrap.dedent(
        """
        import json, py_compile, sys
        files, out = json.loads(sys.stdin.read()), sys.argv[1]
        bad = []
        for i, f in enumerate(files):
            try:
                py_compile.compile(f, cfile=f"{out}/{i}.pyc", doraise=True)
            except py_compile.PyCompileError as exc:
                bad.append(exc.msg)
        print(json.dumps(bad))
        """
    )
    done = subprocess.run([python, "-c", script, str(tmp_path)], input=json.dumps(files), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert len(list(tmp_path.glob("*.pyc"))) == len(files)  # every file was compiled, none skipped


def test_the_shipped_configs_load_with_the_floor_interpreter() -> None:
    """tomli stands in for tomllib: the same tables from every shipped config, and the typed loader
    builds BMPDS's smoke config (the torch-free one: torch is not installed for the floor here)."""
    python = _floor_or_skip()
    if subprocess.run([python, "-c", "import tomli"], capture_output=True).returncode != 0:
        pytest.skip(f"tomli is not installed for {python} (pip install tomli: picbench's dependency there)")
    configs = sorted(str(p) for p in (REPO / "reference_impl" / "configs").rglob("*.toml"))
    assert len(configs) == 4
    script = textwrap.dedent(
        """
        import json, sys, types
        from pathlib import Path
        repo = Path(sys.argv[1])
        # picbench.reference_impl is reference_impl/ (pyproject's package-dir); the packages' __init__
        # (which import torch, not installed for this interpreter) are skipped, the config modules are not
        for name, folder in (("reference_impl", "reference_impl"), ("reference_impl.bmpds", "reference_impl/bmpds")):
            sys.modules[f"picbench.{name}"] = types.ModuleType(f"picbench.{name}")
            sys.modules[f"picbench.{name}"].__path__ = [str(repo / folder)]
        from picbench.toml_config import read_toml
        from picbench.reference_impl.bmpds.config import load_config as bmpds
        loaded = {f: read_toml(f) for f in json.loads(sys.stdin.read())}
        # typed: BMPDS's smoke config (paper.toml asks for a CUDA device; the trainer's config module imports torch)
        kinds = {f: type(bmpds(f)).__name__ for f in loaded if f.endswith("bmpds/tiny.toml")}
        print(json.dumps({"tomllib": sys.modules["tomli"].__name__, "tables": loaded, "kinds": kinds}, default=str))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [python, "-c", script, str(REPO)], input=json.dumps(configs), capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    floor_read = json.loads(done.stdout)
    assert floor_read["tables"] == {f: json.loads(json.dumps(read_toml(f), default=str)) for f in configs}
    assert floor_read["tomllib"] == "tomli" and list(floor_read["kinds"].values()) == ["BmpdsConfig"]
    assert sys.version_info >= floor()
