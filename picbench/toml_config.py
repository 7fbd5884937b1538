"""One typed TOML loader for every config file picbench reads (``picbench train``'s, ``picbench
data build bmpds``'s and ``picbench run --config``'s): a file becomes a frozen dataclass whose type
hints say what each key holds. A nested dataclass is a table, a tuple of dataclasses an array of
tables (``[[stages]]``); unknown keys, values of the wrong type, non-finite numbers and missing
required keys are refused with a :class:`~picbench.errors.ConfigError` naming the file, the table
and the key (``FILE, field 'stages[1].lr': stages[1].lr must be float, got 'x'``), before anything is built. Range checks
stay with each config, which raises the same error.

Python 3.10 has no ``tomllib``; ``tomli``, the package it was taken from, parses the same
(a dependency there only, ``tests/test_python_floor.py``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from picbench.errors import ConfigError

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file's tables; a missing, unreadable or malformed file is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such config file", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from None


def load_toml(path: str | Path, cls: type[T], **given: Any) -> T:
    """``cls`` built from the file at ``path``; ``given`` fields come from the caller, not the file."""
    return build(cls, read_toml(path), Path(path), "", **given)


def build(cls: type[T], table: Any, file: Path, where: str, **given: Any) -> T:
    """``cls`` from one table (``where`` names it in errors: "" for the top of the file)."""
    if not isinstance(table, dict):
        raise ConfigError(f"must be a table, got {table!r}", file=file, field=where or None)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            raise ConfigError(f"is unknown (known: {', '.join(sorted(fields))})", file=file, field=_join(where, key))
    missing = [
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in table
    ]
    if missing:
        raise ConfigError(f"lacks required key(s) {missing}", file=file, field=where or None)
    return cls(**{k: coerce(v, hints[k], file, _join(where, k)) for k, v in table.items()}, **given)


def coerce(value: Any, hint: Any, file: Path, key: str) -> Any:
    """``value`` checked against the type hint (TOML gives ints for floats, lists for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, file, key)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):  # `X | None`: TOML has no null, so the value is an X
        (hint,) = [a for a in args if a is not type(None)]
        return coerce(value, hint, file, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"must be one of {list(args)}, got {value!r}", file=file, field=key)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"must be a list, got {value!r}", file=file, field=key)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"must have {len(items)} entries, got {value!r}", file=file, field=key)
        return tuple(coerce(v, h, file, f"{key}[{i}]") for i, (v, h) in enumerate(zip(value, items)))
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"must be a table, got {value!r}", file=file, field=key)
        return {k: coerce(v, args[1], file, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", file=file, field=key)
    if hint in (int, float, str, bool) and type(value) is not hint:
        raise ConfigError(f"must be {hint.__name__}, got {value!r}", file=file, field=key)
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
