"""Publish a built tiny-model folder atomically, so a crash or a concurrent builder never leaves a
half-written folder where loaders look: a folder that exists is complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from picbench.atomic import current_umask


def publish_folder(folder: str | Path, build: Callable[[Path], object]) -> Path:
    """``folder`` if it exists; else ``build`` fills a staging folder beside it, which is then
    renamed into place (if another process published first, its folder is kept)."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700; a shared cache must stay readable
    try:
        build(staging)
        os.replace(staging, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
