"""A run's options as a TOML file: what ``picbench run --config FILE`` reads, and what every run
writes into its folder as ``run.toml`` (:data:`RUN_FILE`), so that ``picbench run --config
OUT/run.toml`` reruns it as is (everything it finished is in the store: nothing is redone).

The keys are the CLI's option names (``batch_size`` for ``--batch-size``), typed as TOML types
(``seeds = [0, 1]``, ``limit = 8``); the repeatable ``--param`` and ``--weights`` are the tables
``[param]`` and ``[weights]``, where a string value is read as the CLI reads ``KEY=VALUE`` (JSON
where it parses: ``steps = "2"`` is 2, ``fit = "contain"`` stays a string). Paths are read as the
options read them, against the current folder, so a written ``run.toml`` is rerun from the folder
the run was started in. Options given on the command line win over the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from picbench.atomic import atomic_write
from picbench.toml_config import load_toml

RUN_FILE = "run.toml"
"""The name of the file every run writes into its folder."""


@dataclass(frozen=True)
class RunFile:
    """The options a run file may set (None: not set, the CLI's default or flag applies)."""

    method: str | None = None
    bench: str | None = None
    out: str | None = None
    limit: int | None = None
    split: str | None = None
    samples: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    device: str | None = None
    models: Literal["default", "tiny"] | None = None
    shard: str | None = None
    data_dir: str | None = None
    detector: str | None = None
    protocols: tuple[str, ...] | None = None
    precision: str | None = None
    metrics: tuple[str, ...] | None = None
    param: Mapping[str, Any] | None = None
    weights: Mapping[str, Any] | None = None
    weights_dir: str | None = None
    batch_size: int | None = None
    retry_failed: bool | None = None
    allow_partial: bool | None = None


def read_run_file(path: str | Path) -> dict[str, Any]:
    """The options a run file sets, in the CLI's spellings (``seeds`` as "0,1", ``param`` as
    ["KEY=VALUE", ...]), so that they go through the same checks as the command line's."""
    values = load_toml(path, RunFile)
    options: dict[str, Any] = {}
    for f in fields(RunFile):
        value = getattr(values, f.name)
        if value is None:
            continue
        if f.name in ("samples", "seeds", "protocols", "metrics"):
            value = ",".join(str(v) for v in value)
        elif f.name in ("param", "weights"):
            value = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
        options[f.name] = value
    return options


def write_run_file(folder: str | Path, options: Mapping[str, Any]) -> Path:
    """Write ``options`` (the CLI's option names, TOML-typed values; None left out) as
    ``folder/run.toml``, atomically; the ``param`` and ``weights`` mappings become tables."""
    known = {f.name for f in fields(RunFile)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"not run-file options: {unknown}")
    lines = [
        f"# The options of this run: rerun it as is with `picbench run --config {RUN_FILE}` (paths as given, from the folder it ran in)."
    ]
    tables = []
    for name, value in options.items():
        if value is None:
            continue
        if name in ("param", "weights"):
            tables += ["", f"[{name}]", *(f"{_key(k)} = {_assignment_value(v)}" for k, v in value.items())]
        else:
            lines.append(f"{name} = {_toml(value)}")
    path = Path(folder) / RUN_FILE
    with atomic_write(path) as handle:
        handle.write("\n".join([*lines, *tables]) + "\n")
    return path


def _assignment_value(value: Any) -> str:
    """A ``--param``/``--weights`` value as TOML that reads back to it: native where it can be, else
    the JSON text the CLI would take (a string JSON would parse as something else, a null)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return _toml(value)
        return _toml(json.dumps(value))
    if _has_null(value):
        return _toml(json.dumps(value))
    return _toml(value)


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, Mapping):
        return any(_has_null(v) for v in value.values())
    return isinstance(value, (list, tuple)) and any(_has_null(v) for v in value)


def _toml(value: Any) -> str:
    """A TOML value: strings, numbers, booleans, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") if not math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # JSON's escapes are TOML's; DEL must be escaped
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{value!r} has no TOML form")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml(key)
