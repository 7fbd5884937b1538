"""The layer rules of docs/contributing.md ("Layers"), enforced over every picbench module.

An AST walk rather than import-linter: setuptools' ``package-dir`` maps ``adapters/`` and
``reference_impl/`` into the ``picbench`` namespace, and import-linter's graph builder (grimp)
walks the root package's folder, so it never sees those modules (and refuses ``picbench.adapters``
as a root of its own). Here every file of every mapping in pyproject.toml is read under its
module name, and every import counts: top level, inside functions (the lazy imports of the CLI
and of optional dependencies) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = "picbench"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("command line", ("picbench.cli",)),
    ("package root", (ROOT,)),
    ("Python front door", ("picbench.api", "picbench.functional")),
    (
        "applications",
        (
            "picbench.runner",
            "picbench.report",
            "picbench.regress",
            "picbench.downloads",
            "picbench.data",
            "picbench.testing",
            "picbench.reference_impl.training",
            "picbench.reference_impl.bmpds",
        ),
    ),
    ("products on the seams", ("picbench.adapters.*", "picbench.pairs", "picbench.leaderboard")),
    ("seams", ("picbench.methods", "picbench.metrics", "picbench.store", "picbench.results", "picbench.validate")),
    ("protocols", ("picbench.protocols",)),
    ("benches and the reference model", ("picbench.benches", "picbench.reference_impl")),
    (
        "building blocks",
        (
            "picbench.registry",
            "picbench.imaging",
            "picbench.html",
            "picbench.layouts",
            "picbench.tiny",
            "picbench.coverage",
            "picbench.selection",
            "picbench.checkpoints",
            "picbench.environment",
            "picbench.locks",
            "picbench.trainlog",
            "picbench.database",
            "picbench.run_file",
        ),
    ),
    ("records", ("picbench.records",)),
    (
        "basics",
        ("picbench.paths", "picbench.limits", "picbench.problems", "picbench.atomic", "picbench.interrupts", "picbench.toml_config"),
    ),
    ("errors", ("picbench.errors",)),
)
"""Top to bottom. A module belongs to the longest name here that is it or a package above it
(``picbench.reference_impl.training`` before ``picbench.reference_impl``; the root only by
itself); ``P.*`` makes each module or package directly in ``P`` a unit of its own. A unit may
import itself and anything in a lower layer, nothing in its own layer (siblings stay independent)
or above."""

EXCEPTIONS: Mapping[tuple[str, str], str] = {
    ("picbench.adapters.uno", "picbench.adapters.positionic"): (
        "UNO is the PositionIC pipeline with UNO's LoRA and VAA off: its Method subclasses PositionIC's"
    ),
}
"""(importer, imported) pairs allowed across the rules, each with its reason."""

ROOT_NAMES = {"__version__"}
"""What ``from picbench import ...`` may take from the root at any layer: the root defines it at
import time and loads nothing else then (its front door names load on first use, PEP 562)."""


@dataclass(frozen=True)
class Unit:
    name: str
    layer: int


def unit_of(module: str) -> Unit | None:
    """The unit (and its layer's index, 0 at the top) a module belongs to; None when no layer names it."""
    best: tuple[int, Unit] | None = None
    for layer, (_, names) in enumerate(LAYERS):
        for name in names:
            if name.endswith(".*"):
                package = name[:-2]
                if module != package and not module.startswith(package + "."):
                    continue
                unit = Unit(".".join(module.split(".")[: package.count(".") + 2]), layer)
                length = len(package) + 1
            elif module == name or (name != ROOT and module.startswith(name + ".")):
                unit, length = Unit(name, layer), len(name)
            else:
                continue
            if best is None or length > best[0]:
                best = (length, unit)
    return best[1] if best else None


def package_dirs() -> dict[str, Path]:
    """Module prefix -> folder, as pyproject.toml's ``[tool.setuptools] package-dir`` maps them."""
    import tomllib

    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {package: REPO / folder for package, folder in mapping.items()}


def discover(dirs: Mapping[str, Path]) -> dict[str, Path]:
    """Every module of the mapped folders, by module name (a package by its ``__init__.py``)."""
    modules: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    path: Path
    line: int
    statement: str


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imports_of(module: str, path: Path, known: Iterable[str]) -> list[Import]:
    """Every import of a picbench module in ``path``, wherever it sits in the file. ``from P import
    N`` imports ``P.N`` when that is a module, else ``P``."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(_parsed(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            names = [alias.name for alias in node.names]
            if base == ROOT and set(names) <= ROOT_NAMES:
                continue
            targets = [f"{base}.{n}" if f"{base}.{n}" in known else base for n in names]
        else:
            continue
        statement = ast.unparse(node)
        for target in dict.fromkeys(targets):
            if target == ROOT or target.startswith(ROOT + "."):
                found.append(Import(module, target, path, node.lineno, statement))
    return found


def violations(modules: Mapping[str, Path]) -> list[str]:
    """Every import that breaks the rules, and every module no layer names, one line each."""
    problems = [
        f"{module} ({path}) is in no layer: add it to LAYERS in tests/test_layers.py and docs/contributing.md"
        for module, path in modules.items()
        if unit_of(module) is None
    ]
    for module, path in modules.items():
        source = unit_of(module)
        for imp in imports_of(module, path, modules):
            target = unit_of(imp.target)
            if source is None or (imp.source, imp.target) in EXCEPTIONS:
                continue
            where = (
                f"{imp.path.relative_to(REPO) if imp.path.is_relative_to(REPO) else imp.path}:{imp.line}: {imp.source}: `{imp.statement}`"
            )
            if target is None and imp.target in modules:
                continue  # the module itself is reported as in no layer
            if target is None:
                problems.append(f"{where} imports {imp.target}, which is in no layer")
            elif target.name == source.name or target.layer > source.layer:
                continue
            elif target.layer == source.layer:
                problems.append(
                    f"{where} imports {imp.target}: {source.name} and {target.name} are siblings in layer '{LAYERS[source.layer][0]}'"
                )
            else:
                problems.append(
                    f"{where} imports {imp.target}: layer '{LAYERS[source.layer][0]}' is below layer '{LAYERS[target.layer][0]}'"
                )
    return problems


def test_the_tree_keeps_its_layers() -> None:
    modules = discover(package_dirs())
    assert {"picbench.adapters.gligen", "picbench.reference_impl.training.loop", "picbench.cli.run"} <= set(
        modules
    )  # the mapped folders are read
    assert violations(modules) == []


def test_every_listed_name_is_a_module_of_the_tree() -> None:
    """A layer entry whose module is gone (moved, renamed) goes too, in LAYERS and in the docs."""
    modules = discover(package_dirs())
    assert [name for _, names in LAYERS for name in names if name.removesuffix(".*") not in modules] == []


def test_every_exception_is_still_an_import_of_the_tree() -> None:
    """An exception nobody needs any more is a hole in the rules: it goes."""
    modules = discover(package_dirs())
    used = {(imp.source, imp.target) for module, path in modules.items() for imp in imports_of(module, path, modules)}
    assert set(EXCEPTIONS) <= used


FORBIDDEN = [
    pytest.param(
        "picbench.records",
        "def late() -> None:\n    from picbench.cli.run import run\n",
        "picbench.cli.run",
        "is below",
        id="records-imports-cli-lazily",
    ),
    pytest.param(
        "picbench.tiny",
        "import picbench.metrics.detectors.vision_r1\n",
        "picbench.metrics.detectors.vision_r1",
        "is below",
        id="tiny-imports-a-detector",
    ),
    pytest.param(
        "picbench.methods",
        "from picbench.metrics.weights import MetricModel\n",
        "picbench.metrics.weights",
        "siblings",
        id="methods-imports-metrics",
    ),
    pytest.param(
        "picbench.adapters",
        "from picbench.adapters.gligen import GligenMethod\n",
        "picbench.adapters.gligen",
        "siblings",
        id="adapter-imports-adapter",
    ),
    pytest.param(
        "picbench.pairs", "from picbench.report import build_report\n", "picbench.report", "is below", id="pairs-imports-the-run-report"
    ),
    pytest.param(
        "picbench.reference_impl",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from picbench.reference_impl.training import loop\n",
        "picbench.reference_impl.training",
        "is below",
        id="reference-model-imports-training-for-types",
    ),
    pytest.param(
        "picbench.errors", "from picbench import evaluate\n", "picbench", "is below", id="errors-reaches-the-front-door-through-the-root"
    ),
]


@pytest.mark.parametrize(("package", "source", "target", "why"), FORBIDDEN)
def test_a_forbidden_import_fails_naming_it(tmp_path: Path, package: str, source: str, target: str, why: str) -> None:
    """A temporary module placed in a layer (outside the tree) with one forbidden import: the rules
    name that import (file, line, statement), and the tree's own modules still pass."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    modules = {**discover(package_dirs()), f"{package}.probe": probe}
    found = violations(modules)
    line = source.count("\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{probe}:{line}: {package}.probe: `")
    assert f"`{source.splitlines()[-1].strip()}` imports {target}" in found[0] and why in found[0]


def test_a_module_in_no_layer_fails_naming_it(tmp_path: Path) -> None:
    """New code is placed on purpose: a top-level module no layer names fails until it is given one."""
    probe = tmp_path / "probe.py"
    probe.write_text("from picbench.errors import PicbenchError\n")
    found = violations({**discover(package_dirs()), "picbench.newcomer": probe})
    assert found == [f"picbench.newcomer ({probe}) is in no layer: add it to LAYERS in tests/test_layers.py and docs/contributing.md"]


def test_allowed_imports_pass(tmp_path: Path) -> None:
    """Downward, within a unit, the root's ``__version__``, and the listed exception: no complaint."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from picbench import __version__\nfrom picbench.records import Sample\nfrom picbench.metrics.detectors import base\n"
        "from . import engine\nfrom .detectors.vision_r1 import PROMPT\n"
    )
    assert violations({**discover(package_dirs()), "picbench.metrics.probe": probe}) == []


def test_contributing_page_lists_the_enforced_layers() -> None:
    """docs/contributing.md's numbered layer list names the same units, layer by layer, as LAYERS."""
    text = (REPO / "docs" / "contributing.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    numbered = re.findall(r"^\d+\. \*\*[^*]+\*\* \(([^)]*)\)", section, flags=re.MULTILINE)
    listed = [tuple(re.findall(r"`([^`]+)`", names)) for names in numbered]
    assert listed == [names for _, names in LAYERS]
    assert all(f"`{a}` -> `{b}`" in section for a, b in EXCEPTIONS)
