"""One worker per output folder: an advisory ``flock`` on a lock file inside it, held for the
life of the work and released by the kernel when the process dies however it dies (a SIGKILL
leaves no stale lock). The file records who holds it, so a second worker is refused at once with
the holder named, before it reads or writes anything else in the folder.

``picbench run`` (one lock per shard of a run folder), ``picbench train`` (``checkpoint.out``) and
``picbench data build bmpds`` (one lock per rank of the build folder) all take theirs here.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Self

from picbench.errors import PicbenchError


class FolderLockedError(PicbenchError):
    """Another process holds the lock of this folder (or of this part of it)."""


class FolderLock:
    """Context manager: the exclusive lock ``FOLDER/NAME``, or :class:`FolderLockedError` naming
    the process that holds it. ``verb`` says what the holder is doing (``picbench train``), ``what``
    which part of the folder the lock covers, ``remedy`` what the refused user can do."""

    error: type[FolderLockedError] = FolderLockedError

    def __init__(self, folder: str | Path, *, name: str = ".lock", verb: str = "picbench", what: str = "", remedy: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.verb, self.what, self.remedy = verb, what, remedy
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise PicbenchError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            where = f"{self.folder}{f' ({self.what})' if self.what else ''}"
            raise self.error(f"{where} is being worked on by {holder}; nothing was done. {self.remedy}".rstrip()) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.verb} pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
