"""Where data lives: the data root, safe resolution of bench-relative paths, picbench's home, and
the variable naming the weights folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from picbench.errors import PicbenchError, UnsafePathError

DATA_DIR_ENV = "PICBENCH_DATA_DIR"
HOME_ENV = "PICBENCH_HOME"
WEIGHTS_ENV = "PICBENCH_WEIGHTS_DIR"
"""The folder of model weights (methods' checkpoints and metric models) that runs read."""


def find_data_dir(explicit: str | Path | None = None, *, required: bool = True) -> Path | None:
    """The data root: an explicit option, else ``$PICBENCH_DATA_DIR``, else ``$PICBENCH_HOME/data``
    (where ``picbench data fetch`` puts it)."""
    if explicit is not None:
        source, path = "--data-dir", Path(explicit)
    elif os.environ.get(DATA_DIR_ENV):
        source, path = f"${DATA_DIR_ENV}", Path(os.environ[DATA_DIR_ENV])
    else:
        source, path = f"default: ${HOME_ENV}/data", default_data_dir()
    if path.is_dir():
        return path.resolve()
    if not required:
        return None
    raise PicbenchError(
        f"data directory {path} ({source}) does not exist; run `picbench data fetch all` to download it there, "
        f"or pass --data-dir DIR or set {DATA_DIR_ENV} to a folder holding dreambench/ and msbench/"
    )


def safe_file_stem(name: str, max_chars: int = 80) -> str:
    """A file name stem made from a sample id (or any name read from a file): every run of
    characters outside ``[A-Za-z0-9._-]`` becomes ``_``, so no separator, ``..`` part or control
    character survives (``..`` alone stays a plain name once a suffix follows it). The one rule for
    every file picbench names after an id (run images, training's evaluation images)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:max_chars] or "_"


def default_data_dir() -> Path:
    """Where ``picbench data fetch`` puts the data and where picbench looks for it by default."""
    return picbench_home() / "data"


def picbench_home() -> Path:
    """Per-user state (built benches, caches): ``$PICBENCH_HOME`` or ``~/.cache/picbench``."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "picbench")
    if home.exists() and not home.is_dir():
        raise PicbenchError(
            f"picbench's home {home} (${HOME_ENV} or ~/.cache/picbench) is a file, not a folder; point ${HOME_ENV} at a folder"
        )
    return home


def resolve_in_root(root: Path, relative: str) -> Path:
    """Resolve a bench-relative path, refusing absolute paths and any that escape ``root``:
    a bench file must never make picbench read arbitrary files. A path without ``..`` stays
    inside the root by its text, so symlinks the root's owner placed there are followed; a path
    with ``..`` must also stay inside once resolved."""
    if not relative or not isinstance(relative, str):
        raise UnsafePathError(f"empty or non-string path {relative!r}")
    if "\0" in relative:
        raise UnsafePathError(f"path {relative!r} holds a NUL character")
    if relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":") or os.path.isabs(relative):
        raise UnsafePathError(f"absolute path {relative!r} is not allowed; paths are relative to the data root")
    root = Path(root).resolve()
    parts = Path(relative).parts
    if ".." not in parts:
        return root.joinpath(*parts)
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(f"path {relative!r} escapes the data root {root}")
    return target


def resolve_contained(root: Path, relative: str) -> Path:
    """:func:`resolve_in_root`, then every symlink followed: the file must really lie inside
    ``root``. For paths read from files a run wrote (a results folder may come from anyone), where
    a symlink placed in the folder must not lead a reader out of it."""
    path = resolve_in_root(root, relative).resolve()
    real_root = Path(root).resolve()
    if path != real_root and real_root not in path.parents:
        raise UnsafePathError(f"path {relative!r} leads outside {real_root} (through a symlink)")
    return path
