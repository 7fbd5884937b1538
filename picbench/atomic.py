"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the whole new
one, never half. Every file picbench writes for keeps goes through :func:`atomic_write`.

A temporary file is named ``.<name>.<host>-<pid>.<random>.tmp`` so that :func:`remove_stale_tmp`
can tell one left by a killed writer (its process is gone) from one being written right now.
Files get the permissions the umask gives any new file (``mkstemp`` alone makes them 0600,
which breaks caches shared between users).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_HOST = re.sub(r"[^A-Za-z0-9_]+", "_", socket.gethostname())[:40] or "host"
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (reading it means setting it; a lock keeps threads from racing)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a handle on a temporary file beside ``path``; on success flush, fsync and rename it
    over ``path``; on any error remove it and leave ``path`` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_tmp(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Delete the temporary files in ``folder`` (and, with ``recursive``, in every folder below
    it, symbolic links not followed) whose writer on this host has exited: what a run killed
    mid-write leaves. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if recursive and entry.is_dir(follow_symlinks=False):
            removed += remove_stale_tmp(entry.path, recursive=True)
            continue
        match = _TMP_NAME.match(entry.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])) or not entry.is_file(follow_symlinks=False):
            continue
        Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
